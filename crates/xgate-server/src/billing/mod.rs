//! Keys, credits and limits on the HTTP side: who is calling, may they, and what it cost.
//!
//! [`middleware::meter`] wraps every data endpoint; [`routes`] serves `/v1/credits` and
//! `/v1/usage`. The money itself is kept by `xgate_billing::Meter`.

pub mod middleware;
pub mod routes;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use xgate_billing::{Meter, Prices, RateLimits, keys};
use xgate_store::accounts::{AccountId, AccountStore, KeyAuth};

use crate::error::ApiError;

/// How long a key's state is trusted before it is read again: a revocation reaches every running
/// server within this, plus one lookup.
const KEY_TTL: Duration = Duration::from_millis(900);
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Remembered keys (valid or not) before the cache starts over.
const KEY_CACHE_MAX: usize = 100_000;

/// What a key resolved to (`None`: no such key), and until when that is trusted (`KEY_TTL` after
/// it was read: a comparison on every request rather than a subtraction).
type CachedKey = (Option<KeyAuth>, Instant);

/// What an operator sets.
#[derive(Debug, Clone, Default)]
pub struct BillingConfig {
    pub prices: Prices,
    /// Requests per minute per account, unless the account has its own limit.
    pub default_rate_limit: Option<NonZeroU32>,
    /// Count rate limits in the store, so nodes sharing it enforce one limit together (for a
    /// shared database); otherwise each process counts its own.
    pub shared_rate_limits: bool,
}

/// Billing state of a server.
pub struct Billing {
    accounts: Arc<dyn AccountStore>,
    meter: Arc<Meter>,
    prices: Prices,
    limits: RateLimits,
    /// By the key as presented, so a known key costs one map lookup: no decoding, no hashing.
    keys: Mutex<HashMap<Box<str>, CachedKey>>,
    in_flight: Mutex<HashSet<(AccountId, String)>>,
}

/// The caller, once its key checks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub auth: KeyAuth,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Billing {
    /// Starts billing over `accounts` (its meter's writer task runs on the current runtime).
    pub fn start(accounts: Arc<dyn AccountStore>, config: BillingConfig) -> Self {
        let limits = if config.shared_rate_limits {
            RateLimits::shared(config.default_rate_limit, accounts.clone())
        } else {
            RateLimits::new(config.default_rate_limit)
        };
        Billing {
            meter: Meter::start(accounts.clone()),
            accounts,
            prices: config.prices,
            limits,
            keys: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    pub fn accounts(&self) -> &dyn AccountStore {
        &*self.accounts
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// The caller behind the request's key: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    /// `now` is when the request came (the caller has read the clock already): a remembered key
    /// is trusted if it was read less than `KEY_TTL` before.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<Caller, ApiError> {
        self.authenticate_found(&BillingHeaders::find(headers), now)
            .await
    }

    /// [`Billing::authenticate`], with the request's billing headers found already.
    pub(crate) async fn authenticate_found(
        &self,
        found: &BillingHeaders<'_>,
        now: Instant,
    ) -> Result<Caller, ApiError> {
        let presented = found.presented_key().ok_or(ApiError::MissingApiKey)?;
        let cached = lock(&self.keys)
            .get(presented)
            .filter(|(_, until)| now < *until)
            .map(|(auth, _)| *auth);
        let auth = match cached {
            Some(auth) => auth,
            None => {
                // Malformed keys are refused without a lookup and never remembered.
                let hash = keys::parse(presented).map_err(|_| ApiError::InvalidApiKey)?;
                let auth = self.accounts.key_by_hash(hash).await?;
                let mut keys = lock(&self.keys);
                if keys.len() >= KEY_CACHE_MAX {
                    keys.clear();
                }
                // As read at `now`, before the lookup: if anything, it expires early.
                let until = now.checked_add(KEY_TTL).unwrap_or(now);
                keys.insert(presented.into(), (auth, until));
                auth
            }
        };
        match auth {
            Some(auth) if !auth.revoked => Ok(Caller { auth }),
            _ => Err(ApiError::InvalidApiKey),
        }
    }

    /// Marks `(account, key)` as running; `None` if it already is.
    fn begin_idempotent(&self, account: AccountId, key: &str) -> Option<InFlight<'_>> {
        let entry = (account, key.to_owned());
        // The lock is released before an `InFlight` can exist: dropping one takes the lock.
        let inserted = lock(&self.in_flight).insert(entry.clone());
        inserted.then(|| InFlight {
            billing: self,
            entry,
        })
    }
}

