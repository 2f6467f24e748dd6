//! Answers outside the happy path are JSON in the contract's shape too.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::TestApp;

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let app = TestApp::new(vec![]).await;
    let (status, body) = app.get("/user/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Not Found", "code": "not_found"}));
    let (status, body) = app.call(Method::DELETE, "/user/medias", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        body,
        json!({"detail": "Method Not Allowed", "code": "method_not_allowed"})
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new(vec![]).await;
    let big = format!(r#"{{"user_id": 5, "pad": "{}"}}"#, "x".repeat(200_000));
    let (status, body) = app.post("/user/medias", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");
}
