use axum::http::StatusCode;
use serde_json::{Value, json};
use xgate_model::examples::seed_response;
use xgate_model::sample::record;
use xgate_model::wire::MediasResponse;
use xgate_server::{AppState, ServerConfig, router};

use crate::{TestApp, ids, seed_records};

#[tokio::test]
async fn the_seed_example_comes_back_identical() {
    let app = TestApp::new(seed_records()).await;
    let expected = seed_response()["results"].clone();
    for limit in [7, 10, 20] {
        let (status, page) = app
            .post(
                "/user/medias",
                &format!(r#"{{"user_id": 96479162, "limit": {limit}}}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["results"], expected, "limit {limit}");
        assert_eq!(
            page["continuation_token"],
            Value::Null,
            "the timeline ends here"
        );
    }
    // And it conforms to the typed model of the tweet format.
    let (_, page) = app.get("/user/medias?user_id=96479162").await;
    let typed: MediasResponse = serde_json::from_value(page).unwrap();
    assert_eq!(typed.results.len(), 7);
}

#[tokio::test]
async fn all_four_endpoints_page_the_same_timeline() {
    let app = TestApp::new(seed_records()).await;
    let (_, first) = app.get("/user/medias?user_id=96479162&limit=3").await;
    let (_, first_post) = app
        .post("/user/medias", r#"{"user_id":"96479162","limit":3}"#)
        .await;
    assert_eq!(first, first_post);
    assert_eq!(
        first["results"],
        Value::from(seed_response()["results"].as_array().unwrap()[..3].to_vec())
    );
    let token = first["continuation_token"].as_str().unwrap();

    let (s1, by_get) = app
        .get(&format!(
            "/user/medias/continuation?user_id=96479162&limit=3&continuation_token={token}"
        ))
        .await;
    let body = json!({"user_id": 96479162, "continuation_token": token, "limit": 3}).to_string();
    let (s2, by_post) = app.post("/user/medias/continuation", &body).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(by_get, by_post);
    assert_eq!(
        ids(&by_post),
        [
            "1497526869406670848",
            "1490431825918967810",
            "1401511472413487106"
        ]
    );

    let token = by_post["continuation_token"].as_str().unwrap();
    let body = json!({"user_id": 96479162, "continuation_token": token, "limit": 3}).to_string();
    let (_, last) = app.post("/user/medias/continuation", &body).await;
    assert_eq!(ids(&last), ["1339647664338702336"]);
    assert_eq!(last["continuation_token"], Value::Null);
}

#[tokio::test]
async fn limit_defaults_to_ten_and_a_full_last_page_has_no_token() {
    let app = TestApp::new((1..=20).map(|i| record(i, 5, true)).collect()).await;
    let (_, first) = app.get("/user/medias?user_id=5").await;
    assert_eq!(ids(&first).len(), 10);
    let token = first["continuation_token"]
        .as_str()
        .expect("another page exists");
    let (_, second) = app
        .get(&format!(
            "/user/medias/continuation?user_id=5&continuation_token={token}"
        ))
        .await;
    assert_eq!(ids(&second).len(), 10);
    assert_eq!(
        second["continuation_token"],
        Value::Null,
        "no empty trailing page"
    );
}

#[tokio::test]
async fn only_media_tweets_are_served() {
    let app = TestApp::new(vec![
        record(3, 5, true),
        record(2, 5, false),
        record(1, 5, true),
    ])
    .await;
    let (_, page) = app.get("/user/medias?user_id=5").await;
    assert_eq!(ids(&page), ["3", "1"]);
}

#[tokio::test]
async fn unknown_user_is_404_and_a_user_without_media_is_an_empty_page() {
    let app = TestApp::new(vec![record(1, 5, false)]).await;
    let (status, body) = app.get("/user/medias?user_id=6").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"detail": "user not found", "code": "user_not_found"})
    );
    let (status, body) = app.post("/user/medias", r#"{"user_id": 5}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"results": [], "continuation_token": null}));
}

#[tokio::test]
async fn ids_above_two_to_the_53_are_exact() {
    let top = u64::MAX;
    let near = (1u64 << 53) + 1;
    let app = TestApp::new(vec![
        record(top, top, true),
        record(near, top, true),
        record(near + 2, near, true),
    ])
    .await;
    for body in [
        format!(r#"{{"user_id": {top}, "limit": 1}}"#),
        format!(r#"{{"user_id": "{top}", "limit": 1}}"#),
    ] {
        let (status, page) = app.post("/user/medias", &body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&page), [top.to_string()]);
        assert_eq!(page["results"][0]["user"]["user_id"], top.to_string());
        let token = page["continuation_token"].as_str().unwrap();
        let (_, next) = app
            .get(&format!(
                "/user/medias/continuation?user_id={top}&continuation_token={token}"
            ))
            .await;
        assert_eq!(ids(&next), [near.to_string()]);
    }
    // One less than the id, as a float would round it, is another (unknown) user.
    let (status, _) = app.get(&format!("/user/medias?user_id={}", near - 1)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = app.get(&format!("/user/medias?user_id={near}")).await;
    assert_eq!(ids(&page), [(near + 2).to_string()]);
}

#[tokio::test]
async fn the_operator_can_raise_the_maximum_page_size() {
    let config = ServerConfig {
        max_limit: 50,
        ..ServerConfig::default()
    };
    let app = TestApp::with_config((1..=60).map(|i| record(i, 5, true)).collect(), config).await;
    let (status, page) = app.get("/user/medias?user_id=5&limit=50").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page).len(), 50);
    let (status, body) = app.get("/user/medias?user_id=5&limit=51").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["detail"][0]["msg"],
        "ensure this value is less than or equal to 50"
    );
    let (_, doc) = app.get("/openapi.json").await;
    assert_eq!(
        doc["components"]["schemas"]["MediasRequest"]["properties"]["limit"]["maximum"],
        50
    );
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let app = TestApp::new((1..=5).map(|i| record(i, 5, true)).collect()).await;
    let (_, first) = app.get("/user/medias?user_id=5&limit=2").await;
    let token = first["continuation_token"].as_str().unwrap().to_owned();
    let TestApp {
        dir,
        store,
        router: old,
        state: old_state,
        db,
    } = app;
    drop((store, old, old_state));

    let reopened = crate::open_store(&db).await;
    let state = AppState::new(reopened.clone(), ServerConfig::default())
        .await
        .unwrap();
    let app = TestApp {
        router: router(state.clone()),
        store: reopened,
        state,
        dir,
        db,
    };
    let (status, next) = app
        .get(&format!(
            "/user/medias/continuation?user_id=5&limit=2&continuation_token={token}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&next), ["3", "2"]);
}

#[tokio::test]
async fn healthz_answers_when_the_store_does() {
    let app = TestApp::new(vec![]).await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
}
