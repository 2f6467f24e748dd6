//! Every row of the contract's 422 table (§4), in the body and in the query string.

use axum::http::StatusCode;
use serde_json::{Value, json};
use xgate_model::sample::record;

use crate::TestApp;

async fn app() -> TestApp {
    TestApp::new((1..=3).map(|i| record(i, 5, true)).collect()).await
}

async fn token(app: &TestApp) -> String {
    let (_, page) = app.get("/user/medias?user_id=5&limit=1").await;
    page["continuation_token"].as_str().unwrap().to_owned()
}

async fn detail_of(app: &TestApp, uri: &str, body: Option<&str>) -> Value {
    let (status, body) = match body {
        Some(body) => app.post(uri, body).await,
        None => app.get(uri).await,
    };
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
    body["detail"].clone()
}

#[tokio::test]
async fn field_missing() {
    let app = app().await;
    assert_eq!(
        detail_of(&app, "/user/medias", Some(r#"{"limit": 5}"#)).await,
        json!([{"loc": ["body", "user_id"], "msg": "field required", "type": "value_error.missing"}])
    );
    assert_eq!(
        detail_of(&app, "/user/medias?limit=5", None).await,
        json!([{"loc": ["query", "user_id"], "msg": "field required", "type": "value_error.missing"}])
    );
    assert_eq!(
        detail_of(&app, "/user/medias/continuation", Some(r#"{"user_id": 5}"#)).await,
        json!([{"loc": ["body", "continuation_token"], "msg": "field required", "type": "value_error.missing"}])
    );
}

#[tokio::test]
async fn not_an_integer() {
    let app = app().await;
    let expected = |place: &str, field: &str| json!([{"loc": [place, field], "msg": "value is not a valid integer", "type": "type_error.integer"}]);
    for bad in [r#""ten""#, "1.5", "true", "[10]", r#"{"n":1}"#, r#""""#] {
        let body = format!(r#"{{"user_id": 5, "limit": {bad}}}"#);
        assert_eq!(
            detail_of(&app, "/user/medias", Some(&body)).await,
            expected("body", "limit"),
            "{bad}"
        );
        let body = format!(r#"{{"user_id": {bad}}}"#);
        assert_eq!(
            detail_of(&app, "/user/medias", Some(&body)).await,
            expected("body", "user_id"),
            "{bad}"
        );
    }
    assert_eq!(
        detail_of(&app, "/user/medias?user_id=5&limit=ten", None).await,
        expected("query", "limit")
    );
    assert_eq!(
        detail_of(&app, "/user/medias?user_id=abc", None).await,
        expected("query", "user_id")
    );
}

#[tokio::test]
async fn below_the_minimum() {
    let app = app().await;
    let limit = json!([{
        "loc": ["body", "limit"],
        "msg": "ensure this value is greater than or equal to 1",
        "type": "value_error.number.not_ge",
        "ctx": {"limit_value": 1}
    }]);
    assert_eq!(
        detail_of(&app, "/user/medias", Some(r#"{"user_id": 5, "limit": 0}"#)).await,
        limit
    );
    assert_eq!(
        detail_of(&app, "/user/medias", Some(r#"{"user_id": 5, "limit": -3}"#)).await,
        limit
    );
    let user = detail_of(&app, "/user/medias?user_id=-1", None).await;
    assert_eq!(user[0]["type"], "value_error.number.not_ge");
    assert_eq!(user[0]["loc"], json!(["query", "user_id"]));
}

#[tokio::test]
async fn above_the_maximum() {
    let app = app().await;
    assert_eq!(
        detail_of(&app, "/user/medias", Some(r#"{"user_id": 5, "limit": 21}"#)).await,
        json!([{
            "loc": ["body", "limit"],
            "msg": "ensure this value is less than or equal to 20",
            "type": "value_error.number.not_le",
            "ctx": {"limit_value": 20}
        }])
    );
    let huge = detail_of(
        &app,
        "/user/medias?user_id=5&limit=99999999999999999999999",
        None,
    )
    .await;
    assert_eq!(huge[0]["type"], "value_error.number.not_le");
    let user = detail_of(
        &app,
        "/user/medias",
        Some(r#"{"user_id": 18446744073709551616}"#),
    )
    .await;
    assert_eq!(
        user,
        json!([{
            "loc": ["body", "user_id"],
            "msg": "ensure this value is less than or equal to 18446744073709551615",
            "type": "value_error.number.not_le",
            "ctx": {"limit_value": 18446744073709551615u64}
        }])
    );
}

#[tokio::test]
async fn not_a_string() {
    let app = app().await;
    for bad in ["12", "true", "[]", "{}"] {
        let body = format!(r#"{{"user_id": 5, "continuation_token": {bad}}}"#);
        assert_eq!(
            detail_of(&app, "/user/medias/continuation", Some(&body)).await,
            json!([{"loc": ["body", "continuation_token"], "msg": "str type expected", "type": "type_error.str"}]),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn body_not_an_object() {
    let app = app().await;
    for body in ["[]", "[1, 2]", "\"user\"", "42", "null", "true"] {
        for uri in ["/user/medias", "/user/medias/continuation"] {
            assert_eq!(
                detail_of(&app, uri, Some(body)).await,
                json!([{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]),
                "{uri} {body}"
            );
        }
    }
}

#[tokio::test]
async fn body_not_json() {
    let app = app().await;
    let cases = [
        (r#"{"user_id": 5,"#, 14),
        (r#"{"user_id": 5 "limit": 1}"#, 14),
        ("{\n  \"user_id\": x\n}", 15),
        ("user_id=5", 0),
        (r#"{"user_id": 5} trailing"#, 15),
    ];
    for (body, offset) in cases {
        let detail = detail_of(&app, "/user/medias", Some(body)).await;
        assert_eq!(detail.as_array().unwrap().len(), 1, "{body}");
        assert_eq!(
            detail[0]["loc"],
            json!(["body", offset]),
            "{body}: {detail}"
        );
        assert_eq!(detail[0]["type"], "value_error.jsondecode");
        assert!(!detail[0]["msg"].as_str().unwrap().is_empty());
    }
    let (status, bytes) = app
        .call_raw(
            axum::http::Method::POST,
            "/user/medias",
            Some(b"{\"user_id\": \"\xff\"}".to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(detail["detail"][0]["loc"], json!(["body", 13]));
}

#[tokio::test]
async fn bad_token() {
    let app = app().await;
    let expected = |place: &str| json!([{"loc": [place, "continuation_token"], "msg": "invalid continuation token", "type": "value_error.continuation_token"}]);
    let body = r#"{"user_id": 5, "continuation_token": "not-a-token"}"#;
    assert_eq!(
        detail_of(&app, "/user/medias/continuation", Some(body)).await,
        expected("body")
    );
    assert_eq!(
        detail_of(
            &app,
            "/user/medias/continuation?user_id=5&continuation_token=",
            None
        )
        .await,
        expected("query")
    );
    let _ = token(&app).await;
}

#[tokio::test]
async fn all_problems_of_a_request_are_listed_together() {
    let app = app().await;
    let detail = detail_of(&app, "/user/medias/continuation", Some(r#"{"limit": 0}"#)).await;
    let types: Vec<&str> = detail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "value_error.missing",
            "value_error.missing",
            "value_error.number.not_ge"
        ]
    );
    let locs: Vec<&Value> = detail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "user_id"]),
            &json!(["body", "continuation_token"]),
            &json!(["body", "limit"])
        ]
    );
    let detail = detail_of(
        &app,
        "/user/medias/continuation?user_id=x&continuation_token=bad&limit=99",
        None,
    )
    .await;
    assert_eq!(detail.as_array().unwrap().len(), 3, "{detail}");
}

#[tokio::test]
async fn lenient_spellings_are_the_same_request() {
    let app = app().await;
    let (_, canonical) = app
        .post("/user/medias", r#"{"user_id": 5, "limit": 2}"#)
        .await;
    for body in [
        r#"{"user_id": "5", "limit": "2"}"#,
        r#"{"user_id": 5, "limit": 2.0, "extra": [1, {"x": null}]}"#,
        r#"{"user_id": 4, "user_id": 5, "limit": 2}"#,
        r#"  {"limit": 2, "user_id": 5}  "#,
    ] {
        let (status, page) = app.post("/user/medias", body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {page}");
        assert_eq!(page, canonical, "{body}");
    }
    let (_, by_query) = app.get("/user/medias?user_id=5&limit=2&unknown=1").await;
    assert_eq!(by_query, canonical);
    let (_, null_limit) = app
        .post("/user/medias", r#"{"user_id": 5, "limit": null}"#)
        .await;
    let (_, default) = app.post("/user/medias", r#"{"user_id": 5}"#).await;
    assert_eq!(null_limit, default);
}

#[tokio::test]
async fn an_empty_body_reports_each_missing_field() {
    let app = app().await;
    let detail = detail_of(&app, "/user/medias", Some("")).await;
    assert_eq!(
        detail,
        json!([{"loc": ["body", "user_id"], "msg": "field required", "type": "value_error.missing"}])
    );
    let detail = detail_of(&app, "/user/medias", Some(r#"{"user_id": null}"#)).await;
    assert_eq!(detail[0]["type"], "type_error.none.not_allowed");
}
