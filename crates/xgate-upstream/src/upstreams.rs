//! The configured upstreams in priority order: each call goes to the first one whose breaker and
//! rate-limit window let it, with retries and backoff on 5xx answers and transport errors (never
//! on 4xx); a failing upstream hands over to the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use xgate_model::UserId;

use crate::breaker::Breaker;
use crate::config::{CallConfig, LiveConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::x_api_v2::XApiV2;
use crate::{Connector, UpstreamError, UpstreamPage};

/// When nothing says how long to wait, clients are told to retry after this.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

struct Member {
    name: String,
    connector: Box<dyn Connector>,
    breaker: Breaker,
    retries: u32,
    backoff: Duration,
}

pub struct Upstreams {
    members: Vec<Member>,
    metrics: Arc<Metrics>,
}

/// A page and the upstream it came from (its cursor is good only there).
#[derive(Debug)]
pub struct Fetched {
    pub upstream: String,
    pub page: UpstreamPage,
}

/// Why no upstream gave the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The upstream that answered does not know the user.
    NotFound,
    /// Every upstream is down, rate limited or switched off by its breaker: try again later.
    Unavailable { retry_after: Duration },
    /// The upstreams answered, wrongly (5xx, malformed, refused).
    Failed(String),
}

/// An upstream as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamState {
    pub name: String,
    /// `closed` (calls go through), `open` (none until the cooldown ends) or `half-open`.
    pub breaker: &'static str,
    /// Seconds until its rate-limit window lets calls through again, when it is spent.
    pub rate_limited_for_secs: Option<u64>,
}

impl Upstreams {
    /// The upstreams of `config`, in its order.
    pub fn from_config(config: &LiveConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let mut members = Vec::new();
        for upstream in &config.upstreams {
            let name = upstream.name();
            let (connector, call): (Box<dyn Connector>, &CallConfig) = match upstream {
                UpstreamConfig::XApiV2 {
                    base_url,
                    bearer_token,
                    call,
                    ..
                } => {
                    let token = bearer_token.clone().unwrap_or_default();
                    (Box::new(XApiV2::new(base_url, token, call)?), call)
                }
                UpstreamConfig::Relay {
                    base_url,
                    headers,
                    call,
                    ..
                } => (Box::new(Relay::new(base_url, headers, call)?), call),
            };
            members.push((name, connector, call.clone()));
        }
        Ok(Self::new(members, metrics))
    }

    /// Upstreams from connectors made elsewhere (tests make their own).
    pub fn new(
        members: Vec<(String, Box<dyn Connector>, CallConfig)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let members = members
            .into_iter()
            .map(|(name, connector, call)| Member {
                name,
                connector,
                breaker: Breaker::new(
                    call.breaker_failures,
                    Duration::from_secs(call.breaker_cooldown_secs),
                ),
                retries: call.retries,
                backoff: Duration::from_millis(call.backoff_ms),
            })
            .collect();
        Upstreams { members, metrics }
    }

    /// The first page of `user`'s timeline, from the first upstream that gives it.
    pub async fn first_page(&self, user: UserId) -> Result<Fetched, ChainError> {
        let mut failures = Failures::default();
        for member in &self.members {
            match self.call(member, user, None).await {
                Ok(page) => {
                    return Ok(Fetched {
                        upstream: member.name.clone(),
                        page,
                    });
                }
                Err(Failure::Upstream(UpstreamError::NotFound)) => {
                    return Err(ChainError::NotFound);
                }
                Err(failure) => failures.add(&member.name, failure),
            }
        }
        Err(failures.into_error())
    }

