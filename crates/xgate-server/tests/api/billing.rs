//! Keys, credits, prices, allowances, rate limits and idempotency, through the HTTP API.

use std::num::NonZeroU32;

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use xgate_billing::{Prices, clock, keys};
use xgate_model::sample::record;
use xgate_server::BillingConfig;
use xgate_store::accounts::{AccountTerms, KeySelector};

use crate::TestApp;

const PAGE: &str = "/user/medias?user_id=5&limit=2";

async fn app(billing: BillingConfig) -> TestApp {
    TestApp::metered((1..=9).map(|i| record(i, 5, true)).collect(), billing).await
}

/// A new key of `account` (made if absent) with `credits` added.
async fn key(app: &TestApp, account: &str, credits: i64) -> String {
    let now = clock::now_ms();
    let acct = app.store.ensure_account(account, now).await.unwrap();
    if credits > 0 {
        app.store
            .add_credits(acct.id, credits, "test", now)
            .await
            .unwrap();
    }
    let (key, stored) = keys::generate(None);
    app.store.insert_key(acct.id, stored, now).await.unwrap();
    key
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn cost(&self) -> i64 {
        self.header("x-credits-cost").parse().unwrap()
    }

    fn remaining(&self) -> i64 {
        self.header("x-credits-remaining").parse().unwrap()
    }
}

async fn get(app: &TestApp, uri: &str, headers: &[(&str, &str)]) -> Answer {
    let (status, headers, body) = app.send(Method::GET, uri, None, headers).await;
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap(),
    }
}

async fn post(app: &TestApp, uri: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    let (status, headers, body) = app
        .send(Method::POST, uri, Some(body.as_bytes().to_vec()), headers)
        .await;
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap(),
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn audit(app: &TestApp, account: &str) -> xgate_store::accounts::Audit {
    let acct = app.store.account_by_name(account).await.unwrap().unwrap();
    app.store.audit(acct.id).await.unwrap()
}

#[tokio::test]
async fn data_endpoints_need_a_valid_key() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 10).await;

    let none = get(&app, PAGE, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["code"], "missing_api_key");
    assert_eq!(none.header("www-authenticate"), "Bearer");
    assert!(!none.header("x-request-id").is_empty());

    let (_, forged) = keys::generate(None);
    let _ = forged;
    let (unknown, _) = keys::generate(None);
    for bad in [
        "Bearer nope",
        "Basic dXNlcjpwYXNz",
        &bearer(&unknown),
        &bearer(&format!("{key}x")),
    ] {
        let answer = get(&app, PAGE, &[("authorization", bad)]).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(answer.body["code"], "invalid_api_key", "{bad}");
    }
    assert_eq!(
        get(&app, PAGE, &[("authorization", &bearer(&key))])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, PAGE, &[("x-api-key", &key)]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app, PAGE, &[("authorization", &format!("bearer  {key} "))])
            .await
            .status,
        StatusCode::OK
    );
    // The same key twice is fine; two different credentials are refused, whichever is valid.
    let both = [("authorization", bearer(&key)), ("x-api-key", key.clone())];
    let both: Vec<(&str, &str)> = both.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(get(&app, PAGE, &both).await.status, StatusCode::OK);
    let mixed = get(
        &app,
        PAGE,
        &[("authorization", &bearer(&key)), ("x-api-key", "xg_live_x")],
    )
    .await;
    assert_eq!(mixed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(mixed.body["code"], "invalid_api_key");
    // Nothing free is gated: the document and the health check stay open.
    assert_eq!(app.get("/openapi.json").await.0, StatusCode::OK);
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_method_or_an_oversized_body_costs_nothing() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 10).await;

    // A method the path does not take is a routing error: 405 in the contract's shape, with or
    // without a key, answered before metering (no request id, no credits).
    for headers in [vec![], vec![("x-api-key", key.as_str())]] {
        let (status, answer, body) = app
            .send(Method::DELETE, "/user/medias", None, &headers)
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{headers:?}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"detail": "Method Not Allowed", "code": "method_not_allowed"})
        );
        assert!(answer.get("x-request-id").is_none());
        assert!(answer.get("x-credits-cost").is_none());
    }
    // A body over the server's limit is refused (413) once the key is known, and not charged.
    let big = format!(r#"{{"user_id": 5, "pad": "{}"}}"#, "x".repeat(200_000));
    let too_big = post(&app, "/user/medias", &big, &[("x-api-key", &key)]).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.body["code"], "payload_too_large");
    assert_eq!(too_big.cost(), 0);
    assert_eq!(too_big.remaining(), 10);
    let audit = audit(&app, "acme").await;
    assert_eq!((audit.paid, audit.balance), (0, 10), "{audit:?}");
    assert!(audit.balanced(), "{audit:?}");
}

