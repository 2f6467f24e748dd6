//! Live data: upstream connectors (X API v2, and relays that speak this API's contract) behind
//! one trait, tried in priority order with retries, timeouts and a circuit breaker each, and the
//! store as a read-through cache in front of them ([`Live`]).
//!
//! Rules and settings are in `docs/UPSTREAMS.md`.

pub mod breaker;
pub mod config;
mod live;
pub mod metrics;
pub mod relay;
mod upstreams;
pub mod x_api_v2;

use std::time::Duration;

use async_trait::async_trait;
use xgate_model::{TweetId, TweetRecord, UserId};

pub use live::{Freshness, Live, LiveError, Prepared};
pub use upstreams::{UpstreamState, Upstreams};

/// One page of a user's timeline as an upstream gave it.
#[derive(Debug, Clone, Default)]
pub struct UpstreamPage {
    /// The user's media tweets on this page, newest first.
    pub tweets: Vec<TweetRecord>,
    /// The newest and the oldest tweet on the page, media or not: every tweet of the user's
    /// between them was on it.
    pub newest: Option<TweetId>,
    pub reached: Option<TweetId>,
    /// The upstream's own cursor for the next page; `None` at the timeline's end.
    pub next: Option<String>,
}

/// Why an upstream call gave no page.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// The upstream does not know the user.
    #[error("user not found upstream")]
    NotFound,
    /// The upstream's rate limit is spent (or it answered 429); `retry_after` when it said.
    #[error("rate limited upstream")]
    RateLimited { retry_after: Option<Duration> },
    /// No answer: cannot connect, timed out, cut off. Worth retrying.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// A 5xx answer. Worth retrying.
    #[error("upstream failed: {0}")]
    ServerError(String),
    /// An answer that is not the documented protocol.
    #[error("malformed upstream answer: {0}")]
    Malformed(String),
    /// A 4xx other than not-found and rate limiting (bad credentials, say): not retried.
    #[error("upstream refused the call: {0}")]
    Refused(String),
}

impl UpstreamError {
    /// Whether calling again soon may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unavailable(_) | UpstreamError::ServerError(_)
        )
    }
}

/// A source of users' timelines.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The page of `user`'s timeline at `cursor` (the first page for `None`).
    async fn page(&self, user: UserId, cursor: Option<&str>)
    -> Result<UpstreamPage, UpstreamError>;

    /// When the upstream's own rate limit window will let the next call through, if it is spent
    /// now: no call should be made before.
    fn blocked_for(&self) -> Option<Duration> {
        None
    }
}

impl UpstreamError {
    /// The outcome label of `/metrics`.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::NotFound => "not_found",
            UpstreamError::RateLimited { .. } => "rate_limited",
            UpstreamError::Unavailable(_) => "unavailable",
            UpstreamError::ServerError(_) => "server_error",
            UpstreamError::Malformed(_) => "malformed",
            UpstreamError::Refused(_) => "refused",
        }
    }
}

/// The error an HTTP status other than 200 means, the same for every connector: 404 the user is
/// unknown, 429 rate limited (`retry_after` when known), 5xx worth retrying, any other refused.
pub(crate) fn status_error(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
) -> UpstreamError {
    match status.as_u16() {
        404 => UpstreamError::NotFound,
        429 => UpstreamError::RateLimited { retry_after },
        500..=599 => UpstreamError::ServerError(format!("HTTP {status}")),
        _ => UpstreamError::Refused(format!("HTTP {status}")),
    }
}
