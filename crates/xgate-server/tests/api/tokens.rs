//! Tampered, truncated, foreign and random tokens: a 422, never a 500, never page 1.

use axum::http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::json;
use xgate_model::sample::record;

use crate::TestApp;

async fn app() -> TestApp {
    let mut tweets: Vec<_> = (1..=6).map(|i| record(i, 5, true)).collect();
    tweets.extend((7..=9).map(|i| record(i, 6, true)));
    TestApp::new(tweets).await
}

async fn status_for(app: &TestApp, user: u64, token: &str) -> StatusCode {
    let body = json!({"user_id": user, "continuation_token": token}).to_string();
    let (status, bytes) = app
        .call_raw(
            Method::POST,
            "/user/medias/continuation",
            Some(body.into_bytes()),
        )
        .await;
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["detail"][0]["type"], "value_error.continuation_token");
    }
    status
}

#[tokio::test]
async fn tampered_truncated_and_foreign_tokens_are_refused() {
    let app = app().await;
    let (_, page) = app.get("/user/medias?user_id=5&limit=2").await;
    let token = page["continuation_token"].as_str().unwrap().to_owned();
    assert_eq!(status_for(&app, 5, &token).await, StatusCode::OK);

    // Another user's token, even one that user could use.
    assert_eq!(
        status_for(&app, 6, &token).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    for cut in [0, 1, token.len() / 2, token.len() - 1] {
        assert_eq!(
            status_for(&app, 5, &token[..cut]).await,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    for at in 0..token.len() {
        let mut bytes = token.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            status_for(&app, 5, &tampered).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{tampered}"
        );
    }
    assert_eq!(
        status_for(&app, 5, &format!("{token}=")).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // A token of another deployment (another secret).
    let other = TestApp::new(vec![record(1, 5, true), record(2, 5, true)]).await;
    let (_, page) = other.get("/user/medias?user_id=5&limit=1").await;
    let foreign = page["continuation_token"].as_str().unwrap();
    assert_eq!(
        status_for(&app, 5, foreign).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_tokens_are_refused(token in "\\PC{0,64}", user in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            let app = app().await;
            status_for(&app, user, &token).await
        });
        prop_assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
