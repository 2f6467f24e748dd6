//! Moving a whole store to another backend (`xgate store copy`): everything read out in key
//! order, written in with its ids kept, so keys, tokens and the ledger mean the same afterwards.

use async_trait::async_trait;
use xgate_model::{TweetId, TweetRecord};

use crate::StoreResult;

/// An account row as stored, ids included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub balance: i64,
    pub free_allowance: i64,
    pub free_used: i64,
    pub free_period: String,
    pub rate_limit: Option<i64>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    pub id: i64,
    pub account_id: i64,
    pub amount: i64,
    pub note: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: i64,
    pub account_id: i64,
    pub hash: Vec<u8>,
    pub prefix: String,
    pub label: Option<String>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub seq: i64,
    pub request_id: String,
    pub account_id: i64,
    pub key_id: i64,
    pub at_ms: i64,
    pub endpoint: String,
    pub status: i64,
    pub cost: i64,
    pub paid: i64,
    pub free: i64,
    pub latency_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRow {
    pub account_id: i64,
    pub key: String,
    pub request_hash: Vec<u8>,
    pub status: i64,
    pub body: Vec<u8>,
    pub request_id: String,
    pub created_ms: i64,
}

/// Everything about accounts but the ledger, which is moved in pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountsDump {
    pub accounts: Vec<AccountRow>,
    pub grants: Vec<GrantRow>,
    pub keys: Vec<KeyRow>,
    pub idempotency: Vec<IdempotencyRow>,
    pub settings: Vec<(String, Vec<u8>)>,
}

/// How much a store holds, to check a copy against its source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tweets: u64,
    pub users: u64,
    pub accounts: u64,
    pub grants: u64,
    pub keys: u64,
    pub requests: u64,
    /// Sum of every account's balance, and of every ledger row's paid credits.
    pub balances: i64,
    pub paid: i64,
    /// The last ledger row's `seq`: where an interrupted copy of the ledger resumes.
    pub last_seq: i64,
}

#[async_trait]
pub trait Transfer: Send + Sync {
    /// Up to `limit` tweets (media or not) with ids above `after`, in id order.
    async fn tweets_after(
        &self,
        after: Option<TweetId>,
        limit: usize,
    ) -> StoreResult<Vec<TweetRecord>>;

    /// The largest tweet id stored: where an interrupted copy resumes.
    async fn last_tweet_id(&self) -> StoreResult<Option<TweetId>>;

    async fn dump_accounts(&self) -> StoreResult<AccountsDump>;

    /// Writes `dump` with its ids, replacing settings of the same key; rows already present
    /// (same id) are left as they are, so a copy can be run again.
    async fn load_accounts(&self, dump: AccountsDump) -> StoreResult<()>;

    /// Up to `limit` ledger rows with `seq` above `after`, in order.
    async fn requests_after(&self, after: i64, limit: usize) -> StoreResult<Vec<RequestRow>>;

    /// Writes ledger rows with their `seq`; rows already present are skipped.
    async fn load_requests(&self, rows: Vec<RequestRow>) -> StoreResult<()>;

    async fn counts(&self) -> StoreResult<Counts>;
}
