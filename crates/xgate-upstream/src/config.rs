//! Where live data comes from: a TOML file (`xgate serve --config FILE`) and/or environment
//! variables. Secrets (bearer tokens, relay headers) are kept in [`Secret`], whose `Debug` never
//! shows them, so no log line can.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A value that must not be logged.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole configuration of live data.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    #[serde(default)]
    pub cache: CacheConfig,
    /// Upstreams in priority order: the first that answers serves.
    #[serde(default, rename = "upstreams")]
    pub upstreams: Vec<UpstreamConfig>,
}

/// How long what was fetched stays good.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// A user's first page is fresh this long (seconds; default 15 minutes).
    pub first_page_ttl_secs: u64,
    /// Older pages are kept this long (seconds; default 24 hours): after it, paging deep re-walks
    /// the timeline upstream.
    pub deep_ttl_secs: u64,
    /// A user the upstream does not know is remembered as unknown this long (seconds; default
    /// 5 minutes).
    pub negative_ttl_secs: u64,
    /// At most this many upstream calls for one client request (default 40: 4,000 posts of X API
    /// v2, past its 3,200-post reach).
    pub max_calls_per_request: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            first_page_ttl_secs: 15 * 60,
            deep_ttl_secs: 24 * 3600,
            negative_ttl_secs: 5 * 60,
            max_calls_per_request: 40,
        }
    }
}

/// How an upstream is called, whatever it is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct CallConfig {
    /// Each HTTP call gives up after this long (milliseconds; default 10 s).
    pub timeout_ms: u64,
    /// Retries after a 5xx answer or a transport error (never after a 4xx), with backoff
    /// doubling from `backoff_ms` (defaults: 2 retries, 100 ms).
    pub retries: u32,
    pub backoff_ms: u64,
    /// Failed calls in a row that open the circuit breaker (default 3), and how long it stays
    /// open before one trial call (seconds; default 30).
    pub breaker_failures: u32,
    pub breaker_cooldown_secs: u64,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            timeout_ms: 10_000,
            retries: 2,
            backoff_ms: 100,
            breaker_failures: 3,
            breaker_cooldown_secs: 30,
        }
    }
}

impl CallConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// One upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "upstream")]
pub enum UpstreamConfig {
    /// X API v2, `GET /2/users/:id/tweets`.
    #[serde(rename = "x-api-v2")]
    XApiV2 {
        /// A name for logs, metrics and `/healthz` (default: the kind).
        name: Option<String>,
        #[serde(default = "default_x_api_base")]
        base_url: String,
        /// The app's bearer token; when absent, `XGATE_X_BEARER_TOKEN`.
        bearer_token: Option<Secret>,
        #[serde(flatten)]
        call: CallConfig,
    },
    /// A server speaking this API's contract (the original service, or another xgate).
    #[serde(rename = "relay")]
    Relay {
        name: Option<String>,
        base_url: String,
        /// Headers sent with every call (an API key, say).
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        #[serde(flatten)]
        call: CallConfig,
    },
}

impl UpstreamConfig {
    pub fn name(&self) -> String {
        match self {
            UpstreamConfig::XApiV2 { name, .. } => {
                name.clone().unwrap_or_else(|| "x-api-v2".into())
            }
            UpstreamConfig::Relay { name, .. } => name.clone().unwrap_or_else(|| "relay".into()),
        }
    }
}

fn default_x_api_base() -> String {
    "https://api.x.com".into()
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl LiveConfig {
    /// The configuration from `file` (when given) and the environment (`env` looks a variable
    /// up). `None` when no upstream is configured: xgate then serves its store only.
    ///
    /// The file's upstreams come first; without any, `XGATE_UPSTREAM=x-api-v2` (with
    /// `XGATE_X_API_BASE_URL`, `XGATE_X_BEARER_TOKEN`) or `XGATE_UPSTREAM=relay` (with
    /// `XGATE_RELAY_BASE_URL`, `XGATE_RELAY_HEADERS`: `Name: value` pairs separated by `;`)
    /// makes one. A bearer token missing from the file is taken from `XGATE_X_BEARER_TOKEN`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LiveConfig>, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
                toml::from_str::<LiveConfig>(&text)
                    .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => LiveConfig::default(),
        };
        if config.upstreams.is_empty() {
            match env("XGATE_UPSTREAM").as_deref().map(str::trim) {
                None | Some("") => {}
                Some("x-api-v2") => config.upstreams.push(UpstreamConfig::XApiV2 {
                    name: None,
                    base_url: env("XGATE_X_API_BASE_URL").unwrap_or_else(default_x_api_base),
                    bearer_token: None,
                    call: CallConfig::default(),
                }),
                Some("relay") => {
                    let base_url = env("XGATE_RELAY_BASE_URL").ok_or_else(|| {
                        ConfigError("XGATE_UPSTREAM=relay needs XGATE_RELAY_BASE_URL".into())
                    })?;
                    let headers = parse_headers(&env("XGATE_RELAY_HEADERS").unwrap_or_default())?;
                    config.upstreams.push(UpstreamConfig::Relay {
                        name: None,
                        base_url,
                        headers,
                        call: CallConfig::default(),
                    });
                }
                Some(other) => {
                    return Err(ConfigError(format!(
                        "XGATE_UPSTREAM={other:?}: expected x-api-v2 or relay"
                    )));
                }
            }
        }
        for upstream in &mut config.upstreams {
            if let UpstreamConfig::XApiV2 { bearer_token, .. } = upstream {
                if bearer_token.is_none() {
                    *bearer_token = env("XGATE_X_BEARER_TOKEN").map(Secret);
                }
                if bearer_token.as_ref().is_none_or(|t| t.0.is_empty()) {
                    return Err(ConfigError(
                        "the x-api-v2 upstream needs a bearer token (bearer_token, or XGATE_X_BEARER_TOKEN)"
                            .into(),
                    ));
                }
            }
        }
        Ok((!config.upstreams.is_empty()).then_some(config))
    }
}

