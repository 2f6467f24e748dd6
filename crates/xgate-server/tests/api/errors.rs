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

/// A body sent in chunks of 16 KiB, its length not known in advance (as with
/// `Transfer-Encoding: chunked`).
struct Chunked(usize);

impl http_body::Body for Chunked {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let chunk = 16 * 1024;
        std::task::Poll::Ready(if self.0 == 0 {
            None
        } else {
            let n = self.0.min(chunk);
            self.0 -= n;
            Some(Ok(http_body::Frame::data(vec![b' '; n].into())))
        })
    }
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let app = TestApp::new(vec![]).await;
    let req = axum::http::Request::post("/user/medias")
        .header("content-type", "application/json")
        .body(axum::body::Body::new(Chunked(200_000)))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = TestApp::new(vec![]).await;
    let big = format!(r#"{{"user_id": 5, "pad": "{}"}}"#, "x".repeat(200_000));
    let (status, body) = app.post("/user/medias", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "payload_too_large");
}
