//! Live data: xgate in front of a fake X API v2 and a fake relay on loopback ports, with the
//! store (a real SQLite file) as the read-through cache.

mod fakes;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use xgate_billing::{clock, keys};
use xgate_model::UserId;
use xgate_server::{AppState, Billing, BillingConfig, ServerConfig, router};
use xgate_store::Backend;
use xgate_store_postgres::PostgresStore;
use xgate_store_sqlite::SqliteStore;
use xgate_upstream::config::{CacheConfig, CallConfig, Secret};
use xgate_upstream::metrics::Metrics;
use xgate_upstream::relay::Relay;
use xgate_upstream::x_api_v2::XApiV2;
use xgate_upstream::{Connector, Live, Upstreams};

use fakes::{Act, BEARER, Fake, RELAY_KEY, timeline};

const MINUTE_MS: i64 = 60_000;

/// How each upstream is called in these tests: quick retries, a breaker that opens after three
/// failed calls.
fn call() -> CallConfig {
    CallConfig {
        timeout_ms: 2_000,
        retries: 1,
        backoff_ms: 5,
        breaker_failures: 3,
        breaker_cooldown_secs: 60,
    }
}

fn x_api(fake: &Fake, call: &CallConfig) -> Box<dyn Connector> {
    Box::new(XApiV2::new(&fake.base, Secret::new(BEARER), call).unwrap())
}

fn relay(fake: &Fake) -> Box<dyn Connector> {
    let headers = BTreeMap::from([(RELAY_KEY.0.to_owned(), Secret::new(RELAY_KEY.1))]);
    Box::new(Relay::new(&fake.base, &headers, &call()).unwrap())
}

struct App {
    router: Router,
    store: Arc<dyn Backend>,
    /// The cache's clock, in milliseconds: tests move it.
    clock: Arc<AtomicI64>,
    key: Option<String>,
    _dir: tempfile::TempDir,
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

