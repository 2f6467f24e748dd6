//! A relay: any server that speaks this API's contract (the original service, or another
//! xgate), at a base URL, with the headers its operator requires. Its continuation tokens are
//! kept behind xgate's own and never shown to clients.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use xgate_model::{TweetRecord, UserId};

use crate::config::{CallConfig, Secret};
use crate::x_api_v2::{retry_after, transport};
use crate::{Connector, UpstreamError, UpstreamPage, status_error};

/// Results a call asks for: the contract's maximum.
const PAGE: u32 = 20;

pub struct Relay {
    client: reqwest::Client,
    first: Url,
    next: Url,
}

impl Relay {
    pub fn new(
        base_url: &str,
        headers: &BTreeMap<String, Secret>,
        call: &CallConfig,
    ) -> Result<Self, String> {
        let mut base = Url::parse(base_url).map_err(|e| format!("base_url {base_url:?}: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let mut defaults = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| format!("relay header name {name:?}: {e}"))?;
            let mut value = HeaderValue::try_from(value.expose())
                .map_err(|_| format!("relay header {name}: not a valid header value"))?;
            value.set_sensitive(true);
            defaults.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(call.timeout())
            .default_headers(defaults)
            .build()
            .map_err(|e| e.to_string())?;
        let join = |path: &str| base.join(path).map_err(|e| e.to_string());
        Ok(Relay {
            client,
            first: join("user/medias")?,
            next: join("user/medias/continuation")?,
        })
    }
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<Box<RawValue>>,
    continuation_token: Option<String>,
}

#[async_trait]
impl Connector for Relay {
    async fn page(
        &self,
        user: UserId,
        cursor: Option<&str>,
    ) -> Result<UpstreamPage, UpstreamError> {
        let request = match cursor {
            None => self
                .client
                .post(self.first.clone())
                .json(&json!({"user_id": user.to_string(), "limit": PAGE})),
            Some(token) => self.client.post(self.next.clone()).json(&json!({
                "user_id": user.to_string(),
                "continuation_token": token,
                "limit": PAGE,
            })),
        };
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(transport(e)))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(status_error(status, retry_after(response.headers())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unavailable(transport(e)))?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let mut tweets = Vec::with_capacity(answer.results.len());
        for (at, tweet) in answer.results.iter().enumerate() {
            let record = TweetRecord::from_json(tweet.get())
                .map_err(|e| UpstreamError::Malformed(format!("results[{at}]: {e}")))?;
            tweets.push(record);
        }
        // The contract's pages are newest first; a relay that breaks that is not trusted.
        if tweets.windows(2).any(|w| w[0].tweet_id <= w[1].tweet_id) {
            return Err(UpstreamError::Malformed(
                "results are not newest first".into(),
            ));
        }
        Ok(UpstreamPage {
            newest: tweets.first().map(|t| t.tweet_id),
            reached: tweets.last().map(|t| t.tweet_id),
            tweets: tweets.into_iter().filter(|t| t.has_media).collect(),
            next: answer.continuation_token,
        })
    }
}
