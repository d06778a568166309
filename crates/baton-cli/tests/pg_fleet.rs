//! A fleet: two real `baton mcp-server --listen 127.0.0.1:0` processes on one private
//! PostgreSQL cluster, driven by rmcp's HTTP client, with the scripted model server. A session
//! moves between servers with its whole history; one writer per thread across servers; a
//! killed server frees its threads at once; the database going away and coming back; and the
//! password never appears in anything the servers or the CLI print. Skipped (saying so)
//! without PostgreSQL, unless CI=true.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use baton_test_support::{
    PgCluster, RecordedRequest, Reply, ScriptedModelServer, Wire, default_script,
};
use common::http::{Era, HttpClient, HttpServerProcess, turn_output};
use common::mcp::text_of;
use common::{TestEnv, assert_success, stderr, stdout};
use serde_json::json;

/// The default script, except that a prompt starting with `hold:` gets no answer for ten
/// minutes: a turn in flight inside its model request.
fn holding_script(request: &RecordedRequest) -> Reply {
    if request
        .last_user_text()
        .is_some_and(|text| text.starts_with("hold:"))
    {
        return Reply::Stall {
            delay: Duration::from_secs(600),
            then: Box::new(Reply::text("held")),
        };
    }
    default_script(request)
}

/// What every test here starts with: a cluster, the scripted model, a home, and the global
/// flags that put a server on the cluster.
struct Fleet {
    cluster: PgCluster,
    model: ScriptedModelServer,
    env: TestEnv,
    url: String,
}

impl Fleet {
    fn start(test: &str) -> Option<Fleet> {
        let cluster = PgCluster::start_or_skip(test)?;
        let model = ScriptedModelServer::start_blocking(holding_script).expect("model server");
        let env = TestEnv::new(&model, Wire::Responses);
        let url = cluster.url();
        Some(Fleet {
            cluster,
            model,
            env,
            url,
        })
    }

    /// A server on the cluster (the password in the URL) logging at debug level, so that a
    /// password in any log line would show.
    fn server(&self) -> HttpServerProcess {
        HttpServerProcess::spawn_logging(
            &self.env,
            &["--store", &self.url, "-c", "approval_policy=\"never\""],
            "debug",
        )
    }

    /// Fails the test if `text` holds the password.
    fn assert_no_password(&self, what: &str, text: &str) {
        assert!(
            !text.contains(PgCluster::PASSWORD),
            "the database password appears in {what}: {text}"
        );
    }
}

/// A prompt whose turn runs a command that marks its start in `dir` and waits for
/// `dir/release` to appear.
fn held_turn(dir: &Path) -> String {
    format!(
        "shell: cd {} && mktemp started-XXXXXXXX >/dev/null && while [ ! -e release ]; do sleep 0.05; done && echo released",
        dir.display()
    )
}

/// Polls `done` until it holds, failing the test after a generous deadline.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn started_markers(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("started-"))
        .count()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