    fn ids(&self) -> Vec<String> {
        self.body["results"]
            .as_array()
            .unwrap_or_else(|| panic!("no results: {}", self.body))
            .iter()
            .map(|t| t["tweet_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn token(&self) -> Option<String> {
        self.body["continuation_token"].as_str().map(str::to_owned)
    }
}

impl App {
    async fn new(members: Vec<(&str, Box<dyn Connector>)>, billed: bool) -> App {
        let dir = tempfile::tempdir().unwrap();
        // An SQLite file, or with XGATE_TEST_BACKEND=postgres a fresh PostgreSQL schema.
        let store: Arc<dyn Backend> =
            if std::env::var("XGATE_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
                let url = xgate_store_postgres::testing::fresh_database("live")
                    .await
                    .expect("XGATE_TEST_BACKEND=postgres needs a reachable PostgreSQL");
                Arc::new(PostgresStore::connect(&url).await.unwrap())
            } else {
                Arc::new(SqliteStore::open(dir.path().join("live.db")).unwrap())
            };
        let state = if billed {
            let billing = Billing::start(store.clone(), BillingConfig::default());
            AppState::metered(store.clone(), ServerConfig::default(), billing)
                .await
                .unwrap()
        } else {
            AppState::new(store.clone(), ServerConfig::default())
                .await
                .unwrap()
        };
        let metrics = Arc::new(Metrics::default());
        let members = members
            .into_iter()
            .map(|(name, connector)| (name.to_owned(), connector, call()))
            .collect();
        let upstreams = Upstreams::new(members, metrics.clone());
        let clock = Arc::new(AtomicI64::new(clock::now_ms()));
        let now = clock.clone();
        let live = Live::new(store.clone(), upstreams, CacheConfig::default(), metrics)
            .with_clock(move || now.load(Ordering::SeqCst));
        let state = state.with_live(Arc::new(live));
        let key = if billed {
            let now = clock::now_ms();
            let account = store.ensure_account("buyer", now).await.unwrap();
            store
                .add_credits(account.id, 1_000, "test", now)
                .await
                .unwrap();
            let (key, stored) = keys::generate(None);
            store.insert_key(account.id, stored, now).await.unwrap();
            Some(key)
        } else {
            None
        };
        App {
            router: router(state),
            store,
            clock,
            key,
            _dir: dir,
        }
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    async fn get(&self, uri: &str) -> Answer {
        let mut request = Request::get(uri);
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn first(&self, user: UserId, limit: usize) -> Answer {
        self.get(&format!("/user/medias?user_id={user}&limit={limit}"))
            .await
    }

    async fn next(&self, user: UserId, token: &str, limit: usize) -> Answer {
        self.get(&format!(
            "/user/medias/continuation?user_id={user}&continuation_token={token}&limit={limit}"
        ))
        .await
    }

    /// Credits the test account has left.
    async fn credits(&self) -> i64 {
        let account = self.store.account_by_name("buyer").await.unwrap().unwrap();
        account.balance
    }

    /// Every page of `user` from the first, `limit` at a time; the ids in order.
    async fn all_pages(&self, user: UserId, limit: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let mut page = self.first(user, limit).await;
        loop {
            assert_eq!(page.status, 200, "{}", page.body);
            ids.extend(page.ids());
            match page.token() {
                Some(token) => page = self.next(user, &token, limit).await,
                None => return ids,
            }
        }
    }
}

#[tokio::test]
async fn a_first_fetch_then_hits_with_no_upstream_call() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(1, 150);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;

    let page = app.first(user, 10).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("x-cache"), "miss");
    assert_eq!(page.ids(), fake.control.media_ids(user)[..10]);
    assert_eq!(fake.control.calls(), 1);

    let again = app.first(user, 10).await;
    assert_eq!(again.header("x-cache"), "hit");
    assert_eq!(again.ids(), page.ids());
    let next = app.next(user, &page.token().unwrap(), 20).await;
    assert_eq!(next.header("x-cache"), "hit");
    assert_eq!(next.ids(), fake.control.media_ids(user)[10..30]);
    assert_eq!(fake.control.calls(), 1, "no call for cached pages");
}

#[tokio::test]
async fn the_first_page_is_fetched_again_after_its_time_to_live() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(2, 120);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;
    app.first(user, 10).await;
    fake.control.post(user, 3);

    app.advance(14 * MINUTE_MS);
    let cached = app.first(user, 10).await;
    assert_eq!(cached.header("x-cache"), "hit");
    assert!(!cached.body.to_string().contains("posted later"));
    assert_eq!(fake.control.calls(), 1);

    app.advance(2 * MINUTE_MS);
    let fresh = app.first(user, 10).await;
    assert_eq!(fresh.header("x-cache"), "miss");
    assert_eq!(fresh.ids(), fake.control.media_ids(user)[..10]);
    assert!(
        fresh.body["results"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("posted later")
    );
    assert_eq!(fake.control.calls(), 2);
}

#[tokio::test]
async fn paging_deep_across_cached_and_fetched_parts_has_no_gaps_or_repeats() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(3, 1_000);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;
    let truth = fake.control.media_ids(user);

    // Part of the timeline cached first, by a client that stops early.
    let first = app.first(user, 20).await;
    let second = app.next(user, &first.token().unwrap(), 20).await;
    assert_eq!(second.ids(), truth[20..40]);

    // Pages of other sizes, through the cached part into what is still upstream.
    let mut seen = first.ids();
    seen.extend(second.ids());
    let mut token = second.token();
    let sizes = [7, 20, 13, 1, 20];
    let mut i = 0;
    while let Some(t) = token {
        let page = app.next(user, &t, sizes[i % sizes.len()]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(page.ids());
        token = page.token();
        i += 1;
    }
    assert_eq!(seen, truth, "every media tweet once, newest first");
    // 1,000 tweets at 100 a call: each page fetched once.
    assert_eq!(fake.control.calls(), 10);

    // New posts on top, the first page stale: a new run from the top joins the cached one.
    fake.control.post(user, 30);
    app.advance(20 * MINUTE_MS);
    let all = app.all_pages(user, 20).await;
    assert_eq!(all, fake.control.media_ids(user));
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
    assert_eq!(
        fake.control.calls(),
        11,
        "one call for the new top, none for the rest"
    );

    // More new posts than one upstream page: the new top and the cached run have a gap
    // between them, which paging must fill from upstream, not skip.
    fake.control.post(user, 150);
    app.advance(20 * MINUTE_MS);
    let all = app.all_pages(user, 20).await;
    assert_eq!(all, fake.control.media_ids(user));
    assert_eq!(
        fake.control.calls(),
        13,
        "the new top, then the gap; the rest cached"
    );
}

#[tokio::test]
async fn paging_through_a_relay_never_shows_its_tokens() {
    let fake = Fake::relay().await;
    let (user, tweets) = timeline(4, 130);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("relay", relay(&fake))], false).await;

    let mut tokens = Vec::new();
    let mut seen = Vec::new();
    let mut page = app.first(user, 15).await;
    loop {
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(page.ids());
        let Some(token) = page.token() else { break };
        tokens.push(token.clone());
        page = app.next(user, &token, 15).await;
    }
    assert_eq!(seen, fake.control.media_ids(user));
    let theirs = fake.control.cursors.lock().unwrap().clone();
    assert!(!theirs.is_empty());
    for token in &tokens {
        assert!(
            theirs.iter().all(|c| !token.contains(c.as_str())),
            "a relay cursor shown: {token}"
        );
    }
}

