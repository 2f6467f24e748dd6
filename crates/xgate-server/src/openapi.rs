//! The OpenAPI document, generated from the handlers and the wire model.

use serde_json::Value;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use xgate_model::wire::{DEFAULT_MAX_LIMIT, ErrorBody, HttpValidationError, MediasResponse};

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
    // The page endpoints document their answers through an `IntoResponses` type, which does not
    // register the schemas it names: they are registered here.
    components(schemas(MediasResponse, ErrorBody, HttpValidationError)),
    modifiers(&KeySchemes),
    tags(
        (name = "User", description = "A user's tweets"),
        (name = "Account", description = "The caller's credits and request log, free of charge"),
        (name = "Service", description = "Operating the service"),
    )
)]
struct ApiDoc;

/// The two ways to present an API key.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An xgate API key, `xg_live_...`",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer xg_live_...`"))
                    .build(),
            ),
        );
    }
}

/// The document's fixed parts; the router adds the paths.
pub fn base() -> Document {
    ApiDoc::openapi()
}

/// The served document: the generated one, with the version, the configured page-size limit, and
/// without keys and billing on an open server.
pub fn finish(mut doc: Document, config: &ServerConfig, billed: bool) -> Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serialises");
    if config.max_limit != DEFAULT_MAX_LIMIT {
        set_limit_maximum(&mut doc, config.max_limit);
    }
    if !billed {
        strip_billing(&mut doc);
    }
    doc
}

/// An open server asks for no key and charges nothing: its document says so.
fn strip_billing(doc: &mut Value) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|path, _| !path.starts_with("/v1/"));
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|ops| ops.values_mut())
            .filter_map(Value::as_object_mut)
        {
            operation.remove("security");
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                for status in ["401", "402", "409", "429"] {
                    responses.remove(status);
                }
            }
        }
    }
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        components.remove("securitySchemes");
        if let Some(schemas) = components.get_mut("schemas").and_then(Value::as_object_mut) {
            for name in ["Credits", "Price", "Usage", "UsageEntry"] {
                schemas.remove(name);
            }
        }
    }
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
