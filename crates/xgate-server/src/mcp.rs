//! `/mcp`: the User's Media endpoints as Model Context Protocol tools, over the streamable HTTP
//! transport (JSON-RPC 2.0 in a `POST`; each request answered with one JSON response).
//!
//! The tools' input schemas are the REST request bodies' schemas, taken from the OpenAPI
//! document. A tool call is the REST call: it is sent through the same router, with the caller's
//! key, so it is authenticated, rate limited and charged exactly as the REST call is (a call that
//! returns data costs the endpoint's price; an error costs nothing). Listing tools and the
//! handshake are free, but need a key on a server that requires keys.
//!
//! Protocol revisions served: the `initialize` handshake of 2025-11-25, 2025-06-18, 2025-03-26
//! and 2024-11-05. A client that probes for the stateless 2026-07-28 revision (`server/discover`)
//! is told the method does not exist, and falls back to the handshake.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Handshake revisions this server speaks, newest first.
const VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// What `/mcp` needs: the data routes to call, and the tools to list.
#[derive(Clone)]
pub struct Mcp {
    data: Router,
    tools: Value,
}

struct Tool {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    path: &'static str,
    schema: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        name: "user_medias",
        title: "User's Media",
        description: "The first page of a user's media tweets (photos, videos, GIFs), newest \
                      first, in the X tweet format. Pass the returned continuation_token to \
                      user_medias_continuation for the next page; a null token means the \
                      timeline has ended.",
        path: "/user/medias",
        schema: "MediasRequest",
    },
    Tool {
        name: "user_medias_continuation",
        title: "Continuation User's Media",
        description: "The page of a user's media tweets after a continuation_token returned by \
                      user_medias or by this tool.",
        path: "/user/medias/continuation",
        schema: "MediasContinuationRequest",
    },
];

impl Mcp {
    /// `data`: the data routes with their state; `doc`: the OpenAPI document they are in.
    pub fn new(data: Router, doc: &Value) -> Self {
        let tools = TOOLS
            .iter()
            .map(|tool| {
                let mut schema = doc
                    .pointer(&format!("/components/schemas/{}", tool.schema))
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"}));
                inline_refs(&mut schema, doc, 0);
                if let Some(object) = schema.as_object_mut() {
                    object.remove("example");
                }
                json!({
                    "name": tool.name,
                    "title": tool.title,
                    "description": tool.description,
                    "inputSchema": schema,
                    "annotations": {"readOnlyHint": true, "openWorldHint": true},
                })
            })
            .collect();
        Mcp {
            data,
            tools: Value::Array(tools),
        }
    }
}

/// Replaces `{"$ref": "#/components/schemas/X"}` with X itself: a tool's schema stands alone.
fn inline_refs(value: &mut Value, doc: &Value, depth: usize) {
    if depth > 16 {
        return;
    }
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                if let Some(found) = target
                    .strip_prefix('#')
                    .and_then(|pointer| doc.pointer(pointer))
                {
                    *value = found.clone();
                    inline_refs(value, doc, depth + 1);
                }
                return;
            }
            object
                .values_mut()
                .for_each(|v| inline_refs(v, doc, depth + 1));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| inline_refs(v, doc, depth + 1)),
        _ => {}
    }
}

/// `POST /mcp`.
pub async fn post(State(mcp): State<Mcp>, headers: HeaderMap, body: Bytes) -> Response {
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(e) => return json_response(error(Value::Null, PARSE_ERROR, &e.to_string()), None),
    };
    let mut session = None;
    let answer = match message {
        Value::Array(batch) if !batch.is_empty() => {
            let mut answers = Vec::new();
            for message in batch {
                if let Some(answer) = handle(&mcp, &headers, message, &mut session).await {
                    answers.push(answer);
                }
            }
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        message => handle(&mcp, &headers, message, &mut session).await,
    };
    match answer {
        Some(answer) => json_response(answer, session),
        // Notifications and responses only: accepted, nothing to say.
        None => StatusCode::ACCEPTED.into_response(),
    }
}

/// `GET /mcp` and `DELETE /mcp`: this server sends no messages of its own and keeps no session
/// to end.
pub async fn not_offered() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(CONTENT_TYPE, "application/json")],
        r#"{"detail":"Method Not Allowed","code":"method_not_allowed"}"#,
    )
        .into_response()
}

fn json_response(body: Value, session: Option<String>) -> Response {
    let mut response = (
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).expect("serialisable"),
    )
        .into_response();
    if let Some(session) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert("mcp-session-id", session);
    }
    response
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// One JSON-RPC message; `None` for notifications and responses.
async fn handle(
    mcp: &Mcp,
    headers: &HeaderMap,
    message: Value,
    session: &mut Option<String>,
) -> Option<Value> {
    let Value::Object(message) = message else {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "not a JSON-RPC message",
        ));
    };
    let id = message.get("id").cloned();
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        // A response to something this server never asks: nothing to do.
        return id
            .filter(|_| !message.contains_key("result") && !message.contains_key("error"))
            .map(|id| error(id, INVALID_REQUEST, "no method"));
    };
    let id = id?; // a notification (notifications/initialized, cancelled, ...)
    let params = message.get("params").cloned().unwrap_or(json!({}));
    Some(match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str);
            let version = asked
                .filter(|v| VERSIONS.contains(v))
                .unwrap_or(VERSIONS[0]);
            *session = Some(uuid::Uuid::now_v7().to_string());
            result(
                id,
                json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": false}},
                    "serverInfo": {
                        "name": "xgate",
                        "title": "xgate: X user's media API",
                        "version": env!("CARGO_PKG_VERSION"),
                    },
                    "instructions": "Tools return a user's media tweets, newest first, a page \
                                     at a time. Call user_medias with a user_id, then \
                                     user_medias_continuation with the continuation_token it \
                                     returned, until the token is null.",
                }),
            )
        }
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({"tools": mcp.tools})),
        "tools/call" => match call(mcp, headers, &params).await {
            Ok(answer) => result(id, answer),
            Err(message) => error(id, INVALID_PARAMS, &message),
        },
        _ => error(id, METHOD_NOT_FOUND, &format!("method not found: {method}")),
    })
}

/// A tool call, as the REST call it is.
async fn call(mcp: &Mcp, headers: &HeaderMap, params: &Value) -> Result<Value, String> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or("tools/call needs a tool name")?;
    let tool = TOOLS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("no tool named {name:?}"))?;
    let arguments = params
        .get("arguments")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let mut request = Request::post(tool.path).header(CONTENT_TYPE, "application/json");
    for name in [AUTHORIZATION.as_str(), "x-api-key"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Body::from(
            serde_json::to_vec(&arguments).expect("serialisable"),
        ))
        .map_err(|e| e.to_string())?;
    let response = mcp
        .data
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let meta = json!({
        "xgate/status": status.as_u16(),
        "xgate/request_id": header("x-request-id"),
        "xgate/credits_cost": header("x-credits-cost").and_then(|c| c.parse::<i64>().ok()),
        "xgate/credits_remaining": header("x-credits-remaining").and_then(|c| c.parse::<i64>().ok()),
    });
    let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut answer = json!({
        "content": [{"type": "text", "text": text}],
        "isError": !status.is_success(),
        "_meta": meta,
    });
    if status.is_success()
        && let Ok(structured @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes)
    {
        answer["structuredContent"] = structured;
    }
    Ok(answer)
}
