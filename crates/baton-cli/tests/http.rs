//! `baton mcp-server --listen`: MCP over Streamable HTTP, through the real binary on
//! 127.0.0.1, with rmcp's HTTP client and raw requests for the error cases.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::http::{Era, HttpServerProcess, initialize_body};
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

/// `baton server add-token OWNER`: the token on stdout, its hash in a 0600 file.
fn add_token(env: &TestEnv, owner: &str) -> String {
    let output = env.run(&["server", "add-token", owner]);
    assert_success(&output);
    let token = stdout(&output).trim().to_owned();
    assert!(token.len() >= 64, "a token of at least 256 bits: {token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_the_answer_is_401_and_the_token_is_never_stored_or_logged() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let token = add_token(&env, "alice");
    let tokens_file = env.home.join("tokens");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&tokens_file).expect("tokens file").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "tokens file mode {mode:o}");
    let stored = std::fs::read_to_string(&tokens_file).expect("tokens");
    assert!(stored.starts_with("alice sha256:"), "{stored}");
    assert!(!stored.contains(&token), "only the hash is stored");

    let server = HttpServerProcess::spawn(&env, &[]);
    for headers in [
        vec![],
        vec![("authorization", "Bearer baton_0000wrong")],
        vec![("authorization", "Basic YWxpY2U6eA==")],
    ] {
        let response = server.post(initialize_body().to_string(), &headers).await;
        assert_eq!(response.status(), 401, "{headers:?}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    let bearer = format!("Bearer {token}");
    assert_eq!(
        server
            .initialize_status(&[("authorization", bearer.as_str())])
            .await,
        200
    );
    // The MCP client with the token works end to end.
    let client = server.client(Era::Sessions2025, Some(&token)).await;
    let (thread_id, _) = client
        .start(json!({"prompt": "hello", "cwd": env.project}))
        .await;
    drop(client);
    let transcript = std::fs::read_to_string(env.rollout_of(&thread_id)).expect("transcript");
    assert!(!transcript.contains(&token));
    assert!(!server.stderr_text().contains(&token), "token in the log");
    // Healthz needs no token.
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_or_origin_gets_403() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = HttpServerProcess::spawn(&env, &[]);
    let port = server.port();
    let evil_host = format!("evil.example:{port}");
    let own_origin = format!("http://localhost:{port}");
    let localhost = format!("localhost:{port}");
    assert_eq!(server.initialize_status(&[("host", evil_host.as_str())]).await, 403);
    assert_eq!(
        server
            .initialize_status(&[("origin", "http://evil.example")])
            .await,
        403
    );
    assert_eq!(
        server
            .initialize_status(&[("host", localhost.as_str()), ("origin", own_origin.as_str())])
            .await,
        200
    );
    assert_eq!(server.initialize_status(&[]).await, 200);
}

#[test]
fn listening_beyond_loopback_without_tokens_exits_2_and_says_why() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let output = env.run(&["mcp-server", "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("without tokens"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_tokens_file_others_can_read_is_refused_at_start() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    add_token(&env, "alice");
    let tokens_file = env.home.join("tokens");
    std::fs::set_permissions(
        &tokens_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let output = env.run(&["mcp-server", "--listen", "127.0.0.1:0"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("chmod 600") && message.contains(&tokens_file.display().to_string()),
        "{message}"
    );
}
