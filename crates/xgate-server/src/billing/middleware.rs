//! The metering middleware around every data endpoint.
//!
//! In order: a request id; the key (401); the account's rate limit (429); an `Idempotency-Key`
//! replay (or 409 while the first is running, 422 if reused for another request); the credits
//! reserved (402); the handler; then, on a 2xx, the charge committed before the response leaves,
//! or on anything else the reservation released. Every answer after the key check carries
//! `X-Request-Id`, `X-Credits-Cost` and `X-Credits-Remaining`, and is in the account's request log.

use std::borrow::Cow;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use xgate_billing::prices::billed_endpoint;
use xgate_billing::rate_limit::{Decision, Window};
use xgate_billing::{Refusal, clock};
use xgate_model::wire::LocItem;
use xgate_store::accounts::{MintedId, Recorded, RequestId as Id, RequestRecord, StoredResponse};

use super::{Billing, BillingHeaders, Caller, IDEMPOTENCY_KEY, InFlight};
use crate::AppState;
use crate::error::{ApiError, issue};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const CREDITS_COST: HeaderName = HeaderName::from_static("x-credits-cost");
const CREDITS_REMAINING: HeaderName = HeaderName::from_static("x-credits-remaining");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long a response is replayed for its `Idempotency-Key`.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Meters one request to a data endpoint. Without billing, passes it through.
pub async fn meter(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(billing) = state.billing() else {
        return next.run(req).await;
    };
    let started = Instant::now();
    let request_id = RequestId::new();
    let found = BillingHeaders::find(req.headers());
    let caller = match billing.authenticate_found(&found, started).await {
        Ok(caller) => caller,
        Err(e) => return with_request_id(e.into_response(), request_id),
    };
    // Read here, with the key, and answered after the rate limit (a malformed one is a 422 then).
    let idempotency = idempotency_key(found.idempotency_key);
    let mut meta = Meta {
        billing,
        body_limit: state.config().body_limit,
        caller,
        request_id,
        endpoint: endpoint(&req),
        started,
        window: None,
    };
    match metered(&mut meta, req, idempotency, next).await {
        Ok(done) => done,
        Err(e) => {
            let status = e.status();
            let response = e.into_response();
            meta.log(status);
            meta.finish(response, 0, None).await
        }
    }
}

/// Wraps the free endpoints of a key holder (`/v1/*`): the key is checked once here (the handler
/// finds the caller in the request's extensions), nothing is charged or logged, and the answer
/// carries the same `X-Request-Id`, `X-Credits-Cost` (0) and `X-Credits-Remaining` headers.
pub async fn free(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(billing) = state.billing() else {
        return next.run(req).await;
    };
    let request_id = RequestId::new();
    let caller = match billing.authenticate(req.headers(), Instant::now()).await {
        Ok(caller) => caller,
        Err(e) => return with_request_id(e.into_response(), request_id),
    };
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    let remaining = billing
        .meter()
        .remaining(caller.auth.account_id)
        .await
        .unwrap_or(0);
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id.header());
    headers.insert(CREDITS_COST, credits(0));
    headers.insert(CREDITS_REMAINING, credits(remaining.max(0)));
    response
}

/// What the steps of one metered request share.
struct Meta<'a> {
    billing: &'a Billing,
    body_limit: usize,
    caller: Caller,
    request_id: RequestId,
    endpoint: Cow<'static, str>,
    started: Instant,
    window: Option<Window>,
}

