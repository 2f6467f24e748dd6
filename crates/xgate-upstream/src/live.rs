//! The store as a read-through cache of the upstreams.
//!
//! Pages are always served from the store, by keyset position, so xgate's continuation tokens
//! keep meaning what they mean without an upstream. What this module adds is making sure the
//! store holds the page before it is read: per user it notes a *run*, the part of the timeline
//! fetched contiguously from its newest tweet down to the oldest tweet reached, with the
//! upstream's cursor for what lies below. A page is a hit when the run covers it: its `limit + 1`
//! tweets (the look-ahead included) are all inside the run, or the run reached the timeline's
//! end. Otherwise the run is refreshed from the top (a stale first page) or walked further down,
//! and the page is read once it is covered. Because the run has no holes, pages never skip or
//! repeat a tweet, whether they come from cached or freshly fetched parts.
//!
//! A refreshed top starts a new run; the previous one is kept below it and joined as soon as the
//! new run reaches its newest tweet, so older pages are not fetched twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xgate_model::{TweetId, UserId};
use xgate_store::{Store, StoreError};

use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::upstreams::{ChainError, Fetched, Upstreams};

/// How a page's data was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Covered by what was fetched, within its time to live: no upstream call.
    Hit,
    /// Fetched from an upstream for this request.
    Miss,
    /// The upstreams failed; what the store holds is served.
    Stale,
    /// The upstreams do not know the user, the store does: served from the store.
    Local,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Hit => "hit",
            Freshness::Miss => "miss",
            Freshness::Stale => "stale",
            Freshness::Local => "local",
        }
    }
}

/// The page can be read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub freshness: Freshness,
    /// An upstream knows the user: with no tweets stored it has no media, not no existence.
    pub known: bool,
}

/// Why the page cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LiveError {
    #[error("user not found")]
    NotFound,
    #[error("upstreams unavailable")]
    Unavailable { retry_after: Duration },
    #[error("upstream error: {0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What is noted per user, in the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SyncState {
    /// When the first page was last fetched.
    head_ms: Option<i64>,
    /// An upstream has shown the user.
    known: bool,
    /// Until when the upstreams are taken not to know the user.
    not_found_until_ms: Option<i64>,
    /// The run from the timeline's top.
    run: Option<Run>,
    /// An earlier run below a gap, joined when `run` reaches it.
    older: Option<Run>,
}

/// Part of a user's timeline fetched without holes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    started_ms: i64,
    /// The newest and the oldest tweet seen (media or not); `None` for an empty timeline.
    top: Option<TweetId>,
    reached: Option<TweetId>,
    /// The upstream walked, and its cursor below `reached`; no cursor: the timeline's end.
    upstream: String,
    cursor: Option<String>,
}

pub struct Live {
    store: Arc<dyn Store>,
    upstreams: Upstreams,
    cache: CacheConfig,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// One fetch at a time per user: concurrent requests wait for it and find its pages.
    flights: Mutex<HashMap<UserId, Weak<tokio::sync::Mutex<()>>>>,
}

