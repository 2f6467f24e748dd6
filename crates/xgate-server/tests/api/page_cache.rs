//! The cache of rendered pages: a page asked for again is answered without reading the store, and
//! never differs from what the store would answer now. With PostgreSQL (written by other nodes)
//! pages are not cached, and the same tests show they are always fresh.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;
use xgate_model::sample::record;
use xgate_server::{AppState, ServerConfig, router};

use crate::{TestApp, ids, on_postgres, open_store, send};

const USER: u64 = 42;

/// The page cache's counters, from `/metrics`: (hits, misses).
async fn counts(app: &TestApp) -> (u64, u64) {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let count = |result: &str| {
        let name = format!("xgate_page_cache_requests_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&name))
            .map_or(0, |n| n.parse().unwrap())
    };
    (count("hit"), count("miss"))
}

fn timeline(user: u64, ids: std::ops::RangeInclusive<u64>) -> Vec<xgate_model::TweetRecord> {
    ids.map(|id| record(id, user, true)).collect()
}

async fn first_page(app: &TestApp, limit: usize) -> (StatusCode, Vec<u8>) {
    let body = json!({"user_id": USER, "limit": limit}).to_string();
    app.call_raw(Method::POST, "/user/medias", Some(body.into_bytes()))
        .await
}

#[tokio::test]
async fn a_page_asked_again_is_the_same_bytes_answered_from_memory() {
    let app = TestApp::new(timeline(USER, 100..=130)).await;
    let (status, first) = first_page(&app, 10).await;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_slice(&first).unwrap();
    let token = page["continuation_token"].as_str().unwrap().to_owned();
    let next = json!({"user_id": USER, "continuation_token": token, "limit": 10}).to_string();
    let (_, second) = app
        .call_raw(
            Method::POST,
            "/user/medias/continuation",
            Some(next.clone().into_bytes()),
        )
        .await;
    // The same pages again, by the other method too: GET and POST share their pages.
    assert_eq!(first_page(&app, 10).await, (StatusCode::OK, first.clone()));
    let uri =
        format!("/user/medias/continuation?user_id={USER}&continuation_token={token}&limit=10");
    assert_eq!(
        app.call_raw(Method::GET, &uri, None).await,
        (StatusCode::OK, second.clone())
    );
    // Another limit is another page.
    let (_, five) = first_page(&app, 5).await;
    assert_eq!(ids(&serde_json::from_slice(&five).unwrap()).len(), 5);
    if on_postgres() {
        assert_eq!(
            counts(&app).await,
            (0, 0),
            "PostgreSQL's pages are not cached"
        );
    } else {
        assert_eq!(counts(&app).await, (2, 3));
    }
}

#[tokio::test]
async fn tweets_stored_through_the_server_s_store_show_on_the_next_request() {
    let app = TestApp::new(timeline(USER, 100..=130)).await;
    let (_, before) = first_page(&app, 10).await;
    let before: Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(ids(&before)[0], "130");
    // A newer tweet, and one of the page's tweets losing its media.
    app.store
        .upsert_tweets(vec![record(131, USER, true), record(125, USER, false)])
        .await
        .unwrap();
    let (_, after) = first_page(&app, 10).await;
    let after = ids(&serde_json::from_slice(&after).unwrap());
    assert_eq!(after[0], "131");
    assert!(!after.contains(&"125".to_owned()), "{after:?}");
}

#[tokio::test]
async fn tweets_stored_by_another_handle_on_the_store_show_within_moments() {
    let app = TestApp::new(timeline(USER, 100..=130)).await;
    let (_, cached) = first_page(&app, 10).await;
    let (_, again) = first_page(&app, 10).await;
    assert_eq!(cached, again);
    // Another process's connection, as far as SQLite can tell: its own handle on the file.
    let other = open_store(&app.db).await;
    other
        .upsert_tweets(vec![record(131, USER, true)])
        .await
        .unwrap();
    // SQLite's store notices another writer within `CHANGES_POLL`; give it far longer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = first_page(&app, 10).await;
        if ids(&serde_json::from_slice(&page).unwrap())[0] == "131" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a tweet stored by another handle never showed"
        );
        tokio::time::sleep(xgate_store_sqlite::CHANGES_POLL / 5).await;
    }
}

#[tokio::test]
async fn an_unknown_user_is_a_404_every_time_and_a_page_after_they_arrive() {
    let app = TestApp::new(timeline(USER, 100..=110)).await;
    let body = json!({"user_id": 7, "limit": 10}).to_string();
    for _ in 0..2 {
        let (status, _) = app.post("/user/medias", &body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    app.store
        .upsert_tweets(vec![record(5, 7, true)])
        .await
        .unwrap();
    let (status, page) = app.post("/user/medias", &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), ["5"]);
}

/// What a test does next: read a user's pages, or store a tweet.
#[derive(Debug, Clone)]
enum Step {
    /// Walk `pages` pages of `user`'s timeline at `limit`, comparing every one.
    Read {
        user: u64,
        limit: usize,
        pages: usize,
    },
    /// Store tweet `id` of `user`, with or without media (replacing it if stored).
    Store { user: u64, id: u64, media: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u64..=3, 1usize..=4, 1usize..=4)
            .prop_map(|(user, limit, pages)| Step::Read { user, limit, pages }),
        2 => (1u64..=3, 1u64..=30, prop::bool::weighted(0.8))
            .prop_map(|(user, id, media)| Step::Store { user, id, media }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever is read and stored in whatever order, a server with the cache answers each page
    /// with the same status and bytes as one without it over the same store.
    #[test]
    fn a_cached_server_answers_as_an_uncached_one(steps in prop::collection::vec(step(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = TestApp::new(vec![record(1000, 1, true)]).await;
            let uncached = ServerConfig { page_cache_bytes: 0, ..ServerConfig::default() };
            let plain = router(AppState::new(app.store.clone(), uncached).await.unwrap());
            for step in steps {
                match step {
                    Step::Store { user, id, media } => {
                        // Ids are unique across users: a tweet has one author.
                        let id = user * 100 + id;
                        app.store.upsert_tweets(vec![record(id, user, media)]).await.unwrap();
                    }
                    Step::Read { user, limit, pages } => {
                        let mut body = json!({"user_id": user, "limit": limit});
                        let mut uri = "/user/medias";
                        for _ in 0..pages {
                            let text = body.to_string().into_bytes();
                            let (status, _, cached) = send(&app.router, Method::POST, uri, Some(text.clone()), &[]).await;
                            let (fresh_status, _, fresh) = send(&plain, Method::POST, uri, Some(text), &[]).await;
                            prop_assert_eq!(
                                (status, String::from_utf8_lossy(&cached)),
                                (fresh_status, String::from_utf8_lossy(&fresh))
                            );
                            let page: Value = serde_json::from_slice(&cached).unwrap();
                            let Some(token) = page["continuation_token"].as_str() else {
                                break;
                            };
                            body = json!({"user_id": user, "continuation_token": token, "limit": limit});
                            uri = "/user/medias/continuation";
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}
