//! Storage behind one trait.
//!
//! The server, the CLI and the tests talk to a [`Store`]; each backend (the embedded SQLite store
//! now, PostgreSQL later) implements it in its own crate and owns its schema and migrations. The
//! backend is chosen once, from the database location, and everything after holds an
//! `Arc<dyn Store>`.

use async_trait::async_trait;
use xgate_model::{TweetId, TweetRecord, UserId};

pub mod accounts;
pub mod journal;
pub mod sortable;
#[cfg(feature = "story")]
pub mod story;
pub mod transfer;

/// A stored tweet on its way out: its id and its JSON exactly as it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTweet {
    pub tweet_id: TweetId,
    pub json: String,
}

/// What [`Store::media_page_into`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// Tweets written.
    pub count: usize,
    /// The last (oldest) tweet written.
    pub last: Option<TweetId>,
    /// Whether older media tweets exist beyond the page.
    pub more: bool,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertSummary {
    /// Tweets that were new, or whose stored JSON changed.
    pub written: u64,
    /// Tweets already stored exactly as given.
    pub unchanged: u64,
}

impl std::ops::AddAssign for UpsertSummary {
    fn add_assign(&mut self, rhs: Self) {
        self.written += rhs.written;
        self.unchanged += rhs.unchanged;
    }
}

/// A user the store knows, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSummary {
    pub user_id: UserId,
    pub username: Option<String>,
    pub media_tweets: u64,
}

/// A storage failure. Callers answer it with a 5xx that carries no detail, and log the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is busy beyond its timeout: worth a retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The operations xgate needs from a store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest media tweets of `user`, newest first, older than `before` when given, at most
    /// `limit` of them. This is the hot path: one indexed range read, no JSON work.
    async fn media_page(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<StoredTweet>>;

    /// The same page as [`Store::media_page`], written straight into `out` as the stored JSON
    /// texts separated by commas, and whether more tweets follow it. This is what the server
    /// calls: the stored bytes are copied once, into the response.
    async fn media_page_into(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> StoreResult<PageInfo> {
        let mut tweets = self.media_page(user, before, limit + 1).await?;
        let more = tweets.len() > limit;
        tweets.truncate(limit);
        for (i, tweet) in tweets.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(tweet.json.as_bytes());
        }
        Ok(PageInfo {
            count: tweets.len(),
            last: tweets.last().map(|t| t.tweet_id),
            more,
        })
    }

    /// Whether the store knows `user` (as the author of any stored tweet).
    async fn user_exists(&self, user: UserId) -> StoreResult<bool>;

    /// The ids of up to `limit` of `user`'s media tweets older than `before`, newest first: a
    /// page without its tweets. The read-through cache uses it to see how far stored pages reach.
    async fn media_ids(
        &self,
        user: UserId,
        before: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetId>> {
        let page = self.media_page(user, before, limit).await?;
        Ok(page.into_iter().map(|t| t.tweet_id).collect())
    }

    /// What the read-through cache noted about `user`'s timeline upstream (opaque to the store),
    /// or `None` when it has noted nothing.
    async fn sync_state(&self, user: UserId) -> StoreResult<Option<Vec<u8>>>;

    /// Replaces what the read-through cache noted about `user`.
    async fn put_sync_state(&self, user: UserId, state: Vec<u8>) -> StoreResult<()>;

    /// Inserts or replaces tweets by tweet id, and keeps each author's newest profile. Applying
    /// the same batch twice leaves the store as the first application left it.
    async fn upsert_tweets(&self, tweets: Vec<TweetRecord>) -> StoreResult<UpsertSummary>;

    /// The value of a setting, storing `value` first if the setting is absent. Atomic: when
    /// several callers race, all get the one value that was stored first.
    async fn setting_or_insert(&self, key: &str, value: Vec<u8>) -> StoreResult<Vec<u8>>;

    /// Users by id, at most `limit`, with their media tweet counts.
    async fn users(&self, limit: usize) -> StoreResult<Vec<UserSummary>>;

    /// Answers when the store is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// For caches of pages: a number that changes whenever a page read may return something it
    /// did not before. Writes through this store change it before they return; writes by
    /// anything else (another process on the same file) within a short, backend-defined delay.
    /// `None` when the backend cannot tell cheaply: its pages are then never cached.
    fn pages_version(&self) -> Option<u64> {
        None
    }

    /// Ends a bulk load opened for one. A backend that builds a new store during its first load
    /// puts it in place now; until then, and if this is never called, the load is not stored.
    async fn finish_load(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// A whole store: tweets and accounts, as every backend provides.
pub trait Backend: Store + accounts::AccountStore + transfer::Transfer {}

impl<T: Store + accounts::AccountStore + transfer::Transfer> Backend for T {}