impl Meta<'_> {
    fn record(&self, status: StatusCode, cost: i64) -> RequestRecord {
        RequestRecord {
            request_id: Id::Minted(self.request_id.0),
            account: self.caller.auth.account_id,
            key: self.caller.auth.key_id,
            at_ms: clock::now_ms(),
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            cost,
            latency_us: i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX),
            idempotency: None,
        }
    }

    /// Logs a request that was not charged.
    fn log(&self, status: StatusCode) {
        self.billing.meter().log(self.record(status, 0));
    }

    /// Adds the billing headers; `remaining` is looked up when not known.
    async fn finish(&self, mut response: Response, cost: i64, remaining: Option<i64>) -> Response {
        let remaining = match remaining {
            Some(r) => r,
            None => self
                .billing
                .meter()
                .remaining(self.caller.auth.account_id)
                .await
                .unwrap_or(0),
        };
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID, self.request_id.header());
        headers.insert(CREDITS_COST, credits(cost));
        headers.insert(CREDITS_REMAINING, credits(remaining.max(0)));
        if let Some(window) = self.window {
            rate_limit_headers(headers, window);
        }
        response
    }
}

/// `idempotency`: the request's `Idempotency-Key` header, as [`idempotency_key`] read it.
async fn metered(
    meta: &mut Meta<'_>,
    req: Request,
    idempotency: Result<Option<String>, ApiError>,
    next: Next,
) -> Result<Response, ApiError> {
    let billing = meta.billing;
    let account = meta.caller.auth.account_id;
    match billing
        .limits
        .take(account, meta.caller.auth.rate_limit)
        .await?
    {
        Decision::Unlimited => {}
        Decision::Allowed(window) => meta.window = Some(window),
        Decision::Limited {
            window,
            retry_after,
        } => {
            meta.window = Some(window);
            return Err(ApiError::RateLimited { retry_after });
        }
    }

    // A request with an `Idempotency-Key` (the few) takes a path of its own, boxed: what it keeps
    // across its waits is then not part of every request's future, which is allocated and moved
    // on each request.
    let (req, idempotency) = match idempotency? {
        None => (req, None),
        Some(key) => match Box::pin(admit_idempotent(meta, req, key)).await? {
            Admitted::Run(req, running) => (req, Some(running)),
            Admitted::Replayed(response) => return Ok(response),
        },
    };

    let cost = billing.prices().cost(&meta.endpoint);
    let reservation = match billing.meter().reserve(account, cost).await {
        Ok(reservation) => reservation,
        Err(Refusal::Insufficient { .. }) => return Err(ApiError::InsufficientCredits),
        Err(Refusal::UnknownAccount) => return Err(ApiError::InvalidApiKey),
        Err(Refusal::Store(e)) => return Err(e.into()),
    };

    let response = next.run(req).await;
    let status = response.status();
    if !status.is_success() {
        drop(reservation);
        meta.log(status);
        return Ok(meta.finish(response, 0, None).await);
    }

    // The charge is made only for a response that exists in full. A body held in memory (its
    // exact size known, as every handler here builds them) is one; any other is read to its end
    // first, so that a body failing midway is not charged. One kept for an `Idempotency-Key` is
    // read in any case.
    let (parts, mut body) = response.into_parts();
    let mut record = meta.record(status, cost);
    if idempotency.is_some() || body.size_hint().exact().is_none() {
        let bytes = Box::pin(to_bytes(body, usize::MAX))
            .await
            .map_err(|e| ApiError::Internal(format!("reading a response body: {e}")))?;
        if let Some(running) = &idempotency {
            record.idempotency = Some(Box::new((
                running.key.clone(),
                StoredResponse {
                    request_hash: running.request_hash,
                    status: status.as_u16(),
                    body: bytes.to_vec(),
                    request_id: meta.request_id.as_str().to_owned(),
                    created_ms: record.at_ms,
                },
            )));
        }
        body = Body::from(bytes);
    }
    match reservation.settle(record).await? {
        Recorded::Done {
            balance, free_left, ..
        } => {
            let response = Response::from_parts(parts, body);
            Ok(meta.finish(response, cost, Some(balance + free_left)).await)
        }
        // Another node spent the credits while this request ran: it fails, uncharged.
        Recorded::Insufficient { .. } => Err(ApiError::InsufficientCredits),
        Recorded::Duplicate => Err(ApiError::Internal(format!(
            "request id {} recorded twice",
            meta.request_id.as_str()
        ))),
    }
}