async fn reply_result(
    client: &HttpClient,
    thread_id: &str,
    prompt: &str,
) -> rmcp::model::CallToolResult {
    client
        .call(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": prompt}),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_on_one_server_continues_on_another_with_its_whole_history() {
    let Some(fleet) = Fleet::start("fleet_session_moves") else {
        return;
    };
    let (a, b) = (fleet.server(), fleet.server());
    let client_a = a.client(Era::Stateless2026, None).await;
    let client_b = b.client(Era::Sessions2025, None).await;
    let project = &fleet.env.project;

    let (thread_id, answer) = client_a
        .start(json!({"prompt": "shell: echo on-server-a", "cwd": project}))
        .await;
    assert!(answer.contains("on-server-a"), "{answer}");

    // On B: the model request carries A's turn (the recall is a function of the request).
    let on_b = client_b.reply(&thread_id, "RECALL").await;
    assert_eq!(on_b, "recall: shell: echo on-server-a (1 tool outputs)");
    let sent = fleet.model.requests();
    let last = sent.last().expect("a request");
    assert!(
        last.body.to_string().contains("on-server-a"),
        "B's request lacks A's turn: {}",
        last.body
    );

    // Back on A, which holds the thread in memory: it notices B's turn and re-reads.
    let on_a = client_a.reply(&thread_id, "RECALL").await;
    assert_eq!(
        on_a,
        "recall: shell: echo on-server-a | RECALL (1 tool outputs)"
    );
    for server in [&a, &b] {
        fleet.assert_no_password("a server's stderr", &server.stderr_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replies_from_two_servers_one_runs_the_other_is_busy_naming_host_and_pid() {
    let Some(fleet) = Fleet::start("fleet_busy") else {
        return;
    };
    let (a, b) = (fleet.server(), fleet.server());
    let client_a = a.client(Era::Stateless2026, None).await;
    let client_b = b.client(Era::Stateless2026, None).await;
    let project = &fleet.env.project;
    let (thread_id, _) = client_a
        .start(json!({"prompt": "first", "cwd": project}))
        .await;

    // The same reply on both servers at once: one takes the thread and waits in its command,
    // the other is refused at once, naming the holder.
    let prompt = held_turn(project);
    let on_a = reply_result(&client_a, &thread_id, &prompt);
    let on_b = reply_result(&client_b, &thread_id, &prompt);
    tokio::pin!(on_a, on_b);
    let (refused, a_refused) = tokio::select! {
        result = &mut on_a => (result, true),
        result = &mut on_b => (result, false),
    };
    let holder_pid = if a_refused { b.pid() } else { a.pid() };
    let message = text_of(&refused);
    assert_eq!(refused.is_error, Some(true), "{message}");
    assert!(message.contains("busy"), "{message}");
    assert!(message.contains(&thread_id), "{message}");
    assert!(
        message.contains(&format!("process {holder_pid}")),
        "the holder's pid {holder_pid}: {message}"
    );
    assert!(
        message.contains(&host_name()),
        "the holder's host: {message}"
    );
    fleet.assert_no_password("the busy error", &message);

    // The holder runs its turn to the end; exactly one turn started.
    wait_until("the running turn's command", || {
        started_markers(project) >= 1
    })
    .await;
    std::fs::write(project.join("release"), "").expect("release");
    let ran = if a_refused { on_b.await } else { on_a.await };
    let (_, answer) = turn_output(&ran);
    assert!(answer.ends_with("released"), "{answer}");
    assert_eq!(
        started_markers(project),
        1,
        "only one of the two replies ran"
    );

    // The refused server continues the thread now, with the other's turn in its history.
    let refused_client = if a_refused { &client_a } else { &client_b };
    let recalled = refused_client.reply(&thread_id, "RECALL").await;
    assert_eq!(
        recalled,
        format!("recall: first | {prompt} (1 tool outputs)")
    );
    for server in [&a, &b] {
        fleet.assert_no_password("a server's stderr", &server.stderr_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_turn_frees_the_thread_and_another_continues_it() {
    let Some(fleet) = Fleet::start("fleet_kill_9") else {
        return;
    };
    let (a, b) = (fleet.server(), fleet.server());
    let client_a = a.client(Era::Stateless2026, None).await;
    let client_b = b.client(Era::Stateless2026, None).await;
    let project = &fleet.env.project;
    let (thread_id, _) = client_a
        .start(json!({"prompt": "first", "cwd": project}))
        .await;

    // A's turn is in flight: its model request is held by the scripted model.
    let id = thread_id.clone();
    let in_flight = tokio::spawn(async move {
        client_a
            .try_call(
                "baton-reply",
                json!({"threadId": id, "prompt": "hold: on server A"}),
            )
            .await
    });
    wait_until("A's model request", || {
        fleet
            .model
            .requests()
            .iter()
            .any(|request| request.last_user_text().as_deref() == Some("hold: on server A"))
    })
    .await;
    let a_stderr = a.stderr_text();
    a.kill_9();
    let killed = Instant::now();

    // B continues at once (a "busy" answer would mean the lock outlived A; count them).
    let mut busy_answers = 0;
    let recalled = loop {
        let result = reply_result(&client_b, &thread_id, "RECALL").await;
        let text = text_of(&result);
        if result.is_error == Some(true) && text.contains("busy") {
            busy_answers += 1;
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "A's lock outlived it: {text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        break turn_output(&result).1;
    };
    let took = killed.elapsed();
    eprintln!(
        "FIGURE: B continued the session {} ms after kill -9 of A ({busy_answers} busy answers first)",
        took.as_millis()
    );
    // A's interrupted prompt was committed before its model request: it stays in history.
    assert_eq!(
        recalled,
        "recall: first | hold: on server A (0 tool outputs)"
    );
    assert!(
        in_flight.await.expect("task").is_err(),
        "A's call cannot have succeeded"
    );
    fleet.assert_no_password("A's stderr", &a_stderr);
    fleet.assert_no_password("B's stderr", &b.stderr_text());
}

/// Every line of thread `id` in the cluster's lines table, as JSONL.
fn committed_lines(cluster: &PgCluster, id: &str) -> String {
    cluster.psql(
        PgCluster::DATABASE,
        &format!(
            "SELECT string_agg(text, E'\\n' ORDER BY seq) FROM lines WHERE thread_id = '{id}'"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_fails_calls_clearly_and_the_server_recovers_by_itself() {
    let Some(mut fleet) = Fleet::start("fleet_database_down") else {
        return;
    };
    let server = fleet.server();
    let client = server.client(Era::Stateless2026, None).await;
    let project = fleet.env.project.clone();
    let port = fleet.cluster.port();
    let named = format!("127.0.0.1:{port}");
    let (thread_id, _) = client
        .start(json!({"prompt": "before the outage", "cwd": project}))
        .await;

    // PostgreSQL stopped: each call is a clear error naming host and port, not the password;
    // the server still answers.
    fleet.cluster.stop();
    let mut printed = Vec::new();
    for (tool, arguments) in [
        (
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "during the outage"}),
        ),
        (
            "baton",
            json!({"prompt": "new during the outage", "cwd": project}),
        ),
        ("baton-sessions", json!({})),
    ] {
        let error = client.tool_error(tool, arguments).await;
        assert!(error.contains(&named), "{tool}: {error}");
        assert!(error.contains("is PostgreSQL running"), "{tool}: {error}");
        printed.push(error);
    }
    let tools = client.service.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|tool| tool.name == "baton-reply"));
    let cli_down = fleet.env.run(&["--store", &fleet.url, "sessions", "list"]);
    assert_eq!(cli_down.status.code(), Some(1));
    assert!(stderr(&cli_down).contains(&named), "{}", stderr(&cli_down));
    printed.push(stderr(&cli_down));

    // Started again: the next call works, without restarting baton.
    fleet.cluster.restart();
    assert_eq!(
        client.reply(&thread_id, "RECALL").await,
        "recall: before the outage (0 tool outputs)"
    );

    // Restarted in the middle of a turn (inside its command): the turn fails cleanly, every
    // line committed before is still there, and the next call continues the session.
    let prompt = held_turn(&project);
    let id = thread_id.clone();
    let turn_prompt = prompt.clone();
    let client = std::sync::Arc::new(client);
    let running = {
        let client = client.clone();
        tokio::spawn(async move { reply_result(&client, &id, &turn_prompt).await })
    };
    wait_until("the turn's command", || started_markers(&project) >= 1).await;
    let before = committed_lines(&fleet.cluster, &thread_id);
    assert!(before.contains("function_call"), "{before}");
    fleet.cluster.restart();
    std::fs::write(project.join("release"), "").expect("release");
    let failed = running.await.expect("task");
    let error = text_of(&failed);
    assert_eq!(failed.is_error, Some(true), "{error}");
    assert!(error.contains(&named), "{error}");
    assert!(error.contains("lock was lost"), "{error}");
    printed.push(error);
    let after = committed_lines(&fleet.cluster, &thread_id);
    assert!(
        after.starts_with(&before),
        "committed lines changed:\nbefore: {before}\nafter: {after}"
    );
    assert_eq!(
        client.reply(&thread_id, "RECALL").await,
        format!("recall: before the outage | RECALL | {prompt} (1 tool outputs)")
    );

    // Nothing printed the password: tool errors, the server's log, the CLI (listing, showing,
    // exporting and an error).
    let exported = fleet
        .env
        .run(&["--store", &fleet.url, "sessions", "export", &thread_id]);
    assert_success(&exported);
    assert_eq!(
        stdout(&exported).trim_end(),
        committed_lines(&fleet.cluster, &thread_id)
    );
    let mut outputs = vec![exported];
    for args in [
        vec!["sessions", "list"],
        vec!["sessions", "list", "--json"],
        vec!["sessions", "show", &thread_id],
        vec!["sessions", "show", "019c0000-0000-7000-8000-000000000000"],
    ] {
        let mut command = vec!["--store", &fleet.url];
        command.extend(args);
        outputs.push(
            fleet
                .env
                .baton()
                .env("RUST_LOG", "debug")
                .args(&command)
                .output()
                .expect("run baton"),
        );
    }
    assert!(stdout(&outputs[1]).contains(&thread_id));
    for output in &outputs {
        printed.push(stdout(output));
        printed.push(stderr(output));
    }
    printed.push(server.stderr_text());
    for text in &printed {
        fleet.assert_no_password("baton's output", text);
    }
}

/// A server started while PostgreSQL is down starts anyway (a client that launches it then
/// keeps it), answers `tools/list`, fails calls with the database's host and port, and serves
/// them once the database is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_the_database_is_down_serves_once_it_is_back() {
    let Some(mut fleet) = Fleet::start("fleet_started_while_down") else {
        return;
    };
    let named = format!("127.0.0.1:{}", fleet.cluster.port());
    fleet.cluster.stop();
    let server = fleet.server();
    let client = server.client(Era::Stateless2026, None).await;
    let tools = client.service.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|tool| tool.name == "baton"));
    let project = fleet.env.project.clone();
    let error = client
        .tool_error("baton", json!({"prompt": "while down", "cwd": project}))
        .await;
    assert!(error.contains(&named), "{error}");
    assert!(error.contains("is PostgreSQL running"), "{error}");

    fleet.cluster.restart();
    let (thread_id, answer) = client
        .start(json!({"prompt": "once it is back", "cwd": project}))
        .await;
    assert_eq!(answer, "echo: once it is back");
    let stored = fleet.cluster.psql(
        PgCluster::DATABASE,
        &format!("SELECT count(*) FROM threads WHERE id = '{thread_id}'"),
    );
    assert_eq!(stored, "1");
    fleet.assert_no_password("the server's stderr", &server.stderr_text());
}
