//! Protocol details over HTTP that the MCP conformance suite checks (scripts/conformance.sh
//! runs the whole suite; each found by a failing scenario there, pinned here), and
//! `GET /metrics`.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::http::{Era, HttpServerProcess};
use common::*;
use std::collections::HashMap;

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

/// Prometheus text as `name{labels}` → value; panics on any line that is neither a comment
/// (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) nor `name[{labels}] value`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|p| comment.starts_with(p))
                    || comment == "EOF",
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// Two turns over HTTP with a token: /metrics counts them and the calls by tool, and needs
/// the token like /mcp does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_turns_and_tool_calls_and_need_the_token() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let output = env.run(&["server", "add-token", "alice"]);
    assert_success(&output);
    let token = stdout(&output).trim().to_owned();
    let server = HttpServerProcess::spawn(&env, &[]);
    let client = server.client(Era::Stateless2026, Some(&token)).await;
    let (thread, _) = client
        .start(json!({"prompt": "hello", "cwd": env.project}))
        .await;
    client.reply(&thread, "again").await;

    let url = format!("http://{}/metrics", server.addr);
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.expect("GET /metrics");
    assert_eq!(anonymous.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(wrong.status(), 401);

    let response = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let samples = parse_prometheus(&text);
    let value = |series: &str| {
        samples
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(
        value(r#"baton_turns_finished_total{outcome="completed"}"#),
        2.0
    );
    assert_eq!(value("baton_turns_running"), 0.0);
    assert_eq!(value(r#"baton_tool_calls_total{tool="baton"}"#), 1.0);
    assert_eq!(value(r#"baton_tool_calls_total{tool="baton-reply"}"#), 1.0);
    // One model request per turn with the default script's plain answer; store operations
    // on the turns' path were timed.
    assert_eq!(
        value(r#"baton_model_request_seconds_count{result="ok"}"#),
        2.0
    );
    for operation in ["create_thread", "append_to", "append", "sync"] {
        assert!(
            value(&format!(
                r#"baton_store_operation_seconds_count{{operation="{operation}"}}"#
            )) >= 1.0,
            "{operation}: {text}"
        );
    }
    assert!(
        value(r#"baton_http_requests_total{status="401"}"#) >= 2.0,
        "{text}"
    );
    assert!(
        value(r#"baton_http_requests_total{status="200"}"#) >= 2.0,
        "{text}"
    );
}
