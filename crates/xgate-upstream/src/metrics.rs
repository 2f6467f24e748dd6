//! Counters for `/metrics`, in the Prometheus / OpenMetrics text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    upstream_calls: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    page_cache: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let upstream_calls = Family::<Labels, Counter>::default();
        registry.register(
            "xgate_upstream_calls",
            "Calls to upstreams, by upstream and outcome (ok, not_found, rate_limited, unavailable, malformed, refused, skipped: not made, the breaker or the rate-limit window was closed)",
            upstream_calls.clone(),
        );
        let cache = Family::<Labels, Counter>::default();
        registry.register(
            "xgate_cache_requests",
            "Page requests by endpoint and how the read-through cache answered (hit, miss, stale, local: the user is only in the store)",
            cache.clone(),
        );
        let page_cache = Family::<Labels, Counter>::default();
        registry.register(
            "xgate_page_cache_requests",
            "Page requests by how the cache of rendered pages answered (hit: without reading the store; miss: read from it)",
            page_cache.clone(),
        );
        Metrics {
            registry,
            upstream_calls,
            cache,
            page_cache,
        }
    }
}

impl Metrics {
    pub fn upstream_call(&self, upstream: &str, outcome: &'static str) {
        self.upstream_calls
            .get_or_create(&vec![
                ("upstream", upstream.to_owned()),
                ("outcome", outcome.into()),
            ])
            .inc();
    }

    pub fn cache(&self, endpoint: &str, result: &'static str) {
        self.cache
            .get_or_create(&vec![
                ("endpoint", endpoint.to_owned()),
                ("result", result.into()),
            ])
            .inc();
    }

    /// The counters of the cache of rendered pages: hits, then misses. Kept by the cache, so that
    /// counting costs no lookup here.
    pub fn page_cache_counters(&self) -> (Counter, Counter) {
        let counter = |result: &str| {
            self.page_cache
                .get_or_create(&vec![("result", result.to_owned())])
                .clone()
        };
        (counter("hit"), counter("miss"))
    }

    /// Calls made to `upstream` with `outcome` so far.
    pub fn upstream_calls(&self, upstream: &str, outcome: &'static str) -> u64 {
        self.upstream_calls
            .get_or_create(&vec![
                ("upstream", upstream.to_owned()),
                ("outcome", outcome.into()),
            ])
            .get()
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