impl Live {
    pub fn new(
        store: Arc<dyn Store>,
        upstreams: Upstreams,
        cache: CacheConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Live {
            store,
            upstreams,
            cache,
            metrics,
            clock: Arc::new(|| chrono::Utc::now().timestamp_millis()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the clock (milliseconds since the epoch), for tests of time to live.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Makes sure the store holds the page of `limit` tweets of `user` below `before` (and one
    /// more), fetching what is missing. `endpoint` labels the metrics.
    pub async fn prepare(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
        endpoint: &str,
    ) -> Result<Prepared, LiveError> {
        let need = limit + 1;
        let state = self.load(user).await?;
        let answer = match self.check(&state, user, before, need).await? {
            Some(ready) => Ok(ready),
            None => {
                let flight = self.flight(user);
                let _turn = flight.lock().await;
                // A request that held the turn before may have fetched this very page.
                let mut state = self.load(user).await?;
                match self.check(&state, user, before, need).await? {
                    Some(ready) => Ok(ready),
                    None => self.fetch(&mut state, user, before, need).await,
                }
            }
        };
        let label = match &answer {
            Ok(ready) => ready.freshness.as_str(),
            Err(LiveError::NotFound) => "not_found",
            Err(_) => "error",
        };
        self.metrics.cache(endpoint, label);
        answer
    }

    /// The page's answer when nothing needs fetching.
    async fn check(
        &self,
        state: &SyncState,
        user: UserId,
        before: Option<TweetId>,
        need: usize,
    ) -> Result<Option<Prepared>, LiveError> {
        let now = (self.clock)();
        if state.not_found_until_ms.is_some_and(|until| now < until) {
            return if self.store.user_exists(user).await? {
                Ok(Some(Prepared {
                    freshness: Freshness::Local,
                    known: false,
                }))
            } else {
                Err(LiveError::NotFound)
            };
        }
        let Some(run) = state.run.as_ref().filter(|r| self.alive(r, now)) else {
            return Ok(None);
        };
        let head_fresh = state
            .head_ms
            .is_some_and(|at| now - at < secs(self.cache.first_page_ttl_secs));
        if before.is_none() && !head_fresh {
            return Ok(None);
        }
        let hit = Some(Prepared {
            freshness: Freshness::Hit,
            known: state.known,
        });
        if run.cursor.is_none() {
            return Ok(hit);
        }
        let ids = self.store.media_ids(user, before, need).await?;
        Ok(covers(run, &ids, need).then_some(hit).flatten())
    }

    fn alive(&self, run: &Run, now: i64) -> bool {
        now - run.started_ms < secs(self.cache.deep_ttl_secs)
    }

    /// Fetches until the page is covered, notes what was fetched, and says how to serve.
    async fn fetch(
        &self,
        state: &mut SyncState,
        user: UserId,
        before: Option<TweetId>,
        need: usize,
    ) -> Result<Prepared, LiveError> {
        let outcome = self.walk(state, user, before, need).await;
        // What was fetched before a failure stays noted: it is in the store.
        self.save(user, state).await?;
        match outcome {
            Ok(()) => Ok(Prepared {
                freshness: Freshness::Miss,
                known: true,
            }),
            Err(Walk::Store(e)) => Err(e.into()),
            Err(Walk::Upstream(ChainError::NotFound)) => {
                state.known = false;
                state.run = None;
                state.older = None;
                state.not_found_until_ms =
                    Some((self.clock)() + secs(self.cache.negative_ttl_secs));
                self.save(user, state).await?;
                if self.store.user_exists(user).await? {
                    Ok(Prepared {
                        freshness: Freshness::Local,
                        known: false,
                    })
                } else {
                    Err(LiveError::NotFound)
                }
            }
            Err(Walk::Upstream(error)) => {
                // Stale if error: whatever the store holds for this user.
                if self.store.user_exists(user).await? {
                    return Ok(Prepared {
                        freshness: Freshness::Stale,
                        known: state.known,
                    });
                }
                Err(match error {
                    ChainError::Unavailable { retry_after } => {
                        LiveError::Unavailable { retry_after }
                    }
                    ChainError::Failed(reason) => LiveError::Failed(reason),
                    ChainError::NotFound => LiveError::NotFound,
                })
            }
        }
    }

    async fn walk(
        &self,
        state: &mut SyncState,
        user: UserId,
        before: Option<TweetId>,
        need: usize,
    ) -> Result<(), Walk> {
        let now = (self.clock)();
        if state.run.as_ref().is_some_and(|r| !self.alive(r, now)) {
            state.run = None;
        }
        if state.older.as_ref().is_some_and(|r| !self.alive(r, now)) {
            state.older = None;
        }
        let head_stale = state
            .head_ms
            .is_none_or(|at| now - at >= secs(self.cache.first_page_ttl_secs));
        let mut calls = 0u32;
        if state.run.is_none() || (before.is_none() && head_stale) {
            self.refresh(state, user, now, &mut calls).await?;
        }
        loop {
            let Some(run) = state.run.as_ref() else {
                return Ok(());
            };
            let Some(cursor) = run.cursor.clone() else {
                return Ok(());
            };
            let ids = self.store.media_ids(user, before, need).await?;
            if covers(run, &ids, need) {
                return Ok(());
            }
            if calls >= self.cache.max_calls_per_request {
                tracing::warn!(%user, calls, "page not covered after the most calls one request may make");
                return Ok(());
            }
            let upstream = run.upstream.clone();
            calls += 1;
            match self.upstreams.page_of(&upstream, user, &cursor).await {
                Ok(fetched) => self.absorb(state, fetched, now).await?,
                Err(ChainError::NotFound) => return Err(Walk::Upstream(ChainError::NotFound)),
                // The run's upstream fails: start again from the top on the others. Its cursors
                // are no good now, so its runs are dropped (their tweets stay stored, and the
                // new run walks over them).
                Err(_) if self.upstreams.has_other_than(&upstream) => {
                    state.run = None;
                    if state.older.as_ref().is_some_and(|o| o.upstream == upstream) {
                        state.older = None;
                    }
                    self.refresh(state, user, now, &mut calls).await?;
                }
                Err(error) => return Err(Walk::Upstream(error)),
            }
        }
    }

    /// A new run from the timeline's top; the current one is kept below it.
    async fn refresh(
        &self,
        state: &mut SyncState,
        user: UserId,
        now: i64,
        calls: &mut u32,
    ) -> Result<(), Walk> {
        *calls += 1;
        let fetched = self
            .upstreams
            .first_page(user)
            .await
            .map_err(Walk::Upstream)?;
        if let Some(current) = state.run.take() {
            state.older = current.top.is_some().then_some(current);
        }
        state.run = Some(Run {
            started_ms: now,
            top: fetched.page.newest,
            reached: None,
            upstream: fetched.upstream.clone(),
            cursor: None,
        });
        state.head_ms = Some(now);
        state.known = true;
        state.not_found_until_ms = None;
        self.absorb(state, fetched, now).await
    }

    /// Stores a fetched page and moves the run down to it; joins the older run when reached.
    async fn absorb(&self, state: &mut SyncState, fetched: Fetched, now: i64) -> Result<(), Walk> {
        let Fetched { upstream, page } = fetched;
        if !page.tweets.is_empty() {
            self.store.upsert_tweets(page.tweets).await?;
        }
        let run = state.run.get_or_insert_with(|| Run {
            started_ms: now,
            top: page.newest,
            reached: None,
            upstream: upstream.clone(),
            cursor: None,
        });
        run.top = run.top.max(page.newest);
        run.reached = match (run.reached, page.reached) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        run.upstream = upstream;
        // An empty page ends the walk, cursor or not: nothing more can come of it.
        run.cursor = page.next.filter(|_| page.reached.is_some());
        // The runs join when this one reaches the older one's newest tweet. An older run of an
        // empty timeline has nothing to join: every tweet now is newer than it.
        let joins = match (&state.older, run.reached) {
            (Some(older), Some(reached)) => older.top.is_some_and(|top| reached <= top),
            _ => false,
        };
        if joins && let Some(older) = state.older.take() {
            run.reached = older.reached.min(run.reached).or(older.reached);
            run.cursor = older.cursor;
            run.upstream = older.upstream;
            run.started_ms = run.started_ms.min(older.started_ms);
        } else if run.cursor.is_none() {
            state.older = None;
        }
        Ok(())
    }

    async fn load(&self, user: UserId) -> Result<SyncState, LiveError> {
        let Some(bytes) = self.store.sync_state(user).await? else {
            return Ok(SyncState::default());
        };
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(%user, error = %e, "unreadable cache notes, starting afresh");
            SyncState::default()
        }))
    }

    async fn save(&self, user: UserId, state: &SyncState) -> Result<(), LiveError> {
        let bytes = serde_json::to_vec(state).expect("notes serialize");
        Ok(self.store.put_sync_state(user, bytes).await?)
    }

    fn flight(&self, user: UserId) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(&user).and_then(Weak::upgrade) {
            return flight;
        }
        if flights.len() >= 1024 {
            flights.retain(|_, f| f.strong_count() > 0);
        }
        let flight = Arc::new(tokio::sync::Mutex::new(()));
        flights.insert(user, Arc::downgrade(&flight));
        flight
    }
}

enum Walk {
    Upstream(ChainError),
    Store(StoreError),
}

impl From<StoreError> for Walk {
    fn from(e: StoreError) -> Self {
        Walk::Store(e)
    }
}

/// Whether `run` holds the whole page whose stored ids (up to `need`) are `ids`.
fn covers(run: &Run, ids: &[TweetId], need: usize) -> bool {
    if run.cursor.is_none() {
        return true;
    }
    match (
        ids.len() >= need,
        ids.get(need.saturating_sub(1)),
        run.reached,
    ) {
        (true, Some(last), Some(reached)) => *last >= reached,
        _ => false,
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
