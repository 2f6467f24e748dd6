//! Accounts, API keys, credits and the request ledger: the storage half of billing.
//!
//! Money rules every backend keeps, in one transaction each:
//! - an account's `balance` always equals the credits ever added minus the `paid` part of every
//!   ledger row ([`AccountStore::audit`] checks it);
//! - a charge is applied only if the account can cover it (free allowance first, then balance),
//!   so the balance never goes below zero, whatever the concurrency;
//! - a charge, its ledger row and its idempotent response are written together or not at all.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;

use crate::journal::ChargeJournal;
use crate::{StoreError, StoreResult};

/// An account's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub i64);

/// An API key's id (not the key: keys are stored only as hashes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub i64);

/// An account and its money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    /// Purchased credits left.
    pub balance: i64,
    /// Credits free each calendar month (UTC), spent before purchased ones.
    pub free_allowance: i64,
    /// Free credits spent in `free_period`.
    pub free_used: i64,
    /// The month `free_used` counts, `YYYY-MM`.
    pub free_period: String,
    /// Requests per minute, overriding the server's default; `None` follows the default.
    pub rate_limit: Option<u32>,
    pub created_ms: i64,
}

/// A charge an account can cover: how much of it is paid and how much comes from the free
/// allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub paid: i64,
    pub free: i64,
}

impl Account {
    /// How a charge of `cost` in `month` would be covered (the free allowance first, then the
    /// balance), or `Recorded::Insufficient` when it cannot be. Starts the month's allowance
    /// afresh when `month` is new; otherwise changes nothing. Every backend applies charges by
    /// this rule and [`Account::apply`], inside the transaction that writes the ledger row.
    pub fn split(&mut self, cost: i64, month: &str) -> Result<Split, Recorded> {
        if self.free_period != month {
            self.free_period = month.to_owned();
            self.free_used = 0;
        }
        let free_left = self.free_left(month);
        let free = cost.min(free_left);
        let paid = cost - free;
        if paid > self.balance {
            return Err(Recorded::Insufficient {
                balance: self.balance,
                free_left,
            });
        }
        Ok(Split { paid, free })
    }

    /// Applies a charge `split` said the account covers (once its ledger row is written).
    pub fn apply(&mut self, split: Split, month: &str) -> Recorded {
        self.balance -= split.paid;
        self.free_used += split.free;
        Recorded::Done {
            paid: split.paid,
            free: split.free,
            balance: self.balance,
            free_left: self.free_left(month),
        }
    }

    /// Free credits left in `month` (`YYYY-MM`).
    pub fn free_left(&self, month: &str) -> i64 {
        let used = if self.free_period == month {
            self.free_used
        } else {
            0
        };
        (self.free_allowance - used).max(0)
    }
}

/// What the server needs to know about a presented key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAuth {
    pub key_id: KeyId,
    pub account_id: AccountId,
    pub revoked: bool,
    /// The account's own rate limit, if it has one.
    pub rate_limit: Option<u32>,
}

/// A key as listed for the operator: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: KeyId,
    pub account: String,
    /// The first characters of the key, enough to recognise it.
    pub prefix: String,
    pub label: Option<String>,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A key to store: its SHA-256 hash and display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    pub hash: [u8; 32],
    pub prefix: String,
    pub label: Option<String>,
}

/// Which key to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    Id(KeyId),
    Hash([u8; 32]),
}

/// A response kept for `Idempotency-Key` replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// SHA-256 of the request (method, path, query, body) the response answered.
    pub request_hash: [u8; 32],
    pub status: u16,
    pub body: Vec<u8>,
    pub request_id: String,
    pub created_ms: i64,
}

/// A request's id, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestId {
    /// Minted by this process for a request it serves: unique by construction.
    Minted(MintedId),
    /// Any other id (a test's, one read from elsewhere): a store checks that it was not recorded
    /// before.
    Given(String),
}