#[tokio::test]
async fn only_successes_are_charged_and_every_answer_says_so() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 5).await;
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];

    let ok = get(&app, PAGE, &h).await;
    assert_eq!(
        (ok.status, ok.cost(), ok.remaining()),
        (StatusCode::OK, 1, 4)
    );
    assert_eq!(ok.header("x-request-id").len(), 36);

    for (uri, status) in [
        ("/user/medias?user_id=6", StatusCode::NOT_FOUND),
        ("/user/medias?user_id=x", StatusCode::UNPROCESSABLE_ENTITY),
        (
            "/user/medias/continuation?user_id=5&continuation_token=bad",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let failed = get(&app, uri, &h).await;
        assert_eq!(
            (failed.status, failed.cost(), failed.remaining()),
            (status, 0, 4),
            "{uri}"
        );
    }
    let books = audit(&app, "acme").await;
    assert_eq!(
        (books.balance, books.paid, books.charged_failures),
        (4, 1, 0)
    );
    assert!(books.balanced());
}

#[tokio::test]
async fn out_of_credits_is_402_and_runs_nothing() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 2).await;
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];
    assert_eq!(get(&app, PAGE, &h).await.status, StatusCode::OK);
    assert_eq!(get(&app, PAGE, &h).await.status, StatusCode::OK);
    let broke = get(&app, PAGE, &h).await;
    assert_eq!(broke.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        broke.body,
        json!({"detail": "not enough credits for this request", "code": "insufficient_credits"})
    );
    assert_eq!((broke.cost(), broke.remaining()), (0, 0));
    // A top-up (here straight in the store, as the CLI does) is seen on the next request.
    let acct = app.store.account_by_name("acme").await.unwrap().unwrap();
    app.store
        .add_credits(acct.id, 1, "top-up", clock::now_ms())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get(&app, PAGE, &h).await.status, StatusCode::OK);
    assert!(audit(&app, "acme").await.balanced());
}

#[tokio::test]
async fn prices_are_per_endpoint_and_the_free_allowance_goes_first() {
    let prices = Prices::parse(["POST /user/medias=3", "GET /user/medias=0"]).unwrap();
    let app = app(BillingConfig {
        prices,
        ..BillingConfig::default()
    })
    .await;
    let key = key(&app, "acme", 10).await;
    let acct = app.store.account_by_name("acme").await.unwrap().unwrap();
    let terms = AccountTerms {
        free_allowance: Some(4),
        rate_limit: None,
    };
    app.store.set_terms(acct.id, terms).await.unwrap();
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];

    let free = get(&app, PAGE, &h).await;
    assert_eq!(
        (free.status, free.cost(), free.remaining()),
        (StatusCode::OK, 0, 14)
    );
    let first = post(&app, "/user/medias", r#"{"user_id": 5}"#, &h).await;
    assert_eq!((first.cost(), first.remaining()), (3, 11));
    let second = post(&app, "/user/medias", r#"{"user_id": 5}"#, &h).await;
    assert_eq!((second.cost(), second.remaining()), (3, 8));
    let acct = app.store.account(acct.id).await.unwrap().unwrap();
    assert_eq!(
        (acct.balance, acct.free_left(&clock::month())),
        (8, 0),
        "4 free credits went first"
    );

    let credits = get(&app, "/v1/credits", &h).await;
    assert_eq!(credits.status, StatusCode::OK);
    assert_eq!(credits.body["balance"], 8);
    assert_eq!(credits.body["free_allowance"], 4);
    assert_eq!(credits.body["free_remaining"], 0);
    assert_eq!(credits.body["remaining"], 8);
    assert!(
        credits.body["prices"]
            .as_array()
            .unwrap()
            .contains(&json!({"endpoint": "POST /user/medias", "credits": 3}))
    );
    // Free, and said so like every keyed answer.
    assert_eq!((credits.cost(), credits.remaining()), (0, 8));
    assert_eq!(credits.header("x-request-id").len(), 36);
    let usage = get(&app, "/v1/usage", &h).await;
    assert_eq!((usage.status, usage.cost()), (StatusCode::OK, 0));
    assert_eq!(
        audit(&app, "acme").await.paid,
        2,
        "billing endpoints are not charged (6 credits: 4 free, 2 paid, before them)"
    );
    let anonymous = get(&app, "/v1/credits", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(!anonymous.header("x-request-id").is_empty());
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 10).await;
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];
    assert_eq!(get(&app, PAGE, &h).await.status, StatusCode::OK);
    app.store
        .revoke_key(KeySelector::Hash(keys::hash(&key)), clock::now_ms())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let revoked = get(&app, PAGE, &h).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.body["code"], "invalid_api_key");
    assert_eq!(
        get(&app, "/v1/credits", &h).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers_and_cost_nothing() {
    rate_limits(false).await;
}

#[tokio::test]
async fn rate_limits_counted_in_the_store_answer_the_same() {
    rate_limits(true).await;
}

async fn rate_limits(shared_rate_limits: bool) {
    let limit = NonZeroU32::new(3);
    let app = app(BillingConfig {
        prices: Prices::default(),
        default_rate_limit: limit,
        shared_rate_limits,
    })
    .await;
    let key = key(&app, "acme", 100).await;
    let other = key_for_other(&app).await;
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];
    for remaining in [2, 1, 0] {
        let ok = get(&app, PAGE, &h).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.header("ratelimit-policy"), "\"per-minute\";q=3;w=60");
        assert!(
            ok.header("ratelimit")
                .starts_with(&format!("\"per-minute\";r={remaining};t=")),
            "{}",
            ok.header("ratelimit")
        );
    }
    let limited = get(&app, PAGE, &h).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.body["code"], "rate_limited");
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(limited.cost(), 0);
    assert_eq!(audit(&app, "acme").await.paid, 3);
    // Limits are per account; an account's own limit overrides the default.
    let other_auth = bearer(&other);
    assert_eq!(
        get(&app, PAGE, &[("authorization", &other_auth)])
            .await
            .status,
        StatusCode::OK
    );
    let acct = app.store.account_by_name("acme").await.unwrap().unwrap();
    let terms = AccountTerms {
        free_allowance: None,
        rate_limit: Some(Some(1000)),
    };
    app.store.set_terms(acct.id, terms).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(get(&app, PAGE, &h).await.status, StatusCode::OK);
}

