//! The 2026-07-28 stateless era: no `initialize`, every request carries its own `_meta`.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::mcp::RawMcp;
use common::*;
use serde_json::{Value, json};

fn modern_meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "stateless-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": capabilities
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_client_starts_and_continues_a_session_without_initialize() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);

    let discover = raw
        .request(
            1,
            "server/discover",
            json!({"_meta": modern_meta(json!({}))}),
        )
        .await;
    let versions = discover["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{discover}"
    );

    let started = raw
        .request(
            2,
            "tools/call",
            json!({"name": "baton",
                   "arguments": {"prompt": "hello", "cwd": env.project},
                   "_meta": modern_meta(json!({}))}),
        )
        .await;
    assert_eq!(
        started["result"]["structuredContent"]["content"], "echo: hello",
        "{started}"
    );
    let thread_id = started["result"]["structuredContent"]["threadId"]
        .as_str()
        .expect("threadId")
        .to_owned();

    let replied = raw
        .request(
            3,
            "tools/call",
            json!({"name": "baton-reply",
                   "arguments": {"threadId": thread_id, "prompt": "RECALL"},
                   "_meta": modern_meta(json!({}))}),
        )
        .await;
    assert_eq!(
        replied["result"]["structuredContent"]["content"], "recall: hello (0 tool outputs)",
        "{replied}"
    );

    // Server-to-client requests are not allowed in this era: a command that needs approval is
    // denied without asking, and the model is told why.
    let untrusted = raw
        .request(
            4,
            "tools/call",
            json!({"name": "baton",
                   "arguments": {"prompt": "shell: touch asked.txt", "cwd": env.project,
                                 "approval-policy": "untrusted"},
                   "_meta": modern_meta(json!({"elicitation": {}}))}),
        )
        .await;
    let answer = untrusted["result"]["structuredContent"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(answer.contains("command not run"), "{untrusted}");
    assert!(!env.project.join("asked.txt").exists());
}
