//! What each endpoint costs, in credits (1 credit = $0.01).

use std::collections::BTreeMap;

/// The price list: a default for every billed endpoint, and overrides by `METHOD /path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    default: i64,
    overrides: BTreeMap<String, i64>,
}

/// The billed endpoints, as `METHOD /path`.
pub const BILLED_ENDPOINTS: &[&str] = &[
    "GET /user/medias",
    "POST /user/medias",
    "GET /user/medias/continuation",
    "POST /user/medias/continuation",
];

/// The billed endpoint a request to `path` with `method` is, as it is written in
/// [`BILLED_ENDPOINTS`]; `None` for any other.
pub fn billed_endpoint(method: &str, path: &str) -> Option<&'static str> {
    BILLED_ENDPOINTS
        .iter()
        .find(|e| {
            e.strip_prefix(method)
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|rest| rest == path)
        })
        .copied()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("expected ENDPOINT=CREDITS, e.g. 'POST /user/medias/continuation=2', got {0:?}")]
    Syntax(String),
    #[error("{0:?} is not a billed endpoint; one of: {list}", list = BILLED_ENDPOINTS.join(", "))]
    UnknownEndpoint(String),
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            default: 1,
            overrides: BTreeMap::new(),
        }
    }
}

impl Prices {
    /// Parses `METHOD /path=N` overrides (N ≥ 0) over the default price of 1.
    pub fn parse<'a>(overrides: impl IntoIterator<Item = &'a str>) -> Result<Self, PriceError> {
        let mut prices = Prices::default();
        for entry in overrides {
            let (endpoint, credits) = entry
                .rsplit_once('=')
                .ok_or_else(|| PriceError::Syntax(entry.to_owned()))?;
            let endpoint = normalise(endpoint);
            let credits: i64 = credits
                .trim()
                .parse()
                .ok()
                .filter(|c| *c >= 0)
                .ok_or_else(|| PriceError::Syntax(entry.to_owned()))?;
            if !BILLED_ENDPOINTS.contains(&endpoint.as_str()) {
                return Err(PriceError::UnknownEndpoint(endpoint));
            }
            prices.overrides.insert(endpoint, credits);
        }
        Ok(prices)
    }

    /// The cost of one successful request to `endpoint` (`METHOD /path`).
    pub fn cost(&self, endpoint: &str) -> i64 {
        self.overrides
            .get(endpoint)
            .copied()
            .unwrap_or(self.default)
    }

    /// Every billed endpoint with its price.
    pub fn list(&self) -> Vec<(&'static str, i64)> {
        BILLED_ENDPOINTS
            .iter()
            .map(|e| (*e, self.cost(e)))
            .collect()
    }
}

/// `post  /user/medias` → `POST /user/medias`: spacing and the method's case do not matter.
fn normalise(endpoint: &str) -> String {
    let mut parts = endpoint.split_whitespace();
    let method = parts.next().unwrap_or("").to_ascii_uppercase();
    let rest: Vec<&str> = parts.collect();
    format!("{method} {}", rest.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_one_credit_with_overrides() {
        let prices =
            Prices::parse(["post  /user/medias/continuation = 2", "GET /user/medias=0"]).unwrap();
        assert_eq!(prices.cost("POST /user/medias/continuation"), 2);
        assert_eq!(prices.cost("GET /user/medias"), 0);
        assert_eq!(prices.cost("POST /user/medias"), 1);
        assert_eq!(prices.list().len(), 4);
    }

    #[test]
    fn finds_a_billed_endpoint_by_method_and_path() {
        for endpoint in BILLED_ENDPOINTS {
            let (method, path) = endpoint.split_once(' ').unwrap();
            assert_eq!(billed_endpoint(method, path), Some(*endpoint));
        }
        assert_eq!(billed_endpoint("PUT", "/user/medias"), None);
        assert_eq!(billed_endpoint("POST", "/user/medias/"), None);
        assert_eq!(billed_endpoint("POST", "/v1/credits"), None);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            Prices::parse(["POST /user/medias"]),
            Err(PriceError::Syntax(_))
        ));
        assert!(matches!(
            Prices::parse(["POST /user/medias=-1"]),
            Err(PriceError::Syntax(_))
        ));
        assert!(matches!(
            Prices::parse(["POST /nothing=1"]),
            Err(PriceError::UnknownEndpoint(_))
        ));
    }
}