/// A running request holding an `Idempotency-Key`; the key is free again when it ends.
pub(crate) struct InFlight<'a> {
    billing: &'a Billing,
    entry: (AccountId, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.billing.in_flight).remove(&self.entry);
    }
}

/// The request headers billing reads, found in one pass over the request's headers: the few
/// names a request carries are compared (most of them standard names, told apart at once), where a
/// lookup would hash each of the two names that are not standard ones byte by byte. Each is the
/// header's first value, as `HeaderMap::get` gives it.
#[derive(Default)]
pub(crate) struct BillingHeaders<'a> {
    authorization: Option<&'a HeaderValue>,
    api_key: Option<&'a HeaderValue>,
    pub idempotency_key: Option<&'a HeaderValue>,
}

impl<'a> BillingHeaders<'a> {
    pub fn find(headers: &'a HeaderMap) -> Self {
        let mut found = BillingHeaders::default();
        for (name, value) in headers {
            let slot = if *name == AUTHORIZATION {
                &mut found.authorization
            } else if *name == X_API_KEY {
                &mut found.api_key
            } else if *name == IDEMPOTENCY_KEY {
                &mut found.idempotency_key
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        found
    }

    /// The key presented: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    fn presented_key(&self) -> Option<&'a str> {
        let bearer = self.authorization.map(|value| {
            // A credential in another scheme, or not text, is a wrong key rather than no key.
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().split_once(' '))
                .and_then(|(scheme, key)| scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()))
                .unwrap_or("")
        });
        let api_key = self
            .api_key
            .map(|v| v.to_str().map(str::trim).unwrap_or(""));
        match (bearer, api_key) {
            // Two different credentials: neither is trusted.
            (Some(a), Some(b)) if a != b => Some(""),
            (Some(key), _) => Some(key),
            (None, Some(key)) => Some(key).filter(|k| !k.is_empty()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use xgate_store_sqlite::SqliteStore;

    use super::*;

    proptest! {
        /// Whatever headers a request carries, in any order and repeated, the one pass finds what
        /// a lookup of each name would: its first value.
        #[test]
        fn billing_headers_are_each_names_first_value(
            fields in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "authorization", "x-api-key", "idempotency-key", "host",
                        "content-type", "x-api-keys", "x-request-id",
                    ]),
                    "[a-z0-9 ]{0,12}",
                ),
                0..12,
            )
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &fields {
                headers.append(*name, HeaderValue::from_str(value).unwrap());
            }
            let found = BillingHeaders::find(&headers);
            prop_assert_eq!(found.authorization, headers.get(AUTHORIZATION));
            prop_assert_eq!(found.api_key, headers.get(X_API_KEY));
            prop_assert_eq!(found.idempotency_key, headers.get(IDEMPOTENCY_KEY));
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_in_use_is_refused_without_blocking_and_freed_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("b.db")).unwrap());
        let billing = Billing::start(store, BillingConfig::default());
        let account = AccountId(1);
        let first = billing
            .begin_idempotent(account, "k")
            .expect("free at first");
        // A second use while the first runs is refused; this used to deadlock the thread.
        assert!(billing.begin_idempotent(account, "k").is_none());
        assert!(
            billing.begin_idempotent(AccountId(2), "k").is_some(),
            "per account"
        );
        drop(first);
        assert!(
            billing.begin_idempotent(account, "k").is_some(),
            "free again"
        );
    }
}