/// A request holding an `Idempotency-Key`, past its replay check.
#[allow(
    clippy::large_enum_variant,
    reason = "made once, on the rare path of a request with an `Idempotency-Key`, and taken apart \
              at once"
)]
enum Admitted<'a> {
    /// First of its key: it runs, holding the key until it ends.
    Run(Request, Running<'a>),
    /// Answered before: the kept response, charged nothing.
    Replayed(Response),
}

/// A running request's `Idempotency-Key` and the hash of what it asked.
struct Running<'a> {
    key: String,
    request_hash: [u8; 32],
    _in_flight: InFlight<'a>,
}

/// Replays the response kept for `key`, or lets the request run while nothing else with that key
/// does (409 otherwise).
async fn admit_idempotent<'a>(
    meta: &Meta<'a>,
    req: Request,
    key: String,
) -> Result<Admitted<'a>, ApiError> {
    let billing = meta.billing;
    let account = meta.caller.auth.account_id;
    let (req, request_hash) = hash_request(req, meta.body_limit).await?;
    let now = clock::now_ms();
    let kept = billing
        .accounts()
        .idempotent_response(account, &key, now - IDEMPOTENCY_WINDOW_MS)
        .await?;
    if let Some(kept) = kept {
        return Ok(Admitted::Replayed(replay(meta, kept, request_hash).await?));
    }
    let in_flight = billing
        .begin_idempotent(account, &key)
        .ok_or(ApiError::IdempotencyInProgress)?;
    Ok(Admitted::Run(
        req,
        Running {
            key,
            request_hash,
            _in_flight: in_flight,
        },
    ))
}

/// The `Idempotency-Key` header's key, if the header is present and well formed.
fn idempotency_key(header: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::Validation(vec![issue::bad_idempotency_key(
            idempotency_key_loc(),
        )])),
    }
}

/// Where an error about the `Idempotency-Key` header points, in the contract's `loc`.
fn idempotency_key_loc() -> Vec<LocItem> {
    vec![
        LocItem::from("header"),
        LocItem::from(IDEMPOTENCY_KEY.as_str()),
    ]
}

/// Reads the body to hash the request (method, path, query, body), and puts it back.
async fn hash_request(req: Request, limit: usize) -> Result<(Request, [u8; 32]), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update(b" ");
    hasher.update(parts.uri.path());
    hasher.update(b"?");
    hasher.update(parts.uri.query().unwrap_or(""));
    hasher.update(b"\n");
    if parts.method != Method::GET {
        hasher.update(&bytes);
    }
    let hash = hasher.finalize().into();
    Ok((Request::from_parts(parts, Body::from(bytes)), hash))
}

/// Answers with a kept response: the same status and body, charged nothing.
async fn replay(
    meta: &Meta<'_>,
    kept: StoredResponse,
    hash: [u8; 32],
) -> Result<Response, ApiError> {
    if kept.request_hash != hash {
        return Err(ApiError::Validation(vec![issue::idempotency_key_reused(
            idempotency_key_loc(),
        )]));
    }
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        kept.body,
    )
        .into_response();
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, header(&kept.request_id));
    meta.log(status);
    Ok(meta.finish(response, 0, None).await)
}

/// A request's id: minted by this process (a UUIDv7, unique by construction, so the ledger
/// records it without looking it up), with its text kept on the stack for the headers.
#[derive(Clone, Copy)]
struct RequestId(MintedId, [u8; uuid::fmt::Hyphenated::LENGTH]);

impl RequestId {
    fn new() -> RequestId {
        let id = MintedId::new();
        RequestId(id, id.hyphenated())
    }

    fn as_str(&self) -> &str {
        // Always ASCII: a hyphenated UUID is hex digits and hyphens.
        std::str::from_utf8(&self.1).unwrap_or_default()
    }

    fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.1).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

/// The endpoint as prices and the ledger name it, `METHOD /path`: borrowed for a billed one.
fn endpoint(req: &Request) -> Cow<'static, str> {
    let (method, path) = (req.method().as_str(), req.uri().path());
    match billed_endpoint(method, path) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("{method} {path}")),
    }
}

