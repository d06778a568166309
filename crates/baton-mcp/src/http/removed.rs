//! A stateless (2026-07-28) request for `initialize`, a method that revision removed.
//!
//! rmcp routes every `initialize` into its legacy handshake, so such a request got HTTP 200
//! and -32602 (its params lack `protocolVersion`). The revision requires 404 and -32601 for
//! a removed method, as rmcp already answers for `ping` and the others.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The `_meta` key every stateless request carries.
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// The answer to `message` if it is a stateless `initialize`; `None` for everything else,
/// including a real 2025-11-25 handshake (which names `params.protocolVersion`).
pub fn stateless_initialize(message: &Value) -> Option<Response> {
    if message.get("method").and_then(Value::as_str) != Some("initialize") {
        return None;
    }
    let params = message.get("params")?;
    if params.get("protocolVersion").is_some() {
        return None;
    }
    let version = params.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()?;
    let body = json!({
        "jsonrpc": "2.0",
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "error": {
            "code": -32601,
            "message": format!(
                "initialize does not exist in protocol {version}: call server/discover instead, or send a 2025-11-25 initialize with params.protocolVersion"
            ),
        },
    });
    Some(
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stateless_initialize_is_answered_here() {
        let stateless = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}});
        let response = stateless_initialize(&stateless).expect("answered");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);

        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "c", "version": "0"}}});
        assert!(stateless_initialize(&legacy).is_none());
        let other = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}});
        assert!(stateless_initialize(&other).is_none());
    }
}