async fn key_for_other(app: &TestApp) -> String {
    key(app, "other", 100).await
}

#[tokio::test]
async fn an_idempotent_retry_replays_the_response_for_free() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 10).await;
    let auth = bearer(&key);
    let h = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "order-42"),
    ];
    let body = r#"{"user_id": 5, "limit": 3}"#;

    let first = post(&app, "/user/medias", body, &h).await;
    assert_eq!((first.status, first.cost()), (StatusCode::OK, 1));
    let again = post(&app, "/user/medias", body, &h).await;
    assert_eq!((again.status, again.cost()), (StatusCode::OK, 0));
    assert_eq!(again.body, first.body);
    assert_eq!(
        again.header("idempotent-replayed"),
        first.header("x-request-id")
    );
    assert_eq!(audit(&app, "acme").await.paid, 1);

    let other = post(&app, "/user/medias", r#"{"user_id": 5, "limit": 4}"#, &h).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other.body["detail"][0]["loc"],
        json!(["header", "idempotency-key"])
    );
    assert_eq!(
        other.body["detail"][0]["type"],
        "value_error.idempotency_key.reused"
    );

    // A failure is not kept: the retry runs (and is charged) once it can succeed.
    let h2 = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "order-43"),
    ];
    let missing = post(&app, "/user/medias", r#"{"user_id": 6}"#, &h2).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = post(
        &app,
        "/user/medias",
        body,
        &[("authorization", auth.as_str()), ("idempotency-key", "")],
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(audit(&app, "acme").await.paid, 1);
}

#[tokio::test]
async fn usage_lists_the_callers_requests_newest_first() {
    let app = app(BillingConfig::default()).await;
    let key = key(&app, "acme", 10).await;
    let auth = bearer(&key);
    let h = [("authorization", auth.as_str())];
    let mut ids = Vec::new();
    for uri in [PAGE, "/user/medias?user_id=77", PAGE] {
        ids.push(get(&app, uri, &h).await.header("x-request-id").to_owned());
    }
    // The request log is written in the background; the next charge is committed after it.
    let _ = get(&app, PAGE, &h).await;
    let page = get(&app, "/v1/usage?limit=2", &h).await;
    assert_eq!(page.status, StatusCode::OK);
    let rows = page.body["requests"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["request_id"], ids[2]);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = get(&app, &format!("/v1/usage?limit=10&cursor={cursor}"), &h).await;
    let rows = rest.body["requests"].as_array().unwrap();
    let seen: Vec<&str> = rows
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(rows[0]["status"], 404);
    assert_eq!(rows[0]["cost"], 0);
    assert_eq!(rows[1]["cost"], 1);
    assert_eq!(rows[1]["endpoint"], "GET /user/medias");
    assert_eq!(rest.body["next_cursor"], Value::Null);

    let bad = get(&app, "/v1/usage?limit=0&since=yesterday", &h).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["detail"].as_array().unwrap().len(), 2);
    let future = get(&app, "/v1/usage?since=2999-01-01", &h).await;
    assert_eq!(future.body["requests"], json!([]));
}

#[tokio::test]
async fn an_open_server_documents_no_keys_and_has_no_billing_endpoints() {
    let open = TestApp::new(vec![]).await;
    let (_, doc) = open.get("/openapi.json").await;
    assert!(doc["paths"].get("/v1/credits").is_none());
    assert!(
        doc["paths"]["/user/medias"]["get"]
            .get("security")
            .is_none()
    );
    assert_eq!(open.get("/v1/credits").await.0, StatusCode::NOT_FOUND);

    let paid = app(BillingConfig::default()).await;
    let (_, doc) = paid.get("/openapi.json").await;
    assert!(doc["paths"]["/v1/credits"]["get"].is_object());
    assert!(doc["paths"]["/user/medias/continuation"]["post"]["security"].is_array());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