impl RequestId {
    /// The id as text: a minted one as a lowercase hyphenated UUID.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            RequestId::Minted(id) => Cow::Owned(id.to_string()),
            RequestId::Given(text) => Cow::Borrowed(text),
        }
    }
}

/// A request id from this process's UUIDv7 generator: only [`MintedId::new`] makes one.
///
/// The generator keeps one counter for the whole process (uuid's shared `ContextV7`), so every
/// id it makes is greater than the one before: no two are equal within a process. Two processes'
/// ids are equal only if they share their millisecond and 73 bits drawn at random (a counter
/// reseeded with 41 random bits every millisecond, and 32 random bits an id). That is what
/// lets a store record a minted id without looking it up first, which is most of the cost of a
/// charge in a store that must prove uniqueness with an index: a caller records each minted id
/// once (the server's metering does: a request's record is made once, and logged again only
/// when the store answered that the first was not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MintedId(uuid::Uuid);

impl MintedId {
    /// A new id, greater than every id minted before it in this process.
    #[allow(clippy::new_without_default, reason = "each call makes a different id")]
    pub fn new() -> MintedId {
        MintedId(uuid::Uuid::now_v7())
    }

    /// An id an earlier process minted, read back from its charge journal
    /// ([`crate::journal`]), which records each of its entries once.
    pub(crate) fn from_journal(bytes: [u8; 16]) -> MintedId {
        MintedId(uuid::Uuid::from_bytes(bytes))
    }

    /// Its 16 bytes, as a store keeps a UUID.
    pub fn bytes(&self) -> [u8; 16] {
        self.0.into_bytes()
    }

    /// Its text, lowercase and hyphenated, without allocating.
    pub fn hyphenated(&self) -> [u8; uuid::fmt::Hyphenated::LENGTH] {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        self.0.hyphenated().encode_lower(&mut text);
        text
    }
}

impl std::fmt::Display for MintedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// One request to record: a charge when `cost > 0`, a log line either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Unique: a request is recorded, and charged, at most once.
    pub request_id: RequestId,
    pub account: AccountId,
    pub key: KeyId,
    pub at_ms: i64,
    /// `METHOD /path`: a server's own endpoints are `'static`, so recording one copies nothing.
    pub endpoint: Cow<'static, str>,
    pub status: u16,
    /// Credits to charge; 0 for a request that is only logged.
    pub cost: i64,
    pub latency_us: i64,
    /// Kept with the charge, for replays within 24 hours: its `Idempotency-Key` and the
    /// response. Boxed, since few requests have one: a record moves through the charge's channel
    /// and batch by value, and without it is half the size.
    pub idempotency: Option<Box<(String, StoredResponse)>>,
}

/// How recording one request turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Charged (or logged, when the cost was 0). Balances are those after this request.
    Done {
        paid: i64,
        free: i64,
        balance: i64,
        free_left: i64,
    },
    /// The account could not cover the cost: nothing was charged or logged.
    Insufficient { balance: i64, free_left: i64 },
    /// The request id was recorded before: nothing changed.
    Duplicate,
}

/// A row of the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Position in the log, for paging (newest first).
    pub seq: i64,
    pub request_id: String,
    pub at_ms: i64,
    pub endpoint: String,
    pub status: u16,
    pub cost: i64,
    pub paid: i64,
    pub free: i64,
    pub latency_us: i64,
}

/// A day of the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub requests: i64,
    pub succeeded: i64,
    pub credits: i64,
}

/// An account's books: the balance and what it must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    pub balance: i64,
    pub credits_added: i64,
    pub paid: i64,
    /// Ledger rows that charged something for a request that did not succeed (must be 0).
    pub charged_failures: i64,
}

impl Audit {
    pub fn balanced(&self) -> bool {
        self.balance == self.credits_added - self.paid && self.balance >= 0
    }
}

/// Changes to an account's terms; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTerms {
    pub free_allowance: Option<i64>,
    /// `Some(None)` returns the account to the server's default.
    pub rate_limit: Option<Option<u32>>,
}