/// `Name: value; Other: value` as headers.
fn parse_headers(text: &str) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut headers = BTreeMap::new();
    for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once(':').ok_or_else(|| {
            // The value may be a secret: name the pair by its position, not its text.
            ConfigError(format!(
                "XGATE_RELAY_HEADERS: pair {} has no `:` (expected `Name: value; ...`)",
                headers.len() + 1
            ))
        })?;
        headers.insert(name.trim().to_owned(), Secret(value.trim().to_owned()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |key| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_upstream_means_the_store_alone() {
        assert_eq!(LiveConfig::load(None, env(&[])).unwrap(), None);
    }

    #[test]
    fn environment_variables_alone_make_an_upstream() {
        let config = LiveConfig::load(
            None,
            env(&[
                ("XGATE_UPSTREAM", "x-api-v2"),
                ("XGATE_X_BEARER_TOKEN", "AAAA-secret"),
            ]),
        )
        .unwrap()
        .unwrap();
        let UpstreamConfig::XApiV2 {
            base_url,
            bearer_token,
            ..
        } = &config.upstreams[0]
        else {
            panic!("not x-api-v2: {config:?}");
        };
        assert_eq!(base_url, "https://api.x.com");
        assert_eq!(bearer_token.as_ref().unwrap().expose(), "AAAA-secret");
        assert!(!format!("{config:?}").contains("AAAA-secret"));

        let relay = LiveConfig::load(
            None,
            env(&[
                ("XGATE_UPSTREAM", "relay"),
                ("XGATE_RELAY_BASE_URL", "http://127.0.0.1:9"),
                (
                    "XGATE_RELAY_HEADERS",
                    "X-RapidAPI-Key: k3y; X-RapidAPI-Host: h",
                ),
            ]),
        )
        .unwrap()
        .unwrap();
        let UpstreamConfig::Relay { headers, .. } = &relay.upstreams[0] else {
            panic!("not a relay");
        };
        assert_eq!(headers["X-RapidAPI-Key"].expose(), "k3y");
        assert_eq!(headers["X-RapidAPI-Host"].expose(), "h");
        assert!(!format!("{relay:?}").contains("k3y"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason_and_no_secret() {
        let err = LiveConfig::load(None, env(&[("XGATE_UPSTREAM", "x-api-v2")])).unwrap_err();
        assert!(err.to_string().contains("bearer token"), "{err}");
        let err = LiveConfig::load(None, env(&[("XGATE_UPSTREAM", "ftp")])).unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");
        let err = LiveConfig::load(
            None,
            env(&[
                ("XGATE_UPSTREAM", "relay"),
                ("XGATE_RELAY_BASE_URL", "http://x"),
                ("XGATE_RELAY_HEADERS", "secret-without-colon"),
            ]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("secret-without-colon"), "{err}");
    }

    #[test]
    fn a_file_lists_upstreams_in_priority_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xgate.toml");
        std::fs::write(
            &path,
            r#"
            [cache]
            first_page_ttl_secs = 60

            [[upstreams]]
            upstream = "relay"
            name = "primary"
            base_url = "https://relay.example"
            headers = { "X-Api-Key" = "abc" }
            timeout_ms = 2000

            [[upstreams]]
            upstream = "x-api-v2"
            retries = 0
            "#,
        )
        .unwrap();
        let config = LiveConfig::load(Some(&path), env(&[("XGATE_X_BEARER_TOKEN", "t")]))
            .unwrap()
            .unwrap();
        assert_eq!(config.cache.first_page_ttl_secs, 60);
        assert_eq!(config.cache.negative_ttl_secs, 300);
        let names: Vec<String> = config.upstreams.iter().map(UpstreamConfig::name).collect();
        assert_eq!(names, ["primary", "x-api-v2"]);
        let UpstreamConfig::Relay { call, .. } = &config.upstreams[0] else {
            panic!()
        };
        assert_eq!((call.timeout_ms, call.retries), (2000, 2));

        std::fs::write(&path, "[[upstreams]]\nupstream = \"relay\"\nbase = 1\n").unwrap();
        let err = LiveConfig::load(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("xgate.toml"), "{err}");
    }
}
