//! The HTTP API driven in-process over a real SQLite file.

mod errors;
mod medias;
mod openapi;
mod pagination;
mod tokens;
mod validation;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use xgate_model::TweetRecord;
use xgate_server::{AppState, ServerConfig, router};
use xgate_store::Store;
use xgate_store_sqlite::SqliteStore;

/// An app over its own store in a temporary directory.
pub struct TestApp {
    pub router: Router,
    pub store: Arc<SqliteStore>,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn new(tweets: Vec<TweetRecord>) -> Self {
        Self::with_config(tweets, ServerConfig::default()).await
    }

    pub async fn with_config(tweets: Vec<TweetRecord>, config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("api.db")).unwrap());
        if !tweets.is_empty() {
            store.upsert_tweets(tweets).await.unwrap();
        }
        let state = AppState::new(store.clone(), config).await.unwrap();
        TestApp {
            router: router(state.clone()),
            store,
            state,
            dir,
        }
    }

    /// Sends a request and returns the status and the body parsed as JSON (every answer of
    /// the API is JSON, errors included: a body that is not fails the test).
    pub async fn call(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (status, bytes) = self
            .call_raw(method, uri, body.map(|b| b.as_bytes().to_vec()))
            .await;
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{uri}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, value)
    }

    pub async fn call_raw(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        assert_eq!(
            ct.as_deref(),
            Some("application/json"),
            "{uri}: content type"
        );
        (status, bytes)
    }

    pub async fn post(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }
}

/// The seed user's tweets, as shipped in the fixture.
pub fn seed_records() -> Vec<TweetRecord> {
    include_str!("../../../../fixtures/seed/seed-user-96479162-medias.jsonl")
        .lines()
        .map(|line| TweetRecord::from_json(line).unwrap())
        .collect()
}

/// The tweet ids of a page, as served.
pub fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tweet_id"].as_str().unwrap().to_owned())
        .collect()
}
