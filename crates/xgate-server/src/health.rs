//! `GET /healthz`: whether this node can serve.

use axum::Json;
use axum::extract::State;
use xgate_model::wire::{ErrorBody, Health};

use crate::AppState;
use crate::error::ApiError;

/// Health
///
/// 200 when the store answers, 503 otherwise.
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
    Ok(Json(Health {
        status: "ok".into(),
    }))
}
