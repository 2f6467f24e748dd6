//! Requests, responses and error bodies of the HTTP API, as the OpenAPI document describes them.
//!
//! Request bodies are parsed by hand in the server (to produce FastAPI's error format for every
//! problem at once); the types here describe what those parsers accept.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{IntoParams, Number, PartialSchema, ToSchema};

use crate::tweet::Tweet;

/// The default page size.
pub const DEFAULT_LIMIT: u32 = 10;
/// The largest page size unless the operator configures another.
pub const DEFAULT_MAX_LIMIT: u32 = 20;

/// A user id as a request carries it: a JSON integer or a string of digits (`96479162` and
/// `"96479162"` are the same request). Ids up to 18446744073709551615 are exact either way.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserIdInput {
    Number(u64),
    Digits(String),
}

/// The pattern of an id given as text.
pub const ID_PATTERN: &str = "^[0-9]{1,20}$";

impl PartialSchema for UserIdInput {
    fn schema() -> RefOr<Schema> {
        let number = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(Number::UInt(u64::MAX as usize)));
        let digits = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ID_PATTERN));
        OneOfBuilder::new()
            .item(number)
            .item(digits)
            .description(Some("A user id: a JSON integer or a string of digits."))
            .examples([serde_json::json!(96479162), serde_json::json!("96479162")])
            .into()
    }
}

impl ToSchema for UserIdInput {}

/// Body of `POST /user/medias`: the first page of a user's media timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"user_id": 96479162, "limit": 10}))]
pub struct MediasRequest {
    pub user_id: UserIdInput,
    /// Tweets per page.
    #[schema(minimum = 1, maximum = 20, default = 10)]
    pub limit: Option<i64>,
}

/// Body of `POST /user/medias/continuation`: the page after a continuation token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!(crate::examples::seed_request()))]
pub struct MediasContinuationRequest {
    pub user_id: UserIdInput,
    /// The `continuation_token` of the previous page, as it was returned.
    pub continuation_token: String,
    /// Tweets per page.
    #[schema(minimum = 1, maximum = 20, default = 10)]
    pub limit: Option<i64>,
}

/// Query of `GET /user/medias`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediasQuery {
    /// The user's id, a string of digits.
    #[param(pattern = "^[0-9]{1,20}$", example = "96479162")]
    pub user_id: String,
    /// Tweets per page.
    #[param(minimum = 1, maximum = 20, default = 10)]
    pub limit: Option<i64>,
}

/// Query of `GET /user/medias/continuation`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MediasContinuationQuery {
    /// The user's id, a string of digits.
    #[param(pattern = "^[0-9]{1,20}$", example = "96479162")]
    pub user_id: String,
    /// The `continuation_token` of the previous page, as it was returned.
    pub continuation_token: String,
    /// Tweets per page.
    #[param(minimum = 1, maximum = 20, default = 10)]
    pub limit: Option<i64>,
}

/// One page of a user's media timeline, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!(crate::examples::seed_response()))]
pub struct MediasResponse {
    pub results: Vec<Tweet>,
    /// Pass it back for the next page; `null` on the last page.
    pub continuation_token: Option<String>,
}

/// A 422 body, as FastAPI writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"detail": [{
    "loc": ["body", "limit"],
    "msg": "ensure this value is less than or equal to 20",
    "type": "value_error.number.not_le",
    "ctx": {"limit_value": 20}
}]}))]
pub struct HttpValidationError {
    pub detail: Vec<ValidationError>,
}

/// One problem with a request, in pydantic v1's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationError {
    /// Where the problem is: `["body", "limit"]`, `["query", "user_id"]`, `["body", 17]`.
    pub loc: Vec<LocItem>,
    pub msg: String,
    /// pydantic's error type, e.g. `value_error.missing`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Map<String, Value>>,
}

/// A step of a `loc` path: a field name, or a byte offset into a body that is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LocItem {
    Key(String),
    Index(u64),
}

impl From<&str> for LocItem {
    fn from(value: &str) -> Self {
        LocItem::Key(value.to_owned())
    }
}

/// Every error other than a 422.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"detail": "user not found", "code": "user_not_found"}))]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub detail: String,
    /// What went wrong, for a program: `user_not_found`, `not_found`, `payload_too_large`, ...
    pub code: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the store answers.
    pub status: String,
    /// With live upstreams: each one's state, in priority order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Vec<UpstreamHealth>>,
}

/// An upstream's state in `/healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpstreamHealth {
    pub name: String,
    /// `closed` (calls go through), `open` (none until its cooldown ends) or `half-open`.
    pub breaker: String,
    /// Seconds until its rate-limit window lets calls through again, when it is spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_for_secs: Option<u64>,
}