/// The storage operations of accounts and billing.
/// An account's rate-limit state shared by every node (GCRA: the "theoretical arrival time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTaken {
    /// Whether the request fits the limit (and was counted).
    pub allowed: bool,
    /// The account's theoretical arrival time after this request, in ms since the epoch.
    pub tat_ms: i64,
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// The account called `name`, created (with no credits) if absent.
    async fn ensure_account(&self, name: &str, now_ms: i64) -> StoreResult<Account>;

    async fn account_by_name(&self, name: &str) -> StoreResult<Option<Account>>;

    async fn account(&self, id: AccountId) -> StoreResult<Option<Account>>;

    /// Adds purchased credits (`amount > 0`) with a note, in the books.
    async fn add_credits(
        &self,
        id: AccountId,
        amount: i64,
        note: &str,
        now_ms: i64,
    ) -> StoreResult<Account>;

    async fn set_terms(&self, id: AccountId, terms: AccountTerms) -> StoreResult<Account>;

    async fn insert_key(
        &self,
        account: AccountId,
        key: NewKey,
        now_ms: i64,
    ) -> StoreResult<KeyInfo>;

    /// The key with this hash, revoked or not.
    async fn key_by_hash(&self, hash: [u8; 32]) -> StoreResult<Option<KeyAuth>>;

    async fn list_keys(&self) -> StoreResult<Vec<KeyInfo>>;

    /// Revokes a key; `None` when there is no such key. Revoking twice keeps the first time.
    async fn revoke_key(&self, key: KeySelector, now_ms: i64) -> StoreResult<Option<KeyInfo>>;

    /// Records requests in one transaction, in order, each charge applied only if the account can
    /// cover it (free allowance of `month` first). Also marks the keys as used.
    async fn record(&self, batch: Vec<RequestRecord>, month: &str) -> StoreResult<Vec<Recorded>>;

    /// The charge journal this store keeps for the process serving it, if it keeps one
    /// ([`crate::journal`]): a charge written there may be answered before it is recorded, and
    /// is then recorded with [`AccountStore::record_folding`].
    fn charge_journal(&self) -> Option<Arc<ChargeJournal>> {
        None
    }

    /// [`AccountStore::record`], noting in the same transaction that the charge journal's entries
    /// before `folded` are recorded. Only a store with a charge journal takes it.
    async fn record_folding(
        &self,
        batch: Vec<RequestRecord>,
        month: &str,
        folded: u64,
    ) -> StoreResult<Vec<Recorded>> {
        let _ = (batch, month, folded);
        Err(StoreError::Backend(
            "this store keeps no charge journal".into(),
        ))
    }

    /// A response kept under `key` for `account`, if younger than `not_before_ms`.
    async fn idempotent_response(
        &self,
        account: AccountId,
        key: &str,
        not_before_ms: i64,
    ) -> StoreResult<Option<StoredResponse>>;

    /// Forgets idempotent responses older than `before_ms`; returns how many.
    async fn expire_idempotency(&self, before_ms: i64) -> StoreResult<u64>;

    /// The request log of `account`, newest first, from `since_ms`, before position `before_seq`.
    async fn usage(
        &self,
        account: AccountId,
        since_ms: i64,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<UsageRow>>;

    /// The request log summed by UTC day, from `since_ms`, newest first.
    async fn usage_by_day(&self, account: AccountId, since_ms: i64) -> StoreResult<Vec<UsageDay>>;

    /// The books of an account, to check the money rules.
    async fn audit(&self, account: AccountId) -> StoreResult<Audit>;

    /// Counts a request of `account` at `now_ms` against a limit of one request every
    /// `interval_ms` with a burst of `tolerance_ms / interval_ms + 1` (GCRA), atomically across
    /// every node of the store; a refused request is not counted.
    async fn take_rate(
        &self,
        account: AccountId,
        now_ms: i64,
        interval_ms: i64,
        tolerance_ms: i64,
    ) -> StoreResult<RateTaken>;
}
