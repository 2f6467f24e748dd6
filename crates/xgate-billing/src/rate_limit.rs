//! Requests per minute per account (GCRA): a server-wide default and a per-account override, no
//! limit unless one is configured. Counted on this node (via `governor`), or in the store so every
//! node sharing it counts together ([`RateLimits::shared`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use xgate_store::StoreResult;
use xgate_store::accounts::{AccountId, AccountStore, RateTaken};

use crate::clock;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The state of an account's limit after a request, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests allowed per minute.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the full quota is available again.
    pub reset_seconds: u64,
}

/// Whether a request may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Unlimited,
    Allowed(Window),
    /// Refused; retry after this many seconds.
    Limited {
        window: Window,
        retry_after: u64,
    },
}

/// Every account's limiter on this node.
pub struct RateLimits {
    default: Option<NonZeroU32>,
    clock: DefaultClock,
    limiters: Mutex<HashMap<AccountId, (NonZeroU32, Arc<Limiter>)>>,
    /// Counted in the store, across nodes, instead of here.
    shared: Option<Arc<dyn AccountStore>>,
}

impl RateLimits {
    /// `default`: requests per minute for accounts without their own limit; `None` for none.
    pub fn new(default: Option<NonZeroU32>) -> Self {
        RateLimits {
            default,
            clock: DefaultClock::default(),
            limiters: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Limits counted in `store`, so that every node sharing it enforces one limit per account
    /// (one store round trip per request of a limited account).
    pub fn shared(default: Option<NonZeroU32>, store: Arc<dyn AccountStore>) -> Self {
        RateLimits {
            shared: Some(store),
            ..RateLimits::new(default)
        }
    }

    /// Counts a request of `account`, whose own limit (if any) is `own`, wherever limits are
    /// counted.
    pub async fn take(&self, account: AccountId, own: Option<u32>) -> StoreResult<Decision> {
        let Some(store) = &self.shared else {
            return Ok(self.check(account, own));
        };
        let Some(per_minute) = own.and_then(NonZeroU32::new).or(self.default) else {
            return Ok(Decision::Unlimited);
        };
        let limit = per_minute.get();
        let interval = (60_000 / i64::from(limit)).max(1);
        let tolerance = interval * (i64::from(limit) - 1);
        let now = clock::now_ms();
        let taken = store.take_rate(account, now, interval, tolerance).await?;
        Ok(gcra(limit, interval, tolerance, now, taken))
    }

    /// Counts a request of `account`, whose own limit (if any) is `own`.
    pub fn check(&self, account: AccountId, own: Option<u32>) -> Decision {
        let Some(per_minute) = own.and_then(NonZeroU32::new).or(self.default) else {
            return Decision::Unlimited;
        };
        let limiter = {
            let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = limiters
                .entry(account)
                .or_insert_with(|| (per_minute, new_limiter(per_minute)));
            if entry.0 != per_minute {
                *entry = (per_minute, new_limiter(per_minute));
            }
            Arc::clone(&entry.1)
        };
        let limit = per_minute.get();
        let per_request = Duration::from_secs(60) / limit;
        match limiter.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = limit - remaining;
                Decision::Allowed(Window {
                    limit,
                    remaining,
                    reset_seconds: (per_request * missing).as_secs_f64().ceil() as u64,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
                Decision::Limited {
                    window: Window {
                        limit,
                        remaining: 0,
                        reset_seconds: (per_request * limit).as_secs_f64().ceil() as u64,
                    },
                    retry_after,
                }
            }
        }
    }
}

/// The decision a shared GCRA state gives, with the same windows as the local limiter.
fn gcra(limit: u32, interval: i64, tolerance: i64, now: i64, taken: RateTaken) -> Decision {
    let ahead = (taken.tat_ms - now).max(0);
    let seconds = |ms: i64| u64::try_from((ms + 999) / 1000).unwrap_or(0);
    if taken.allowed {
        let remaining = (i64::from(limit) * interval - ahead) / interval;
        Decision::Allowed(Window {
            limit,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
            reset_seconds: seconds(ahead),
        })
    } else {
        Decision::Limited {
            window: Window {
                limit,
                remaining: 0,
                reset_seconds: seconds(ahead),
            },
            retry_after: seconds(ahead - tolerance).max(1),
        }
    }
}

fn new_limiter(per_minute: NonZeroU32) -> Arc<Limiter> {
    Arc::new(RateLimiter::direct(Quota::per_minute(per_minute)).with_middleware())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limit_unless_configured() {
        let limits = RateLimits::new(None);
        for _ in 0..1000 {
            assert_eq!(limits.check(AccountId(1), None), Decision::Unlimited);
        }
    }

    #[test]
    fn the_quota_is_a_burst_then_refusals_with_a_retry_time() {
        let limits = RateLimits::new(NonZeroU32::new(3));
        let remaining: Vec<u32> = (0..3)
            .map(|_| match limits.check(AccountId(1), None) {
                Decision::Allowed(w) => w.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limits.check(AccountId(1), None) {
            Decision::Limited {
                retry_after,
                window,
            } => {
                assert!((1..=20).contains(&retry_after), "{retry_after}");
                assert_eq!(window.remaining, 0);
            }
            other => panic!("{other:?}"),
        }
        // Another account has its own bucket; an override replaces the default.
        assert!(matches!(
            limits.check(AccountId(2), None),
            Decision::Allowed(_)
        ));
        assert!(
            matches!(limits.check(AccountId(1), Some(100)), Decision::Allowed(w) if w.limit == 100)
        );
    }

    #[test]
    fn a_shared_state_gives_the_same_windows() {
        // 3 a minute: one every 20 s, burst 3.
        let (interval, tolerance, now) = (20_000, 40_000, 1_000_000);
        let allowed = |tat_ms| {
            gcra(
                3,
                interval,
                tolerance,
                now,
                RateTaken {
                    allowed: true,
                    tat_ms,
                },
            )
        };
        let remaining: Vec<u32> = [now + 20_000, now + 40_000, now + 60_000]
            .into_iter()
            .map(|tat| match allowed(tat) {
                Decision::Allowed(w) => w.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = gcra(
            3,
            interval,
            tolerance,
            now + 1_000,
            RateTaken {
                allowed: false,
                tat_ms: now + 60_000,
            },
        );
        assert_eq!(
            refused,
            Decision::Limited {
                window: Window {
                    limit: 3,
                    remaining: 0,
                    reset_seconds: 59
                },
                retry_after: 19,
            }
        );
    }
}
