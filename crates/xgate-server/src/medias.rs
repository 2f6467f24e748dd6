//! The User's Media endpoints: a user's media tweets, newest first, page after page.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use xgate_model::wire::{
    ErrorBody, HttpValidationError, MediasContinuationQuery, MediasContinuationRequest,
    MediasQuery, MediasRequest, MediasResponse,
};
use xgate_upstream::Prepared;

use crate::AppState;
use crate::buffers;
use crate::error::ApiError;
use crate::pages::PageKey;
use crate::params::{BodyPage, PageRequest, QueryPage};

/// The optional `Idempotency-Key` header of every data endpoint.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyKey {
    /// Retrying with the same key within 24 hours replays the first successful response and is
    /// not charged again; the same key with a different request is a 422, and while the first
    /// request with it still runs, a 409. 1 to 255 visible ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$"
    )]
    idempotency_key: Option<String>,
}

/// What every page endpoint may answer (the POST ones also 413). Only documents: handlers
/// answer with `Response` and `ApiError`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum PageResponses {
    #[response(status = 200, description = "Response", headers(
        ("X-Request-Id" = String, description = "This request's id, as in the request log"),
        ("X-Credits-Cost" = i64, description = "Credits charged for this request"),
        ("X-Credits-Remaining" = i64, description = "Credits left after it"),
        ("X-Cache" = String, description = "With live upstreams: hit (cached), miss (fetched now), stale (upstreams failing; the stored copy), local (unknown upstream; the stored copy)"),
    ))]
    Page(MediasResponse),
    #[response(status = 401, description = "No or bad API key")]
    Unauthorized(ErrorBody),
    #[response(status = 402, description = "Not enough credits")]
    PaymentRequired(ErrorBody),
    #[response(status = 404, description = "Unknown user")]
    UserNotFound(ErrorBody),
    #[response(status = 409, description = "The same Idempotency-Key is in use")]
    Conflict(ErrorBody),
    #[response(status = 422, description = "Validation Error")]
    Invalid(HttpValidationError),
    #[response(status = 429, description = "Rate limited; see Retry-After")]
    RateLimited(ErrorBody),
    #[response(
        status = 502,
        description = "The upstream data source answered with an error (not charged)"
    )]
    UpstreamError(ErrorBody),
    #[response(
        status = 503,
        description = "The upstream data source is unavailable and nothing is cached; see Retry-After (not charged)"
    )]
    UpstreamUnavailable(ErrorBody),
}

/// The OpenAPI tag of these endpoints.
pub const TAG: &str = "User";

/// Reads one page plus one tweet of look-ahead: the extra tweet only tells whether another page
/// exists, so the last page carries a null token and no client ever pays for an empty page.
///
/// The response is written around the stored JSON of each tweet, copied once from the store into
/// the body: serving a page parses nothing. A page asked for again is answered from the cache of
/// rendered pages (see `pages`) while the store's tweets stay as they were.
///
/// With live upstreams, the page is first made present in the store (see `xgate_upstream::Live`)
/// and the `X-Cache` header says how: `hit`, `miss`, `stale` or `local`.
pub async fn page(state: &AppState, req: PageRequest) -> Result<Response, ApiError> {
    let prepared = match state.live() {
        Some(live) => {
            let endpoint = match req.after {
                None => "/user/medias",
                Some(_) => "/user/medias/continuation",
            };
            Some(
                live.prepare(req.user, req.after, req.limit, endpoint)
                    .await?,
            )
        }
        None => None,
    };
    // The version is read after the live layer stored what it fetched, and before the page is
    // read: a page kept under it is never older than the store at that version.
    let cache = state.pages().zip(state.store().pages_version());
    let key = PageKey {
        user: req.user,
        after: req.after,
        limit: req.limit,
    };
    if let Some((pages, version)) = cache
        && let Some(body) = pages.get(&key, version)
    {
        return Ok(respond(body, prepared));
    }
    let mut body = buffers::PAGES.take(PREFIX.len() + req.limit * TYPICAL_TWEET + 96);
    body.extend_from_slice(PREFIX);
    let info = state
        .store()
        .media_page_into(req.user, req.after, req.limit, &mut body)
        .await?;
    let known = prepared.as_ref().is_some_and(|p| p.known);
    if info.count == 0 && !known && !state.store().user_exists(req.user).await? {
        return Err(ApiError::UserNotFound);
    }
    body.extend_from_slice(b"],\"continuation_token\":");
    match info.last.filter(|_| info.more) {
        // Tokens are base64url: nothing in them needs escaping.
        Some(last) => {
            body.push(b'"');
            body.extend_from_slice(state.tokens().issue(req.user, last).as_bytes());
            body.push(b'"');
        }
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    if let Some((pages, version)) = cache {
        // A copy of its own size: the buffer goes back to the pool with this response.
        pages.put(key, version, Bytes::copy_from_slice(&body));
    }
    Ok(respond(buffers::PAGES.lend(body), prepared))
}

/// A page's response: its body, and with live upstreams how the store came to hold it.
///
/// Built as it is sent: `([(CONTENT_TYPE, ..)], body).into_response()` would give it a
/// `Content-Type` of `application/octet-stream` first and then replace it, two insertions into its
/// headers where one will do.
fn respond(body: Bytes, prepared: Option<Prepared>) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(prepared) = prepared {
        headers.insert(
            HeaderName::from_static("x-cache"),
            HeaderValue::from_static(prepared.freshness.as_str()),
        );
    }
    response
}

