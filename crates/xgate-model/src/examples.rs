//! The seed page's examples, used by the OpenAPI document and by tests.

use serde_json::Value;

/// The seed's example response, verbatim.
pub const SEED_RESPONSE_JSON: &str =
    include_str!("../../../fixtures/seed/seed-example-response.json");

/// The seed's example request body of `POST /user/medias/continuation`.
pub fn seed_request() -> Value {
    serde_json::json!({
        "user_id": 96479162,
        "continuation_token": "DAABCgABFu-OJkw___gKAAIVmAq8iZYgAggAAwAAAAIAAA",
        "limit": 10
    })
}

/// The seed's example response as a JSON value.
pub fn seed_response() -> Value {
    serde_json::from_str(SEED_RESPONSE_JSON).expect("the seed example is valid JSON")
}
