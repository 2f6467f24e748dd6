//! `GET /healthz`: whether this node can serve.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use xgate_model::wire::{ErrorBody, Health, UpstreamHealth};

use crate::AppState;
use crate::error::ApiError;

/// Health
///
/// 200 when the store answers, 503 otherwise. With live upstreams, each one's state too (an
/// upstream that is down does not make the node unhealthy: it serves what is cached).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health_get__healthz",
    tag = "Service",
    responses(
        (status = 200, description = "The store answers", body = Health),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state
        .store()
        .ping()
        .await
        .map_err(ApiError::StoreUnavailable)?;
    let upstreams = state.live().map(|live| {
        live.upstreams()
            .states()
            .into_iter()
            .map(|u| UpstreamHealth {
                name: u.name,
                breaker: u.breaker.to_owned(),
                rate_limited_for_secs: u.rate_limited_for_secs,
            })
            .collect()
    });
    Ok(Json(Health {
        status: "ok".into(),
        upstreams,
    }))
}

/// `GET /metrics`: counters in the OpenMetrics text format (upstream calls by outcome, page
/// requests by how the cache answered).
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    )
}
