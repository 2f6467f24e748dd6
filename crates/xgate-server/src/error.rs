//! Every error the API answers with, and the one table that maps each to its status and body.
//!
//! 422s carry FastAPI's `{"detail": [...]}` list; every other error is
//! `{"detail": "<message>", "code": "<snake_case_code>"}`. A 5xx body never carries internal
//! detail: the cause goes to the log.

use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use xgate_model::wire::{ErrorBody, HttpValidationError, LocItem, ValidationError};
use xgate_store::StoreError;
use xgate_upstream::LiveError;

/// An error answer of the API.
#[derive(Debug)]
pub enum ApiError {
    /// The request did not validate; one entry per problem.
    Validation(Vec<ValidationError>),
    UserNotFound,
    /// A data endpoint was called without an API key.
    MissingApiKey,
    /// The key is malformed, unknown or revoked.
    InvalidApiKey,
    /// The account cannot pay for the request.
    InsufficientCredits,
    /// Over the account's rate limit; retry after this many seconds.
    RateLimited {
        retry_after: u64,
    },
    /// A request with the same `Idempotency-Key` is still running.
    IdempotencyInProgress,
    /// Billing endpoints on a server that does not bill.
    BillingDisabled,
    /// No such route.
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    /// The request body could not be read (the client went away mid-body, say).
    BadRequest(String),
    /// The store did not answer in time; worth retrying.
    StoreUnavailable(StoreError),
    /// Every upstream is down, rate limited or switched off, and nothing is cached for the
    /// request; retry after this many seconds.
    UpstreamUnavailable {
        retry_after: u64,
    },
    /// The upstreams answered wrongly (5xx, malformed, refused); the cause is logged.
    UpstreamError(String),
    /// A bug or an unexpected failure: logged, answered opaquely.
    Internal(String),
}

impl ApiError {
    /// Status, code and message of every non-422 error, in one place.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "validation error",
            ),
            ApiError::UserNotFound => (StatusCode::NOT_FOUND, "user_not_found", "user not found"),
            ApiError::MissingApiKey => (
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "an API key is required: Authorization: Bearer <key>, or X-API-Key: <key>",
            ),
            ApiError::InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid",
            ),
            ApiError::InsufficientCredits => (
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                "not enough credits for this request",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded, retry after the time in Retry-After",
            ),
            ApiError::IdempotencyInProgress => (
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still running",
            ),
            ApiError::BillingDisabled => (
                StatusCode::NOT_FOUND,
                "not_found",
                "this server does not use API keys or credits",
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not Found"),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method Not Allowed",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            ),
            ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
            ),
            ApiError::StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable, try again shortly",
            ),
            ApiError::UpstreamUnavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_unavailable",
                "the upstream data source is unavailable, retry after the time in Retry-After",
            ),
            ApiError::UpstreamError(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "the upstream data source answered with an error",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal Server Error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::StoreUnavailable(e),
            StoreError::Backend(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::NotFound => ApiError::UserNotFound,
            LiveError::Unavailable { retry_after } => ApiError::UpstreamUnavailable {
                retry_after: retry_after.as_secs().max(1),
            },
            LiveError::Failed(cause) => ApiError::UpstreamError(cause),
            LiveError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ApiError::RateLimited { retry_after }
            | ApiError::UpstreamUnavailable { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::MissingApiKey | ApiError::InvalidApiKey => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        let body = match self {
            ApiError::Validation(detail) => {
                serde_json::to_vec(&HttpValidationError { detail }).expect("serialisable")
            }
            other => {
                match &other {
                    ApiError::StoreUnavailable(cause) => {
                        tracing::warn!(%cause, "store unavailable")
                    }
                    ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
                    ApiError::UpstreamError(cause) => tracing::warn!(%cause, "upstream error"),
                    ApiError::BadRequest(cause) => tracing::debug!(%cause, "unreadable body"),
                    _ => {}
                }
                let body = ErrorBody {
                    detail: detail.to_owned(),
                    code: code.to_owned(),
                };
                serde_json::to_vec(&body).expect("serialisable")
            }
        };
        (status, headers, body).into_response()
    }
}

/// Builders for the pydantic-v1 entries of contract §4.
pub mod issue {
    use super::*;

    fn entry(
        loc: Vec<LocItem>,
        msg: &str,
        kind: &str,
        ctx: Option<Map<String, Value>>,
    ) -> ValidationError {
        ValidationError {
            loc,
            msg: msg.to_owned(),
            kind: kind.to_owned(),
            ctx,
        }
    }

    fn limit_ctx(limit: impl Into<Value>) -> Option<Map<String, Value>> {
        let mut ctx = Map::new();
        ctx.insert("limit_value".into(), limit.into());
        Some(ctx)
    }

    pub fn missing(loc: Vec<LocItem>) -> ValidationError {
        entry(loc, "field required", "value_error.missing", None)
    }

    pub fn none_not_allowed(loc: Vec<LocItem>) -> ValidationError {
        entry(
            loc,
            "none is not an allowed value",
            "type_error.none.not_allowed",
            None,
        )
    }

    pub fn not_an_integer(loc: Vec<LocItem>) -> ValidationError {
        entry(
            loc,
            "value is not a valid integer",
            "type_error.integer",
            None,
        )
    }

    pub fn below(
        loc: Vec<LocItem>,
        minimum: impl Into<Value> + std::fmt::Display,
    ) -> ValidationError {
        let msg = format!("ensure this value is greater than or equal to {minimum}");
        entry(loc, &msg, "value_error.number.not_ge", limit_ctx(minimum))
    }

    pub fn above(
        loc: Vec<LocItem>,
        maximum: impl Into<Value> + std::fmt::Display,
    ) -> ValidationError {
        let msg = format!("ensure this value is less than or equal to {maximum}");
        entry(loc, &msg, "value_error.number.not_le", limit_ctx(maximum))
    }

    pub fn not_a_string(loc: Vec<LocItem>) -> ValidationError {
        entry(loc, "str type expected", "type_error.str", None)
    }

    pub fn not_a_dict(loc: Vec<LocItem>) -> ValidationError {
        entry(loc, "value is not a valid dict", "type_error.dict", None)
    }

    pub fn idempotency_key_reused(loc: Vec<LocItem>) -> ValidationError {
        entry(
            loc,
            "this Idempotency-Key was used for a different request",
            "value_error.idempotency_key.reused",
            None,
        )
    }

    pub fn bad_idempotency_key(loc: Vec<LocItem>) -> ValidationError {
        entry(
            loc,
            "an Idempotency-Key is 1 to 255 visible ASCII characters",
            "value_error.idempotency_key",
            None,
        )
    }

    pub fn bad_datetime(loc: Vec<LocItem>) -> ValidationError {
        entry(loc, "invalid datetime format", "value_error.datetime", None)
    }

    pub fn bad_token(loc: Vec<LocItem>) -> ValidationError {
        entry(
            loc,
            "invalid continuation token",
            "value_error.continuation_token",
            None,
        )
    }

    /// A body that is not JSON: `loc` is `["body", <byte offset>]`, as FastAPI reports it.
    pub fn json_decode(offset: usize, msg: &str, line: usize, column: usize) -> ValidationError {
        let ctx = json!({"msg": msg, "pos": offset, "lineno": line, "colno": column});
        let Value::Object(ctx) = ctx else {
            unreachable!("json! of an object literal")
        };
        entry(
            vec!["body".into(), LocItem::Index(offset as u64)],
            msg,
            "value_error.jsondecode",
            Some(ctx),
        )
    }
}
