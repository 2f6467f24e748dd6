//! X API v2: a user's timeline from `GET /2/users/:id/tweets`, 100 posts a call, mapped to the
//! API's tweet format by the same rules as ingested v2 pages
//! ([`xgate_ingest::formats::x_api_v2::map_page`]). Posts without media are dropped. The
//! endpoint reaches a user's 3,200 most recent posts, no further.
//!
//! Its rate-limit headers (`x-rate-limit-limit`, `-remaining`, `-reset`) are obeyed: once a
//! window is spent, no call is made before it resets.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use xgate_ingest::formats::x_api_v2::{Page, map_page};
use xgate_model::{TweetId, TweetRecord, UserId};

use crate::config::{CallConfig, Secret};
use crate::{Connector, UpstreamError, UpstreamPage, status_error};

/// What each call asks for: every field the tweet format is built from.
const QUERY: &[(&str, &str)] = &[
    ("max_results", "100"),
    ("exclude", "retweets"),
    ("expansions", "attachments.media_keys,author_id"),
    (
        "tweet.fields",
        "created_at,author_id,conversation_id,lang,public_metrics,attachments,referenced_tweets,note_tweet",
    ),
    (
        "media.fields",
        "url,preview_image_url,width,height,duration_ms,alt_text,variants,public_metrics",
    ),
    (
        "user.fields",
        "created_at,description,location,profile_image_url,protected,verified,verified_type,url,entities,public_metrics",
    ),
];

pub struct XApiV2 {
    client: reqwest::Client,
    base: Url,
    token: Secret,
    /// The rate-limit window as the last answer described it.
    window: Mutex<Option<Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    reset: SystemTime,
}

impl XApiV2 {
    pub fn new(base_url: &str, token: Secret, call: &CallConfig) -> Result<Self, String> {
        let base = Url::parse(base_url).map_err(|e| format!("base_url {base_url:?}: {e}"))?;
        let client = reqwest::Client::builder()
            .timeout(call.timeout())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(XApiV2 {
            client,
            base,
            token,
            window: Mutex::new(None),
        })
    }

    fn note_window(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(remaining), Some(reset)) = (
            number("x-rate-limit-remaining"),
            number("x-rate-limit-reset"),
        ) {
            let reset = UNIX_EPOCH + Duration::from_secs(reset);
            *self.window.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Window { remaining, reset });
        }
    }
}

/// The parts of an answer besides the page itself.
#[derive(Deserialize, Default)]
struct Extras {
    #[serde(default)]
    meta: Meta,
    #[serde(default)]
    errors: Vec<Problem>,
}

#[derive(Deserialize, Default)]
struct Meta {
    next_token: Option<String>,
}

#[derive(Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: Option<String>,
    resource_type: Option<String>,
    title: Option<String>,
}

#[async_trait]
impl Connector for XApiV2 {
    async fn page(
        &self,
        user: UserId,
        cursor: Option<&str>,
    ) -> Result<UpstreamPage, UpstreamError> {
        if let Some(wait) = self.blocked_for() {
            return Err(UpstreamError::RateLimited {
                retry_after: Some(wait),
            });
        }
        let mut url = self
            .base
            .join(&format!("2/users/{user}/tweets"))
            .map_err(|e| UpstreamError::Refused(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(QUERY);
        if let Some(cursor) = cursor {
            url.query_pairs_mut()
                .append_pair("pagination_token", cursor);
        }
        let response = self
            .client
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(transport(e)))?;
        self.note_window(response.headers());
        let status = response.status();
        if status != StatusCode::OK {
            return Err(status_error(
                status,
                self.blocked_for()
                    .or_else(|| retry_after(response.headers())),
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(transport(e)))?;
        let page: Page =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let extras: Extras =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        if page.data.is_empty() && extras.errors.iter().any(Problem::is_user_not_found) {
            return Err(UpstreamError::NotFound);
        }
        let ids = || {
            page.data
                .iter()
                .filter_map(|t| t.id.parse::<TweetId>().ok())
        };
        let (newest, reached) = (ids().max(), ids().min());
        let mut tweets = Vec::new();
        for tweet in map_page(&page) {
            // A post that cannot be mapped (an expansion missing) is left out, not the page.
            let record = tweet
                .and_then(|t| serde_json::to_string(&t).map_err(|e| e.to_string()))
                .and_then(|json| TweetRecord::from_json_string(json).map_err(|e| e.to_string()));
            match record {
                Ok(record) if record.has_media && record.user_id == user => tweets.push(record),
                Ok(_) => {}
                Err(reason) => tracing::warn!(%user, %reason, "an X API v2 post left out"),
            }
        }
        tweets.sort_by_key(|t| std::cmp::Reverse(t.tweet_id));
        Ok(UpstreamPage {
            tweets,
            newest,
            reached,
            next: extras.meta.next_token,
        })
    }

    fn blocked_for(&self) -> Option<Duration> {
        let window = (*self.window.lock().unwrap_or_else(|e| e.into_inner()))?;
        if window.remaining > 0 {
            return None;
        }
        window.reset.duration_since(SystemTime::now()).ok()
    }
}

impl Problem {
    fn is_user_not_found(&self) -> bool {
        let not_found = self
            .kind
            .as_deref()
            .is_some_and(|k| k.ends_with("/resource-not-found"))
            || self.title.as_deref() == Some("Not Found Error");
        not_found && self.resource_type.as_deref().is_none_or(|r| r == "user")
    }
}

/// A transport error's message, without the URL (which holds no secret, but is long).
pub(crate) fn transport(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    format!("{what}: {}", e.without_url())
}

/// `Retry-After` in seconds.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}
