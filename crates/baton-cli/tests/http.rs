//! `baton mcp-server --listen`: MCP over Streamable HTTP, through the real binary on
//! 127.0.0.1, with rmcp's HTTP client and raw requests for the error cases.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::http::{Era, HttpServerProcess};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_over_http_continues_after_kill_9_in_both_eras() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    for era in [Era::Sessions2025, Era::Stateless2026] {
        let server = HttpServerProcess::spawn(&env, &[]);
        let health = reqwest::get(format!("http://{}/healthz", server.addr))
            .await
            .expect("GET /healthz");
        assert_eq!(health.status(), 200);
        let client = server.client(era, None).await;
        let prompt = format!("remember the {era:?} era");
        let (thread_id, answer) = client
            .start(json!({"prompt": prompt, "cwd": env.project}))
            .await;
        assert_eq!(answer, format!("echo: {prompt}"));
        drop(client);
        let listening = server
            .stderr_text()
            .lines()
            .filter(|line| line.starts_with("listening on "))
            .count();
        assert_eq!(
            listening,
            1,
            "exactly one listening line:\n{}",
            server.stderr_text()
        );
        server.kill_9();

        let server = HttpServerProcess::spawn(&env, &[]);
        let client = server.client(era, None).await;
        let recalled = client.reply(&thread_id, "RECALL").await;
        assert_eq!(
            recalled,
            format!("recall: {prompt} (0 tool outputs)"),
            "{era:?}"
        );
    }
}