fn with_request_id(mut response: Response, request_id: RequestId) -> Response {
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.header());
    response
}

/// A count of credits as a header value: the prices' usual 0 and 1 without an allocation.
fn credits(count: i64) -> HeaderValue {
    match count {
        0 => HeaderValue::from_static("0"),
        1 => HeaderValue::from_static("1"),
        _ => HeaderValue::from(count),
    }
}

fn header(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `RateLimit-Policy` and `RateLimit`, as draft-ietf-httpapi-ratelimit-headers writes them.
fn rate_limit_headers(headers: &mut HeaderMap, window: Window) {
    let policy = format!("\"per-minute\";q={};w=60", window.limit);
    let state = format!(
        "\"per-minute\";r={};t={}",
        window.remaining, window.reset_seconds
    );
    headers.insert(RATELIMIT_POLICY, header(&policy));
    headers.insert(RATELIMIT, header(&state));
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use axum::Router;
    use axum::routing::post;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use xgate_billing::keys;
    use xgate_store::accounts::AccountStore;
    use xgate_store_sqlite::SqliteStore;

    use super::*;
    use crate::{BillingConfig, ServerConfig};

    /// A body of unknown length that sends its first bytes and then fails.
    struct BreaksOff {
        sent: bool,
    }

    impl HttpBody for BreaksOff {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            let frame = if std::mem::replace(&mut self.sent, true) {
                Err(std::io::Error::other("the page broke off"))
            } else {
                Ok(Frame::data(Bytes::from_static(b"{\"results\":[")))
            };
            Poll::Ready(Some(frame))
        }
    }

    #[tokio::test]
    async fn a_body_that_fails_midway_is_not_charged_and_a_whole_one_passes_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("m.db")).unwrap());
        let now = clock::now_ms();
        let account = store.ensure_account("a", now).await.unwrap();
        store
            .add_credits(account.id, 10, "test", now)
            .await
            .unwrap();
        let (key, stored) = keys::generate(None);
        store.insert_key(account.id, stored, now).await.unwrap();
        let billing = Billing::start(store.clone(), BillingConfig::default());
        let state = AppState::metered(store.clone(), ServerConfig::default(), billing)
            .await
            .unwrap();
        // Two billed endpoints: one whose 200 breaks off, one with a body held in memory.
        let app = Router::new()
            .route(
                "/user/medias/continuation",
                post(|| async { Body::new(BreaksOff { sent: false }) }),
            )
            .route("/user/medias", post(|| async { "{\"results\":[]}" }))
            .layer(axum::middleware::from_fn_with_state(state, meter));
        let call = |uri: &'static str| {
            let request = Request::post(uri)
                .header("x-api-key", &key)
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(request)
        };

        let broken = call("/user/medias/continuation").await.unwrap();
        assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(broken.headers()[CREDITS_COST], "0");
        assert_eq!(broken.headers()[CREDITS_REMAINING], "10");

        let whole = call("/user/medias").await.unwrap();
        assert_eq!(whole.status(), StatusCode::OK);
        assert_eq!(whole.headers()[CREDITS_COST], "1");
        assert_eq!(whole.headers()[CREDITS_REMAINING], "9");
        let body = whole.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"results\":[]}");

        let audit = store.audit(account.id).await.unwrap();
        assert_eq!((audit.paid, audit.balance), (1, 9));
        assert!(audit.balanced(), "{audit:?}");
    }

    #[test]
    fn credit_counts_read_as_numbers() {
        for count in [0, 1, 2, 9, 10, 999, i64::MAX] {
            assert_eq!(credits(count).to_str().unwrap(), count.to_string());
        }
    }

    #[test]
    fn a_request_id_is_a_lowercase_uuid_v7_and_its_header_says_the_same() {
        let id = RequestId::new();
        let parsed = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.hyphenated().to_string(), id.as_str());
        assert_eq!(id.header().to_str().unwrap(), id.as_str());
        assert_ne!(RequestId::new().as_str(), id.as_str());
    }
}