#[tokio::test]
async fn a_spent_rate_limit_window_stops_calls_and_429_is_a_free_503() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(5, 50);
    let (other, other_tweets) = timeline(6, 50);
    fake.control.set_timeline(user, tweets);
    fake.control.set_timeline(other, other_tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], true).await;

    // The answer says the window is spent for a minute.
    fake.control.window(0, 60);
    let page = app.first(user, 10).await;
    assert_eq!(page.status, 200);
    assert_eq!(fake.control.calls(), 1);
    let credits = app.credits().await;

    // A user not cached: no call is made, 503 with Retry-After, not charged.
    let blocked = app.first(other, 10).await;
    assert_eq!(blocked.status, 503, "{}", blocked.body);
    assert_eq!(blocked.body["code"], "upstream_unavailable");
    let retry: u64 = blocked.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(fake.control.calls(), 1, "no call while the window is spent");
    // The cached user, its first page stale: served from the store, marked.
    app.advance(20 * MINUTE_MS);
    let stale = app.first(user, 10).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache"), "stale");
    assert_eq!(stale.ids(), page.ids());
    assert_eq!(fake.control.calls(), 1);
    assert_eq!(
        app.credits().await,
        credits - 1,
        "only the stale 200 is charged"
    );

    // A 429 answer.
    let fake2 = Fake::x_api_v2().await;
    fake2.control.set_timeline(other, timeline(6, 50).1);
    fake2.control.then(Act::TooMany { reset_in: 30 });
    let app2 = App::new(vec![("x", x_api(&fake2, &call()))], true).await;
    let credits = app2.credits().await;
    let limited = app2.first(other, 10).await;
    assert_eq!(limited.status, 503, "{}", limited.body);
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(fake2.control.calls(), 1, "a 429 is not retried");
    assert_eq!(app2.credits().await, credits);
}

#[tokio::test]
async fn server_errors_fail_over_and_the_breaker_stops_calling_the_broken_upstream() {
    let broken = Fake::x_api_v2().await;
    let good = Fake::relay().await;
    let users: Vec<(UserId, Vec<xgate_model::Tweet>)> = (10..16).map(|i| timeline(i, 30)).collect();
    for (user, tweets) in &users {
        broken.control.set_timeline(*user, tweets.clone());
        good.control.set_timeline(*user, tweets.clone());
    }
    broken.control.always(Some(Act::Status(500)));
    let app = App::new(
        vec![
            ("primary", x_api(&broken, &call())),
            ("secondary", relay(&good)),
        ],
        true,
    )
    .await;
    let credits = app.credits().await;
    for (i, (user, _)) in users.iter().enumerate() {
        let page = app.first(*user, 10).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.ids(), good.control.media_ids(*user)[..10]);
        // Two tries (one retry) per call until three calls failed; then none.
        assert_eq!(broken.control.calls(), 2 * (i + 1).min(3), "after user {i}");
    }
    assert_eq!(app.credits().await, credits - users.len() as i64);

    let health = app.get("/healthz").await;
    let upstreams = &health.body["upstreams"];
    assert_eq!(upstreams[0]["name"], "primary");
    assert_eq!(upstreams[0]["breaker"], "open");
    assert_eq!(upstreams[1]["breaker"], "closed");
    let metrics = app.get("/metrics").await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(
            "xgate_upstream_calls_total{upstream=\"primary\",outcome=\"server_error\"} 6"
        ),
        "{text}"
    );
    assert!(text.contains("outcome=\"skipped\""), "{text}");
}

#[tokio::test]
async fn a_timeout_is_unavailable_and_malformed_json_an_upstream_error_neither_charged() {
    let slow = Fake::x_api_v2().await;
    let (user, tweets) = timeline(20, 30);
    slow.control.set_timeline(user, tweets.clone());
    slow.control.always(Some(Act::Slow(Duration::from_secs(3))));
    let quick = CallConfig {
        timeout_ms: 200,
        retries: 0,
        ..call()
    };
    let app = App::new(vec![("x", x_api(&slow, &quick))], true).await;
    let credits = app.credits().await;
    let page = app.first(user, 10).await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert_eq!(page.body["code"], "upstream_unavailable");
    assert!(!page.header("retry-after").is_empty());
    assert_eq!(app.credits().await, credits);

    let broken = Fake::x_api_v2().await;
    broken.control.set_timeline(user, tweets);
    broken.control.always(Some(Act::Malformed));
    let app = App::new(vec![("x", x_api(&broken, &call()))], true).await;
    let credits = app.credits().await;
    let page = app.first(user, 10).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(page.body["code"], "upstream_error");
    assert_eq!(
        broken.control.calls(),
        1,
        "malformed answers are not retried"
    );
    assert_eq!(app.credits().await, credits);

    // A 4xx (here: credentials refused) is an upstream error too, and never retried.
    let refusing = Fake::x_api_v2().await;
    refusing.control.set_timeline(user, timeline(20, 30).1);
    refusing.control.always(Some(Act::Status(401)));
    let app = App::new(vec![("x", x_api(&refusing, &call()))], true).await;
    let page = app.first(user, 10).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert_eq!(refusing.control.calls(), 1);
}

