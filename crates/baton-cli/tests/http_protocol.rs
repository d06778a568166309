//! Protocol details over HTTP that the MCP conformance suite checks (scripts/conformance.sh
//! runs the whole suite); each found by a failing scenario there, pinned here.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::http::{Era, HttpServerProcess};
use common::*;
use serde_json::{Value, json};

/// 2026-07-28 removed `initialize`: a stateless request for it gets 404 and -32601 (method
/// not found), while the 2025-11-25 handshake keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_initialize_is_method_not_found_and_the_handshake_still_works() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = HttpServerProcess::spawn(&env, &[]);

    let stateless = json!({"jsonrpc": "2.0", "id": 500, "method": "initialize", "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}
        }
    }});
    let response = server
        .post(
            stateless.to_string(),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "initialize"),
            ],
        )
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["id"], 500, "{body}");
    assert_eq!(body["error"]["code"], -32601, "{body}");

    assert_eq!(server.initialize_status(&[]).await, 200);
}

/// A resource that does not exist: the error names the requested URI in `data.uri`, in both
/// eras (the protocol's SHOULD; the suite warns without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_resource_error_carries_its_uri() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = HttpServerProcess::spawn(&env, &[]);
    for era in [Era::Sessions2025, Era::Stateless2026] {
        let client = server.client(era, None).await;
        for uri in [
            "test://nonexistent-resource",
            "baton://sessions/019b0000-0000-7000-8000-000000000000",
        ] {
            let error = match client
                .service
                .read_resource(rmcp::model::ReadResourceRequestParams::new(uri))
                .await
            {
                Err(rmcp::service::ServiceError::McpError(error)) => error,
                other => panic!("{era:?} {uri}: expected a JSON-RPC error, got {other:?}"),
            };
            assert_eq!(
                error.data,
                Some(json!({"uri": uri})),
                "{era:?} {uri}: {error:?}"
            );
        }
    }
}