    /// The page at `cursor` of `user`'s timeline, from the upstream that gave the cursor.
    pub async fn page_of(
        &self,
        upstream: &str,
        user: UserId,
        cursor: &str,
    ) -> Result<Fetched, ChainError> {
        let Some(member) = self.members.iter().find(|m| m.name == upstream) else {
            return Err(ChainError::Failed(format!(
                "no upstream {upstream:?} any more"
            )));
        };
        match self.call(member, user, Some(cursor)).await {
            Ok(page) => Ok(Fetched {
                upstream: member.name.clone(),
                page,
            }),
            Err(Failure::Upstream(UpstreamError::NotFound)) => Err(ChainError::NotFound),
            Err(failure) => {
                let mut failures = Failures::default();
                failures.add(&member.name, failure);
                Err(failures.into_error())
            }
        }
    }

    /// Whether some upstream other than `upstream` could serve.
    pub fn has_other_than(&self, upstream: &str) -> bool {
        self.members.iter().any(|m| m.name != upstream)
    }

    pub fn states(&self) -> Vec<UpstreamState> {
        let now = Instant::now();
        self.members
            .iter()
            .map(|m| UpstreamState {
                name: m.name.clone(),
                breaker: m.breaker.state(now).as_str(),
                rate_limited_for_secs: m.connector.blocked_for().map(|d| d.as_secs().max(1)),
            })
            .collect()
    }

    /// One logical call: retried with backoff while the failure is transient; counted once by
    /// the breaker.
    async fn call(
        &self,
        member: &Member,
        user: UserId,
        cursor: Option<&str>,
    ) -> Result<UpstreamPage, Failure> {
        if let Some(wait) = member.connector.blocked_for() {
            self.metrics.upstream_call(&member.name, "skipped");
            return Err(Failure::Upstream(UpstreamError::RateLimited {
                retry_after: Some(wait),
            }));
        }
        if let Err(wait) = member.breaker.allow(Instant::now()) {
            self.metrics.upstream_call(&member.name, "skipped");
            return Err(Failure::Open(wait));
        }
        let mut attempt = 0;
        loop {
            let result = member.connector.page(user, cursor).await;
            match result {
                Ok(page) => {
                    self.metrics.upstream_call(&member.name, "ok");
                    member.breaker.success();
                    return Ok(page);
                }
                Err(error) => {
                    self.metrics.upstream_call(&member.name, error.label());
                    if error.is_transient() && attempt < member.retries {
                        tokio::time::sleep(member.backoff * 2u32.saturating_pow(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    match &error {
                        // The upstream answered as it should: it is healthy.
                        UpstreamError::NotFound | UpstreamError::RateLimited { .. } => {
                            member.breaker.success();
                        }
                        _ => member.breaker.failure(Instant::now()),
                    }
                    tracing::warn!(upstream = %member.name, %user, %error, "upstream call failed");
                    return Err(Failure::Upstream(error));
                }
            }
        }
    }
}

enum Failure {
    Upstream(UpstreamError),
    /// Not called: its breaker is open for this long.
    Open(Duration),
}

/// What went wrong with each upstream tried.
#[derive(Default)]
struct Failures {
    wait: Option<Duration>,
    unavailable: bool,
    reasons: Vec<String>,
}

impl Failures {
    fn add(&mut self, name: &str, failure: Failure) {
        let mut wait = |d: Duration| self.wait = Some(self.wait.map_or(d, |w| w.min(d)));
        match failure {
            Failure::Open(d) => {
                wait(d);
                self.unavailable = true;
                self.reasons.push(format!("{name}: circuit open"));
            }
            Failure::Upstream(error) => {
                if let UpstreamError::RateLimited { retry_after } = &error {
                    wait(retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                }
                if matches!(
                    error,
                    UpstreamError::RateLimited { .. } | UpstreamError::Unavailable(_)
                ) {
                    self.unavailable = true;
                }
                self.reasons.push(format!("{name}: {error}"));
            }
        }
    }

    fn into_error(self) -> ChainError {
        if self.unavailable {
            ChainError::Unavailable {
                retry_after: self
                    .wait
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .max(Duration::from_secs(1)),
            }
        } else {
            ChainError::Failed(self.reasons.join("; "))
        }
    }
}
