//! The HTTP API of xgate, as a library: build an [`AppState`], then [`router`].

pub mod billing;
mod buffers;
pub mod error;
mod health;
pub mod mcp;
mod medias;
pub mod openapi;
mod pages;
pub mod params;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use rand::RngCore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use xgate_model::wire::{DEFAULT_LIMIT, DEFAULT_MAX_LIMIT};
use xgate_store::{Store, StoreResult};
use xgate_upstream::Live;
use xgate_upstream::metrics::Metrics;

pub use billing::{Billing, BillingConfig};
pub use error::ApiError;
use token::{SECRET_LEN, TokenCodec};

/// The setting under which the store keeps the continuation-token secret.
const TOKEN_SECRET_SETTING: &str = "continuation_token_secret";

/// What an operator can tune.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Page size when a request names none.
    pub default_limit: u32,
    /// The largest page size a request may ask for.
    pub max_limit: u32,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Bytes of rendered pages kept in memory to answer again without reading the store (0: none).
    /// Only stores that can tell when their tweets changed get any (see `pages`).
    pub page_cache_bytes: usize,
}

/// The default size of the cache of rendered pages: about 1,300 pages of ten tweets.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            default_limit: DEFAULT_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            body_limit: 64 * 1024,
            page_cache_bytes: DEFAULT_PAGE_CACHE_BYTES,
        }
    }
}

/// Everything a request handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    tokens: TokenCodec,
    config: ServerConfig,
    billing: Option<Billing>,
    live: Option<Arc<Live>>,
    metrics: Arc<Metrics>,
    pages: Option<pages::PageCache>,
}

impl AppState {
    /// An open server over `store`: no API keys, nothing charged.
    pub async fn new(store: Arc<dyn Store>, config: ServerConfig) -> StoreResult<Self> {
        Self::build(store, config, None).await
    }

    /// A paid server: every data endpoint needs a key and is charged through `billing`.
    pub async fn metered(
        store: Arc<dyn Store>,
        config: ServerConfig,
        billing: Billing,
    ) -> StoreResult<Self> {
        Self::build(store, config, Some(billing)).await
    }

    /// The token secret is made on first start and kept in the store, so tokens stay valid
    /// across restarts and across nodes sharing the store.
    async fn build(
        store: Arc<dyn Store>,
        config: ServerConfig,
        billing: Option<Billing>,
    ) -> StoreResult<Self> {
        let mut fresh = vec![0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut fresh);
        let secret = store.setting_or_insert(TOKEN_SECRET_SETTING, fresh).await?;
        let metrics = Arc::new(Metrics::default());
        let pages = pages::PageCache::new(config.page_cache_bytes, &metrics);
        if pages.is_some() {
            // Whatever the store does to follow its changes starts now, not in the first request.
            store.pages_version();
        }
        Ok(AppState(Arc::new(Inner {
            pages,
            store,
            tokens: TokenCodec::new(&secret),
            config,
            billing,
            live: None,
            metrics,
        })))
    }

    /// Serves live data: `live` fills the store from its upstreams before each page is read.
    /// Call it before the state is shared.
    pub fn with_live(mut self, live: Arc<Live>) -> Self {
        let inner =
            Arc::get_mut(&mut self.0).expect("with_live is called before the state is shared");
        inner.metrics = live.metrics_handle();
        if let Some(pages) = &mut inner.pages {
            pages.count_in(&inner.metrics);
        }
        inner.live = Some(live);
        self
    }

    pub fn live(&self) -> Option<&Live> {
        self.0.live.as_deref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The cache of rendered pages, when there is one.
    fn pages(&self) -> Option<&pages::PageCache> {
        self.0.pages.as_ref()
    }

    pub fn store(&self) -> &dyn Store {
        &*self.0.store
    }

    pub fn tokens(&self) -> &TokenCodec {
        &self.0.tokens
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    /// Billing, on a paid server.
    pub fn billing(&self) -> Option<&Billing> {
        self.0.billing.as_ref()
    }
}

/// The API reference page: it renders `/openapi.json` in the browser, with nothing fetched from
/// elsewhere.
const DOCS_PAGE: &str = include_str!("docs.html");

const HOME_PAGE: &str = concat!(
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
    "<title>xgate</title></head><body style=\"font-family: system-ui, sans-serif; margin: 40px\">",
    "<h1>xgate</h1><p>X user's media API.</p><ul>",
    "<li><a href=\"/docs\">API reference</a> (interactive)</li>",
    "<li><a href=\"/openapi.json\">OpenAPI document</a></li>",
    "<li><code>/mcp</code>: Model Context Protocol endpoint for AI agents</li>",
    "<li><a href=\"/healthz\">Health</a></li>",
    "</ul></body></html>"
);

fn html(page: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

/// The answer to a method a path does not take.
async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().body_limit;
    let (data, data_doc) = OpenApiRouter::new()
        .routes(routes!(medias::get_medias, medias::post_medias))
        .routes(routes!(
            medias::get_medias_continuation,
            medias::post_medias_continuation
        ))
        .split_for_parts();
    // The layers every route has, applied in one call: each `layer` call wraps every route in a
    // boxed service of its own, and every box is cloned and called through for every request. The
    // data routes take them in the same call as their metering; their 405 takes them without it
    // (a wrong method is a routing error, answered before any key is asked for). The data routes
    // read their bodies within the limit themselves (`params::BodyPage`), without the layer that
    // tells axum's extractors the limit.
    let common = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a request handler panicked".into()).into_response()
        }));
    let outer = common.clone().layer(DefaultBodyLimit::max(body_limit));
    let meter = axum::middleware::from_fn_with_state(state.clone(), billing::middleware::meter);
    let served_data = data
        .clone()
        .route_layer(common.clone().layer(meter.clone()))
        .method_not_allowed_fallback(method_not_allowed.layer(common));
    let data = data.layer(meter);
    let (account, account_doc) = OpenApiRouter::new()
        .routes(routes!(billing::routes::credits))
        .routes(routes!(billing::routes::usage))
        .split_for_parts();
    let account = account.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        billing::middleware::free,
    ));
    let (rest, mut doc) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .split_for_parts();
    doc.merge(data_doc);
    doc.merge(account_doc);
    let doc = openapi::finish(doc, state.config(), state.billing().is_some());
    let doc_json = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises");
    let doc_value = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
    // MCP tool calls go through the data routes, middleware and all.
    let mcp = Router::new()
        .route(
            "/mcp",
            axum::routing::post(mcp::post)
                .get(mcp::not_offered)
                .delete(mcp::not_offered),
        )
        .with_state(mcp::Mcp::new(
            data.clone().with_state(state.clone()),
            &doc_value,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            billing::middleware::free,
        ));
    rest.merge(account)
        .route("/metrics", get(health::metrics))
        .route("/docs", get(|| async { html(DOCS_PAGE) }))
        .route("/", get(|| async { html(HOME_PAGE) }))
        .route_service("/mcp", mcp)
        .route(
            "/openapi.json",
            get(move || async move { ([(CONTENT_TYPE, "application/json")], doc_json.clone()) }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(outer)
        .merge(served_data)
        .with_state(state)
}
