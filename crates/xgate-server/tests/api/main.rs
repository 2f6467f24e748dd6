//! The HTTP API driven in-process over a real SQLite file.

mod billing;
mod errors;
mod medias;
mod openapi;
mod page_cache;
mod pagination;
mod tokens;
mod validation;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use xgate_model::TweetRecord;
use xgate_server::{AppState, Billing, BillingConfig, ServerConfig, router};
use xgate_store::Backend;
use xgate_store_postgres::PostgresStore;
use xgate_store_sqlite::SqliteStore;

/// An app over its own store: an SQLite file in a temporary directory, or, with
/// `XGATE_TEST_BACKEND=postgres`, a fresh schema of the test PostgreSQL (`XGATE_TEST_POSTGRES`);
/// CI runs this suite both ways.
pub struct TestApp {
    pub router: Router,
    pub store: Arc<dyn Backend>,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    /// The store's file or URL, to open it again.
    pub db: String,
}

/// Whether this run uses PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("XGATE_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A new store, and what names it.
pub async fn fresh_store(dir: &std::path::Path) -> (Arc<dyn Backend>, String) {
    if on_postgres() {
        let url = xgate_store_postgres::testing::fresh_database("api")
            .await
            .expect("XGATE_TEST_BACKEND=postgres needs a reachable PostgreSQL");
        (open_store(&url).await, url)
    } else {
        let path = dir.join("api.db").to_str().unwrap().to_owned();
        (open_store(&path).await, path)
    }
}

/// Another handle on the store `db` names.
pub async fn open_store(db: &str) -> Arc<dyn Backend> {
    if xgate_store_postgres::is_postgres_url(db) {
        Arc::new(PostgresStore::connect(db).await.unwrap())
    } else {
        Arc::new(SqliteStore::open(db).unwrap())
    }
}

impl TestApp {
    pub async fn new(tweets: Vec<TweetRecord>) -> Self {
        Self::with_config(tweets, ServerConfig::default()).await
    }

    pub async fn with_config(tweets: Vec<TweetRecord>, config: ServerConfig) -> Self {
        Self::build(tweets, config, None).await
    }

    /// A paid server: keys required, requests charged.
    pub async fn metered(tweets: Vec<TweetRecord>, billing: BillingConfig) -> Self {
        Self::build(tweets, ServerConfig::default(), Some(billing)).await
    }

    async fn build(
        tweets: Vec<TweetRecord>,
        config: ServerConfig,
        billing: Option<BillingConfig>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, db) = fresh_store(dir.path()).await;
        if !tweets.is_empty() {
            store.upsert_tweets(tweets).await.unwrap();
        }
        let state = match billing {
            None => AppState::new(store.clone(), config).await.unwrap(),
            Some(billing) => {
                let billing = Billing::start(store.clone(), billing);
                AppState::metered(store.clone(), config, billing)
                    .await
                    .unwrap()
            }
        };
        TestApp {
            router: router(state.clone()),
            store,
            state,
            dir,
            db,
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
        let (status, _, bytes) = self.send(method, uri, body, &[]).await;
        (status, bytes)
    }

    /// Sends a request with extra headers; returns status, headers and body bytes.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        send(&self.router, method, uri, body, headers).await
    }

    pub async fn post(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(body)).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }
}

/// Sends a request to `router` (an app's, or another server's over the same store); returns
/// status, headers and body bytes, which must be JSON.
pub async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "{uri}: content type"
    );
    (status, headers, bytes)
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
