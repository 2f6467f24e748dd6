//! The OpenAPI document, generated from the handlers and the wire model.

use serde_json::Value;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use xgate_model::wire::DEFAULT_MAX_LIMIT;

use crate::ServerConfig;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "xgate",
        description = "X (Twitter) data API: a user's media timeline, page after page. \
                       Compatible with the FastAPI service of the same endpoints: same tweet \
                       format, same 422 errors, opaque signed continuation tokens.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "User", description = "A user's tweets"),
        (name = "Service", description = "Operating the service"),
    )
)]
struct ApiDoc;

/// The document's fixed parts; the router adds the paths.
pub fn base() -> Document {
    ApiDoc::openapi()
}

/// The served document: the generated one, with the version and the configured page-size limit.
pub fn finish(mut doc: Document, config: &ServerConfig) -> Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    if config.max_limit != DEFAULT_MAX_LIMIT {
        set_limit_maximum(&mut doc, config.max_limit);
    }
    doc
}

/// The schemas say `maximum: 20` (the attribute macros need a literal); an operator's other
/// maximum replaces it wherever a `limit` is described.
fn set_limit_maximum(doc: &mut Value, max: u32) {
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut);
    for schema in schemas.into_iter().flat_map(|s| s.values_mut()) {
        if let Some(limit) = schema.pointer_mut("/properties/limit") {
            limit["maximum"] = max.into();
        }
    }
    let paths = doc.pointer_mut("/paths").and_then(Value::as_object_mut);
    for operation in paths
        .into_iter()
        .flat_map(|p| p.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|ops| ops.values_mut())
    {
        let params = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut);
        for param in params.into_iter().flatten() {
            if param["name"] == "limit" {
                param["schema"]["maximum"] = max.into();
            }
        }
    }
}