const PREFIX: &[u8] = b"{\"results\":[";
/// A guess at a stored tweet's size, to size the body once.
const TYPICAL_TWEET: usize = 3 * 1024;

/// User's Media
///
/// This endpoint returns the list of a user's medias: the first page of their tweets with photos,
/// videos or GIFs, newest first.
#[utoipa::path(
    get,
    path = "/user/medias",
    operation_id = "User_s_Media_get__user_medias",
    tag = TAG,
    params(MediasQuery, IdempotencyKey),
    security(("api_key" = []), ("bearer" = [])),
    responses(PageResponses)
)]
pub async fn get_medias(
    State(state): State<AppState>,
    QueryPage(req): QueryPage<false>,
) -> Result<Response, ApiError> {
    page(&state, req).await
}

/// User's Media
///
/// This endpoint returns the list of a user's medias: the first page of their tweets with photos,
/// videos or GIFs, newest first.
#[utoipa::path(
    post,
    path = "/user/medias",
    operation_id = "User_s_Media_post__user_medias",
    tag = TAG,
    params(IdempotencyKey),
    request_body = MediasRequest,
    security(("api_key" = []), ("bearer" = [])),
    responses(PageResponses, (status = 413, description = "Body too large", body = ErrorBody))
)]
pub async fn post_medias(
    State(state): State<AppState>,
    BodyPage(req): BodyPage<false>,
) -> Result<Response, ApiError> {
    page(&state, req).await
}

/// Continuation User's Media
///
/// This endpoint returns the list of a user's medias: the page after a continuation token.
#[utoipa::path(
    get,
    path = "/user/medias/continuation",
    operation_id = "Continuation_User_s_Media_get__user_medias_continuation",
    tag = TAG,
    params(MediasContinuationQuery, IdempotencyKey),
    security(("api_key" = []), ("bearer" = [])),
    responses(PageResponses)
)]
pub async fn get_medias_continuation(
    State(state): State<AppState>,
    QueryPage(req): QueryPage<true>,
) -> Result<Response, ApiError> {
    page(&state, req).await
}

/// Continuation User's Media
///
/// This endpoint returns the list of a user's medias: the page after a continuation token.
#[utoipa::path(
    post,
    path = "/user/medias/continuation",
    operation_id = "Continuation_User_s_Media_post__user_medias_continuation",
    tag = TAG,
    params(IdempotencyKey),
    request_body = MediasContinuationRequest,
    security(("api_key" = []), ("bearer" = [])),
    responses(PageResponses, (status = 413, description = "Body too large", body = ErrorBody))
)]
pub async fn post_medias_continuation(
    State(state): State<AppState>,
    BodyPage(req): BodyPage<true>,
) -> Result<Response, ApiError> {
    page(&state, req).await
}
