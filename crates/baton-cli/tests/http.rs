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
        let negotiated = client
            .service
            .peer_info()
            .map(|info| info.protocol_version.to_string());
        let expected = match era {
            Era::Sessions2025 => "2025-11-25",
            Era::Stateless2026 => "2026-07-28",
        };
        assert_eq!(negotiated.as_deref(), Some(expected), "{era:?}");
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
        &std::fs::metadata(&tokens_file)
            .expect("tokens file")
            .permissions(),
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
    assert_eq!(
        server
            .initialize_status(&[("host", evil_host.as_str())])
            .await,
        403
    );
    assert_eq!(
        server
            .initialize_status(&[("origin", "http://evil.example")])
            .await,
        403
    );
    assert_eq!(
        server
            .initialize_status(&[
                ("host", localhost.as_str()),
                ("origin", own_origin.as_str())
            ])
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

/// The message of a resource read that must fail.
async fn resource_error(client: &common::http::HttpClient, thread_id: &str) -> String {
    let uri = format!("baton://sessions/{thread_id}");
    match client
        .service
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
        .await
    {
        Ok(result) => panic!("{uri} should not be readable: {result:?}"),
        Err(rmcp::service::ServiceError::McpError(error)) => error.message.to_string(),
        Err(other) => panic!("{uri}: unexpected error {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_session_is_answered_exactly_like_an_unknown_id() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let alice_token = add_token(&env, "alice");
    let bob_token = add_token(&env, "bob");
    let server = HttpServerProcess::spawn(&env, &[]);
    let alice = server.client(Era::Sessions2025, Some(&alice_token)).await;
    let bob = server.client(Era::Stateless2026, Some(&bob_token)).await;

    let (alice_thread, _) = alice
        .start(json!({"prompt": "alice's secret plan", "cwd": env.project}))
        .await;
    // The owner is recorded in the transcript and in the index.
    let first_line = std::fs::read_to_string(env.rollout_of(&alice_thread))
        .expect("transcript")
        .lines()
        .next()
        .map(str::to_owned)
        .expect("session_meta");
    let meta: serde_json::Value = serde_json::from_str(&first_line).expect("json");
    assert_eq!(meta["payload"]["owner"], "alice", "{first_line}");
    let index = rusqlite::Connection::open(env.home.join("state.sqlite")).expect("index");
    let indexed: Option<String> = index
        .query_row(
            "SELECT owner FROM threads WHERE id = ?1",
            [&alice_thread],
            |row| row.get(0),
        )
        .expect("index row");
    assert_eq!(indexed.as_deref(), Some("alice"));

    let unknown = uuid::Uuid::now_v7().to_string();
    let same_as_unknown = |for_alice: String, for_unknown: String, what: &str| {
        assert!(for_unknown.contains(&unknown), "{what}: {for_unknown}");
        assert_eq!(
            for_alice.replace(&alice_thread, "<id>"),
            for_unknown.replace(&unknown, "<id>"),
            "{what}: another owner's session must look unknown"
        );
    };
    for tool in ["baton-reply", "baton-fork"] {
        let arguments = |id: &str| json!({"threadId": id, "prompt": "let me in"});
        let arguments = |id: &str| {
            let mut args = arguments(id);
            if tool == "baton-fork" {
                args.as_object_mut().expect("object").remove("prompt");
            }
            args
        };
        same_as_unknown(
            bob.tool_error(tool, arguments(&alice_thread)).await,
            bob.tool_error(tool, arguments(&unknown)).await,
            tool,
        );
    }
    same_as_unknown(
        resource_error(&bob, &alice_thread).await,
        resource_error(&bob, &unknown).await,
        "resources/read",
    );

    let listed = |result: rmcp::model::CallToolResult| -> Vec<String> {
        result.structured_content.expect("structured")["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| s["threadId"].as_str().expect("id").to_owned())
            .collect()
    };
    let (bob_thread, _) = bob
        .start(json!({"prompt": "bob's own", "cwd": env.project}))
        .await;
    assert_eq!(
        listed(bob.call("baton-sessions", json!({})).await),
        vec![bob_thread.clone()]
    );
    assert_eq!(
        listed(alice.call("baton-sessions", json!({})).await),
        vec![alice_thread.clone()]
    );
    let resources = bob.service.list_all_resources().await.expect("resources");
    assert!(
        resources.iter().all(|r| !r.uri.contains(&alice_thread)),
        "{resources:?}"
    );

    // The owner continues, forks and reads her own session.
    assert_eq!(
        alice.reply(&alice_thread, "RECALL").await,
        "recall: alice's secret plan (0 tool outputs)"
    );
    alice
        .start(json!({"prompt": "x", "cwd": env.project}))
        .await;
    let forked = alice
        .call("baton-fork", json!({"threadId": alice_thread}))
        .await;
    assert_ne!(forked.is_error, Some(true));
    // Local use (the CLI) sees every session.
    let ids = env.listed_ids();
    assert!(
        ids.contains(&alice_thread) && ids.contains(&bob_thread),
        "{ids:?}"
    );
}

fn append_config(env: &TestEnv, text: &str) {
    let path = env.home.join("config.toml");
    let mut config = std::fs::read_to_string(&path).expect("config");
    config.push('\n');
    config.push_str(text);
    std::fs::write(&path, config).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_outside_the_workspace_roots_is_refused_over_http() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    append_config(
        &env,
        "[profiles.wild]\nsandbox_mode = \"danger-full-access\"\n",
    );
    let outside = env.root.join("outside");
    std::fs::create_dir_all(&outside).expect("outside dir");
    let inside = env.project.join("sub");
    std::fs::create_dir_all(&inside).expect("inside dir");
    std::os::unix::fs::symlink(&outside, env.project.join("link")).expect("symlink");
    // A session started locally elsewhere: its recorded cwd is outside the roots.
    let output = env.run(&[
        "exec",
        "--cd",
        outside.to_str().expect("utf-8"),
        "local work",
    ]);
    assert_success(&output);
    let local_thread = thread_id_of(&output);

    // The server starts in the project: that is its only root.
    let server = HttpServerProcess::spawn(&env, &[]);
    let client = server.client(Era::Sessions2025, None).await;
    let root = env.project.display().to_string();
    for cwd in [
        outside.clone(),
        env.project.join("link"),
        env.project.join("sub/../.."),
    ] {
        let message = client
            .tool_error("baton", json!({"prompt": "hi", "cwd": cwd}))
            .await;
        assert!(
            message.contains("outside this server's workspace roots") && message.contains(&root),
            "{cwd:?}: {message}"
        );
    }
    for (tool, arguments) in [
        (
            "baton-reply",
            json!({"threadId": local_thread, "prompt": "continue"}),
        ),
        ("baton-fork", json!({"threadId": local_thread})),
    ] {
        let message = client.tool_error(tool, arguments).await;
        assert!(message.contains(&root), "{tool}: {message}");
    }
    // A recorded cwd outside may be replaced by one inside.
    let moved = client
        .call(
            "baton-reply",
            json!({"threadId": local_thread, "prompt": "moved", "cwd": inside}),
        )
        .await;
    assert_ne!(moved.is_error, Some(true), "{moved:?}");
    client
        .start(json!({"prompt": "inside", "cwd": inside}))
        .await;

    // Overrides that would send a provider's key elsewhere or widen the sandbox: refused.
    for config in [
        json!({"model_providers": {"evil": {"base_url": "http://203.0.113.1/v1", "env_key": "HOME"}},
               "model_provider": "evil"}),
        json!({"model_providers.evil.base_url": "http://203.0.113.1/v1"}),
        json!({"sandbox_workspace_write": {"writable_roots": ["/"]}}),
    ] {
        let message = client
            .tool_error(
                "baton",
                json!({"prompt": "x", "cwd": inside, "config": config}),
            )
            .await;
        assert!(
            message.contains("not allowed over HTTP"),
            "{config}: {message}"
        );
    }
    client
        .start(json!({"prompt": "x", "cwd": inside, "config": {"model_reasoning_effort": "high"}}))
        .await;

    // danger-full-access: by argument, config override or profile, refused.
    for arguments in [
        json!({"prompt": "x", "cwd": inside, "sandbox": "danger-full-access"}),
        json!({"prompt": "x", "cwd": inside, "config": {"sandbox_mode": "danger-full-access"}}),
        json!({"prompt": "x", "cwd": inside, "profile": "wild"}),
    ] {
        let message = client.tool_error("baton", arguments.clone()).await;
        assert!(
            message.contains("danger-full-access"),
            "{arguments}: {message}"
        );
    }
    drop(client);
    drop(server);

    // Allowed when the server says so.
    append_config(&env, "[server]\nallow_danger_full_access = true\n");
    let server = HttpServerProcess::spawn(&env, &[]);
    let client = server.client(Era::Stateless2026, None).await;
    client
        .start(json!({"prompt": "x", "cwd": inside, "sandbox": "danger-full-access"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413_and_the_next_request_works() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = HttpServerProcess::spawn(&env, &[]);
    // A 5 MiB POST announced with `Expect: 100-continue`: the server must refuse it from the
    // headers, before the client sends the body (a refusal mid-upload would reach a client
    // as a broken pipe, not as a status).
    let mut stream = tokio::net::TcpStream::connect(&server.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.addr,
        5 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read answer");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .map(str::to_owned);
    assert_eq!(
        status_line.as_deref(),
        Some("HTTP/1.1 413 Payload Too Large")
    );
    drop(stream);
    assert_eq!(server.initialize_status(&[]).await, 200);

    // A client that sends the whole body at once, with a Content-Length or chunked, reads
    // the 413 too; and the server keeps serving.
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping",
                      "params": {"pad": "x".repeat(5 * 1024 * 1024)}})
    .to_string();
    assert_eq!(server.post(body.clone(), &[]).await.status(), 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    assert_eq!(server.post(chunked, &[]).await.status(), 413);
    assert_eq!(server.initialize_status(&[]).await, 200);
}

/// A prompt whose turn runs a command that marks its start in `dir` and waits for
/// `dir/release` to appear.
fn held_turn(dir: &std::path::Path) -> String {
    format!(
        "shell: cd {} && mktemp started-XXXXXXXX >/dev/null && while [ ! -e release ]; do sleep 0.05; done && echo released",
        dir.display()
    )
}

/// Waits until `count` turns have marked their start in `dir` (`mktemp` names, since every
/// sandboxed shell has the same pid inside its own PID namespace).
async fn wait_for_started(dir: &std::path::Path, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let started = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
            .count();
        if started >= count {
            assert_eq!(started, count, "more turns started than expected");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {started} of {count} turns started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_running_turns_a_call_gets_the_capacity_error_at_once() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    append_config(&env, "[server]\nmax_running_turns = 16\n");
    let server = HttpServerProcess::spawn(&env, &["-c", "approval_policy=\"never\""]);
    let client = std::sync::Arc::new(server.client(Era::Stateless2026, None).await);
    let prompt = held_turn(&env.project);
    let mut running = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let arguments = json!({"prompt": prompt, "cwd": env.project});
        running.push(tokio::spawn(async move {
            client.call("baton", arguments).await
        }));
    }
    wait_for_started(&env.project, 16).await;
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.tool_error("baton", json!({"prompt": "one more", "cwd": env.project})),
    )
    .await
    .expect("the 17th call is answered at once, not queued");
    assert!(refused.contains("at capacity"), "{refused}");

    std::fs::write(env.project.join("release"), "").expect("release");
    for call in running {
        let result = tokio::time::timeout(std::time::Duration::from_secs(120), call)
            .await
            .expect("every held turn finishes")
            .expect("task");
        let (_, answer) = common::http::turn_output(&result);
        assert!(answer.ends_with("released"), "{answer}");
    }
    // Slots are free again.
    client
        .start(json!({"prompt": "after", "cwd": env.project}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_lets_a_running_turn_finish_within_the_grace() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let mut server = HttpServerProcess::spawn(&env, &["-c", "approval_policy=\"never\""]);
    let client = std::sync::Arc::new(server.client(Era::Sessions2025, None).await);
    let call = tokio::spawn({
        let client = client.clone();
        let arguments = json!({"prompt": held_turn(&env.project), "cwd": env.project});
        async move { client.call("baton", arguments).await }
    });
    wait_for_started(&env.project, 1).await;
    server.signal("TERM");
    // The listener closes at once, while the turn still runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&server.addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!call.is_finished());
    std::fs::write(env.project.join("release"), "").expect("release");
    let result = tokio::time::timeout(std::time::Duration::from_secs(60), call)
        .await
        .expect("the turn finishes")
        .expect("task");
    let answer = common::http::turn_output(&result).1;
    assert!(answer.ends_with("released"), "{answer}");
    let status =
        tokio::task::block_in_place(|| server.wait_exit(std::time::Duration::from_secs(30)))
            .expect("the server exits after the drain");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_a_turn_still_running_after_the_grace_and_records_it() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    append_config(&env, "[server]\nshutdown_grace = \"300ms\"\n");
    let mut server = HttpServerProcess::spawn(&env, &["-c", "approval_policy=\"never\""]);
    let client = std::sync::Arc::new(server.client(Era::Stateless2026, None).await);
    let _call = tokio::spawn({
        let client = client.clone();
        let arguments = json!({"prompt": held_turn(&env.project), "cwd": env.project});
        async move { client.try_call("baton", arguments).await }
    });
    wait_for_started(&env.project, 1).await;
    server.signal("TERM");
    let status =
        tokio::task::block_in_place(|| server.wait_exit(std::time::Duration::from_secs(60)))
            .expect("the server exits after the grace");
    assert!(status.success(), "{status:?}");
    let files = env.rollout_files();
    assert_eq!(files.len(), 1);
    let transcript = std::fs::read_to_string(&files[0]).expect("transcript");
    assert!(transcript.contains("\"turn_aborted\""), "{transcript}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_thread_over_http_run_one_after_another_in_arrival_order() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = std::sync::Arc::new(HttpServerProcess::spawn(
        &env,
        &["-c", "approval_policy=\"never\""],
    ));
    let client = std::sync::Arc::new(server.client(Era::Stateless2026, None).await);
    let (thread_id, _) = client
        .start(json!({"prompt": "first", "cwd": env.project}))
        .await;
    let queued = |server: &HttpServerProcess| {
        server
            .stderr_text()
            .matches("baton-reply call queued in arrival order")
            .count()
    };
    let held = held_turn(&env.project);
    let mut calls = Vec::new();
    for (n, prompt) in [held.as_str(), "A", "B", "C"].into_iter().enumerate() {
        let client = client.clone();
        let arguments = json!({"threadId": thread_id, "prompt": prompt});
        calls.push(tokio::spawn(async move {
            client.call("baton-reply", arguments).await
        }));
        // The next call is sent once the server has taken this one in line.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while queued(&server) < n + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "call {n} never queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if n == 0 {
            wait_for_started(&env.project, 1).await;
        }
    }
    std::fs::write(env.project.join("release"), "").expect("release");
    for call in calls {
        let result = tokio::time::timeout(std::time::Duration::from_secs(120), call)
            .await
            .expect("every call finishes")
            .expect("task");
        common::http::turn_output(&result);
    }
    let recalled = client.reply(&thread_id, "RECALL").await;
    assert!(
        recalled.starts_with("recall: first | shell:")
            && recalled.ends_with("| A | B | C (1 tool outputs)"),
        "{recalled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_approvals_and_cancellation_work_over_http_as_on_stdio() {
    use common::mcp::{Elicit, await_call, call_params};
    use rmcp::model::{CallToolRequest, ClientRequest};
    use rmcp::service::PeerRequestOptions;

    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let server = HttpServerProcess::spawn(&env, &[]);
    let (service, client) = server.recording_client(Elicit::Answer("approve")).await;

    // An approval asked by elicitation over the session's SSE stream, and progress.
    let call = |arguments: serde_json::Value| {
        ClientRequest::CallToolRequest(CallToolRequest::new(call_params("baton", arguments)))
    };
    let handle = service
        .send_cancellable_request(
            call(
                json!({"prompt": "shell: touch approved.txt", "cwd": env.project,
                        "approval-policy": "untrusted"}),
            ),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("send");
    let result = await_call(handle).await.expect("result");
    let (thread_id, _) = common::http::turn_output(&result);
    assert_eq!(client.elicitations().len(), 1, "one approval asked");
    assert!(env.project.join("approved.txt").exists());
    assert!(
        client
            .progress_messages()
            .iter()
            .any(|m| m.contains("touch approved.txt")),
        "{:?}",
        client.progress_messages()
    );

    // Cancellation aborts the turn (recorded) and the thread stays usable.
    let handle = service
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(call_params(
                "baton-reply",
                json!({"threadId": thread_id, "prompt": held_turn(&env.project)}),
            ))),
            PeerRequestOptions::no_options(),
        )
        .await
        .expect("send");
    wait_for_started(&env.project, 1).await;
    handle
        .cancel(Some("test cancels".into()))
        .await
        .expect("cancel");
    let path = env.rollout_of(&thread_id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&path)
        .expect("transcript")
        .contains("\"turn_aborted\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no turn_aborted recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let after = service
        .call_tool(call_params(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "still here?"}),
        ))
        .await
        .expect("reply after cancel");
    assert_eq!(common::http::turn_output(&after).1, "echo: still here?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_escalation_still_runs_in_the_sandbox_over_http() {
    use baton_test_support::{RecordedRequest, Reply, ReplyItem};
    use common::mcp::Elicit;

    // `escalate: CMD` asks to run CMD outside the sandbox; the rest is the default script.
    fn script(request: &RecordedRequest) -> Reply {
        if request.last_tool_output().is_none()
            && let Some(command) = request
                .last_user_text()
                .and_then(|t| t.strip_prefix("escalate: ").map(str::to_owned))
        {
            return Reply::Items(vec![ReplyItem::ToolCall {
                name: "shell".into(),
                arguments: json!({"command": ["bash", "-lc", command],
                                  "with_escalated_permissions": true,
                                  "justification": "needs to write outside"}),
            }]);
        }
        default_script(request)
    }
    let model = ScriptedModelServer::start_blocking(script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let outside = env.root.join("escaped.txt");
    let server = HttpServerProcess::spawn(&env, &[]);
    let (service, client) = server.recording_client(Elicit::Answer("approve")).await;
    let result = service
        .call_tool(common::mcp::call_params(
            "baton",
            json!({"prompt": format!("escalate: touch {}", outside.display()),
                   "cwd": env.project, "approval-policy": "on-request"}),
        ))
        .await
        .expect("call");
    let answer = common::http::turn_output(&result).1;
    assert!(
        answer.contains("not allowed over HTTP"),
        "the model is told why: {answer}"
    );
    assert!(client.elicitations().is_empty(), "nobody is asked");
    assert!(
        !outside.exists(),
        "the command did not run outside the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owner_cannot_use_or_end_a_session_it_did_not_create() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model server");
    let env = TestEnv::new(&model, Wire::Responses);
    let alice_token = add_token(&env, "alice");
    let bob_token = add_token(&env, "bob");
    let server = HttpServerProcess::spawn(&env, &[]);
    let alice_auth = format!("Bearer {alice_token}");
    let bob_auth = format!("Bearer {bob_token}");

    let created = server
        .post(
            common::http::initialize_body().to_string(),
            &[("authorization", &alice_auth)],
        )
        .await;
    assert!(created.status().is_success(), "{}", created.status());
    let session = created
        .headers()
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .expect("a 2025-11-25 session id")
        .to_owned();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let version = ("mcp-protocol-version", "2025-11-25");
    let bob = [
        ("authorization", bob_auth.as_str()),
        ("mcp-session-id", session.as_str()),
        version,
    ];
    let refused = server.post(list.clone(), &bob).await;
    assert_eq!(refused.status(), reqwest::StatusCode::NOT_FOUND);
    let deleted = reqwest::Client::new()
        .delete(&server.url)
        .header("authorization", &bob_auth)
        .header("mcp-session-id", &session)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), reqwest::StatusCode::NOT_FOUND);

    // Alice's session is untouched by Bob's attempts.
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let alice = [
        ("authorization", alice_auth.as_str()),
        ("mcp-session-id", session.as_str()),
        version,
    ];
    let accepted = server.post(initialized, &alice).await;
    assert!(accepted.status().is_success(), "{}", accepted.status());
    let listed = server.post(list, &alice).await;
    assert!(listed.status().is_success(), "{}", listed.status());
    let body = listed.text().await.expect("body");
    assert!(body.contains("baton-reply"), "{body}");
}
