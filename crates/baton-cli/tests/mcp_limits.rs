//! `baton mcp-server` and messages over the stdio transport's line limit (16 MiB).

mod common;

use std::time::Duration;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::TestEnv;
use common::mcp::RawMcp;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_line_limit_gets_an_error_and_the_server_keeps_serving() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);
    raw.initialize().await;

    // 17 MiB in one line: rmcp alone drops it and never answers.
    let huge = raw
        .request(
            7,
            "tools/call",
            json!({"name": "baton", "arguments": {"prompt": "x".repeat(17 << 20), "cwd": env.project}}),
        )
        .await;
    assert_eq!(huge["error"]["code"], -32600, "{huge}");
    let message = huge["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("request too large"), "{message}");
    assert!(message.contains("16 MiB limit"), "{message}");

    // The next request on the same connection is served as usual.
    let tools = raw.request(8, "tools/list", json!({})).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .is_some_and(|tools| !tools.is_empty()),
        "{tools}"
    );
    raw.close_stdin();
    assert!(raw.wait_exit(Duration::from_secs(30)).await.is_some());
}