#[tokio::test]
async fn older_pages_are_fetched_again_after_their_time_to_live() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(24, 300);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;
    let first = app.first(user, 20).await;
    let token = first.token().unwrap();
    assert_eq!(app.next(user, &token, 20).await.header("x-cache"), "hit");
    assert_eq!(fake.control.calls(), 1);

    app.advance(23 * 60 * MINUTE_MS);
    assert_eq!(app.next(user, &token, 20).await.header("x-cache"), "hit");
    app.advance(2 * 60 * MINUTE_MS);
    let again = app.next(user, &token, 20).await;
    assert_eq!(again.header("x-cache"), "miss");
    assert_eq!(again.ids(), fake.control.media_ids(user)[20..40]);
    assert_eq!(fake.control.calls(), 2);
}

#[tokio::test]
async fn cached_pages_are_served_stale_when_the_upstream_fails() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(21, 60);
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;
    let fresh = app.first(user, 10).await;
    app.advance(16 * MINUTE_MS);
    fake.control.always(Some(Act::Status(503)));
    let stale = app.first(user, 10).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert_eq!(stale.header("x-cache"), "stale");
    assert_eq!(stale.ids(), fresh.ids());
}

#[tokio::test]
async fn fifty_concurrent_requests_for_an_uncached_page_make_one_call() {
    let fake = Fake::x_api_v2().await;
    let (user, tweets) = timeline(22, 80);
    fake.control.set_timeline(user, tweets);
    fake.control.then(Act::Slow(Duration::from_millis(300)));
    let app = Arc::new(App::new(vec![("x", x_api(&fake, &call()))], true).await);
    let credits = app.credits().await;
    // All fifty are in flight before the first is answered (the fake answers after 300 ms).
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.first(user, 10).await })
        })
        .collect();
    let mut misses = 0;
    for request in requests {
        let page = request.await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.ids(), fake.control.media_ids(user)[..10]);
        misses += usize::from(page.header("x-cache") == "miss");
    }
    assert_eq!(fake.control.calls(), 1);
    assert_eq!(misses, 1);
    assert_eq!(app.credits().await, credits - 50);
}

#[tokio::test]
async fn an_unknown_user_is_a_free_404_remembered_and_a_local_user_still_served() {
    let fake = Fake::x_api_v2().await;
    let app = App::new(vec![("x", x_api(&fake, &call()))], true).await;
    let credits = app.credits().await;
    let nobody = UserId(424242);
    let page = app.first(nobody, 10).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert_eq!(page.body["detail"], "user not found");
    assert_eq!(app.first(nobody, 10).await.status, 404);
    assert_eq!(fake.control.calls(), 1, "the answer is remembered");
    assert_eq!(app.credits().await, credits);

    // A user only in the local store (ingested), unknown upstream.
    let local = UserId(77);
    app.store
        .upsert_tweets(
            (1..=3)
                .map(|i| xgate_model::sample::record(i, 77, true))
                .collect(),
        )
        .await
        .unwrap();
    let page = app.first(local, 10).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("x-cache"), "local");
    assert_eq!(page.ids(), ["3", "2", "1"]);
}

#[tokio::test]
async fn a_known_user_without_media_is_an_empty_page() {
    let fake = Fake::x_api_v2().await;
    let (user, mut tweets) = timeline(23, 10);
    for tweet in &mut tweets {
        tweet.extended_entities = None;
        tweet.media_url = Some(Vec::new());
        tweet.video_url = None;
    }
    fake.control.set_timeline(user, tweets);
    let app = App::new(vec![("x", x_api(&fake, &call()))], false).await;
    let page = app.first(user, 10).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.ids(), Vec::<String>::new());
    assert_eq!(page.token(), None);
    assert_eq!(app.first(user, 10).await.header("x-cache"), "hit");
}
