//! `GET /v1/credits` and `GET /v1/usage`: a key holder's balance and request log, free of charge.

use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use xgate_billing::clock;
use xgate_model::wire::{ErrorBody, HttpValidationError, LocItem};

use super::Caller;
use crate::AppState;
use crate::error::{ApiError, issue};

/// The caller of a billing endpoint (a key is required; nothing is charged).
pub struct KeyHolder(pub Caller);

impl FromRequestParts<AppState> for KeyHolder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let billing = state.billing().ok_or(ApiError::BillingDisabled)?;
        // Checked already by the middleware in front of these routes, when it is there.
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(KeyHolder(*caller)),
            None => billing
                .authenticate(&parts.headers, Instant::now())
                .await
                .map(KeyHolder),
        }
    }
}

/// An account's credits.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Credits {
    pub account: String,
    /// Purchased credits left.
    pub balance: i64,
    /// Free credits per calendar month (UTC), spent before purchased ones.
    pub free_allowance: i64,
    /// Free credits left this month.
    pub free_remaining: i64,
    /// The month the free credits belong to, `YYYY-MM`.
    pub free_period: String,
    /// Everything spendable now: `balance + free_remaining`.
    pub remaining: i64,
    /// The account's requests per minute, if it has its own limit.
    pub rate_limit_per_minute: Option<u32>,
    /// What one credit is worth.
    pub credit_value_usd: f64,
    /// The cost of each endpoint, charged only for a successful (2xx) response.
    pub prices: Vec<Price>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// `METHOD /path`.
    pub endpoint: String,
    pub credits: i64,
}

/// Balance
///
/// The caller's balance, free allowance and price list. Free of charge.
#[utoipa::path(
    get,
    path = "/v1/credits",
    operation_id = "credits_get__v1_credits",
    tag = "Account",
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller's credits", body = Credits),
        (status = 401, description = "No or bad API key", body = ErrorBody),
    )
)]
pub async fn credits(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
) -> Result<Json<Credits>, ApiError> {
    let billing = state.billing().ok_or(ApiError::BillingDisabled)?;
    // What the store holds, with this node's own charges in it: the same as the response's
    // `X-Credits-Remaining`, which the meter gives.
    billing.meter().recorded().await;
    let account = billing
        .accounts()
        .account(caller.auth.account_id)
        .await?
        .ok_or(ApiError::InvalidApiKey)?;
    let month = clock::month();
    let free_remaining = account.free_left(&month);
    Ok(Json(Credits {
        remaining: account.balance + free_remaining,
        account: account.name,
        balance: account.balance,
        free_allowance: account.free_allowance,
        free_remaining,
        free_period: month.to_string(),
        rate_limit_per_minute: account.rate_limit,
        credit_value_usd: 0.01,
        prices: billing
            .prices()
            .list()
            .into_iter()
            .map(|(endpoint, credits)| Price {
                endpoint: endpoint.to_owned(),
                credits,
            })
            .collect(),
    }))
}

/// Query of `GET /v1/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Rows per page, 1 to 500.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
    /// Only requests from this time on: an RFC 3339 time such as `2026-11-01T12:00:00Z` (a
    /// plain date, `2026-11-01`, is read as its midnight UTC).
    #[param(format = DateTime)]
    pub since: Option<String>,
}

/// A page of the request log, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub requests: Vec<UsageEntry>,
    /// Pass it as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageEntry {
    pub request_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// `METHOD /path`.
    pub endpoint: String,
    pub status: u16,
    /// Credits charged: free allowance and purchased together.
    pub cost: i64,
    pub latency_ms: f64,
}

/// Usage
///
/// The caller's request log, newest first, paginated. Free of charge.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "usage_get__v1_usage",
    tag = "Account",
    params(UsageQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The caller's request log", body = Usage),
        (status = 401, description = "No or bad API key", body = ErrorBody),
        (status = 422, description = "Validation Error", body = HttpValidationError),
    )
)]
pub async fn usage(
    State(state): State<AppState>,
    KeyHolder(caller): KeyHolder,
    query: axum::extract::RawQuery,
) -> Result<Json<Usage>, ApiError> {
    let billing = state.billing().ok_or(ApiError::BillingDisabled)?;
    let query = query.0.unwrap_or_default();
    let mut limit = 50usize;
    let mut before = None;
    let mut since_ms = 0;
    let mut problems = Vec::new();
    let loc = |field: &str| vec![LocItem::from("query"), LocItem::from(field)];
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "limit" => match value.trim().parse::<i64>() {
                Ok(n) if n < 1 => problems.push(issue::below(loc("limit"), 1)),
                Ok(n) if n > 500 => problems.push(issue::above(loc("limit"), 500)),
                Ok(n) => limit = n as usize,
                Err(_) => problems.push(issue::not_an_integer(loc("limit"))),
            },
            "cursor" => match value.parse::<i64>() {
                Ok(seq) => before = Some(seq),
                Err(_) => problems.push(issue::not_an_integer(loc("cursor"))),
            },
            "since" => match parse_since(&value) {
                Some(ms) => since_ms = ms,
                None => problems.push(issue::bad_datetime(loc("since"))),
            },
            _ => {}
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    billing.meter().recorded().await;
    let rows = billing
        .accounts()
        .usage(caller.auth.account_id, since_ms, before, limit + 1)
        .await?;
    let next_cursor = (rows.len() > limit).then(|| rows[limit - 1].seq.to_string());
    let requests = rows
        .into_iter()
        .take(limit)
        .map(|row| UsageEntry {
            request_id: row.request_id,
            time: DateTime::<Utc>::from_timestamp_millis(row.at_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            endpoint: row.endpoint,
            status: row.status,
            cost: row.paid + row.free,
            latency_ms: row.latency_us as f64 / 1000.0,
        })
        .collect();
    Ok(Json(Usage {
        requests,
        next_cursor,
    }))
}

/// `2026-11-01` (midnight UTC) or an RFC 3339 time, as Unix milliseconds.
pub fn parse_since(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}
