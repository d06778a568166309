//! Durable MCP tasks (the `io.modelcontextprotocol/tasks` extension, 2026-07-28): a turn that
//! outlives the request, the connection and the process that ran it. Real binary, real rmcp
//! client over stdio and HTTP, scripted model.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use baton_test_support::{Gate, RecordedRequest, Reply, ScriptedModelServer, Wire, default_script};
use common::http::{Era, HttpServerProcess};
use common::mcp::{kill_9_and_wait, processes_matching};
use common::tasks::{TaskSession, approve, completed_result, eventually, input_request};
use common::*;
use rmcp::model::TaskStatus;
use serde_json::{Value, json};

/// The model holds requests whose prompt starts with `held:` at `gate` (the test opens it, or
/// kills the server meanwhile); everything else follows the default script.
fn held_script(gate: Gate) -> impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static {
    move |request| {
        let prompt = request.last_user_text().unwrap_or_default();
        match prompt.strip_prefix("held:") {
            Some(rest) if request.last_tool_output().is_none() => Reply::Hold {
                gate: gate.clone(),
                then: Box::new(Reply::text(format!("done: {}", rest.trim()))),
            },
            _ => default_script(request),
        }
    }
}

/// The first model request is held forever (its server is killed while it waits); every later
/// one (the resumed turn's) is answered by `later`.
fn held_once_then(
    later: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
) -> impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static {
    let held = held_script(Gate::new());
    let requests = AtomicUsize::new(0);
    move |request| {
        if requests.fetch_add(1, Ordering::SeqCst) == 0 {
            held(request)
        } else {
            later(request)
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Stdio,
    Http,
}

/// A server of `env` on `transport` with a task client connected: `(client, http server)`.
async fn serve(env: &TestEnv, transport: Transport) -> (TaskSession, Option<HttpServerProcess>) {
    match transport {
        Transport::Stdio => (TaskSession::stdio(env).await, None),
        Transport::Http => {
            let server = HttpServerProcess::spawn(env, &[]);
            (TaskSession::http(&server, None).await, Some(server))
        }
    }
}

/// kill -9 of the server behind `client`.
fn kill_9(client: &TaskSession, http: Option<HttpServerProcess>) {
    match http {
        Some(server) => server.kill_9(),
        None => kill_9_and_wait(client.pid.expect("stdio pid")),
    }
}

fn transcript_lines(env: &TestEnv, thread_id: &str) -> Vec<Value> {
    parse_complete_lines(&env.rollout_of(thread_id))
}

/// The user messages of the transcript's conversation with exactly this text.
fn user_messages(lines: &[Value], text: &str) -> usize {
    lines
        .iter()
        .filter(|line| {
            line["type"] == "response_item"
                && line["payload"]["role"] == "user"
                && line["payload"]["content"][0]["text"] == text
        })
        .count()
}

fn is_hex_64(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_augmented_call_returns_a_task_at_once_and_completes_with_the_call_result() {
    for transport in [Transport::Stdio, Transport::Http] {
        let gate = Gate::new();
        let model = ScriptedModelServer::start_blocking(held_script(gate.clone())).expect("model");
        let env = TestEnv::new(&model, Wire::Responses);
        let (client, http) = serve(&env, transport).await;

        // The model holds the request: the task comes back while the turn cannot have ended.
        let created = client
            .call_task(
                "baton",
                json!({"prompt": "held: the work", "cwd": env.project}),
            )
            .await;
        let task = &created.task;
        assert!(is_hex_64(&task.task_id), "{transport:?}: {}", task.task_id);
        assert_eq!(task.status, TaskStatus::Working);
        assert!(
            task.ttl_ms.is_some_and(|ttl| ttl >= 24 * 3600 * 1000),
            "{task:?}"
        );
        assert!(task.poll_interval_ms.is_some(), "{task:?}");
        eventually("the model request", || !model.requests().is_empty()).await;
        let working = client.get(&task.task_id).await;
        assert_eq!(working.task.status(), TaskStatus::Working);
        assert_eq!(
            working.task.task.status_message.as_deref(),
            Some("waiting for the model"),
            "{transport:?}"
        );

        gate.open();
        let done = client.wait_for(&task.task_id, TaskStatus::Completed).await;
        let result = completed_result(&done);
        assert_eq!(result["structuredContent"]["content"], "done: the work");
        assert_eq!(result["content"][0]["text"], "done: the work");
        let thread_id = result["structuredContent"]["threadId"]
            .as_str()
            .expect("threadId")
            .to_owned();
        assert!(result["structuredContent"]["usage"].is_object(), "{result}");

        // The same shape as the synchronous call returns to a client without the extension.
        let plain = match &http {
            Some(server) => {
                let plain = server.client(Era::Stateless2026, None).await;
                plain
                    .call(
                        "baton",
                        json!({"prompt": "held: again", "cwd": env.project}),
                    )
                    .await
            }
            None => {
                let plain = common::mcp::McpProcess::spawn(&env).await;
                plain
                    .call(
                        "baton",
                        json!({"prompt": "held: again", "cwd": env.project}),
                    )
                    .await
            }
        };
        let plain = serde_json::to_value(&plain).expect("result as JSON");
        // `resultType` is the 2026-07-28 wire's discriminator, which rmcp's client type drops.
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|o| o.keys().filter(|k| *k != "resultType").cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(keys(&plain), keys(&result), "{plain} vs {result}");
        assert_eq!(
            keys(&plain["structuredContent"]),
            keys(&result["structuredContent"])
        );

        // The task is on disk: a later turn on the thread continues it as usual.
        let lines = transcript_lines(&env, &thread_id);
        assert!(
            lines
                .iter()
                .any(|l| l["payload"]["type"] == "baton_task"
                    && l["payload"]["state"] == "completed"),
            "{transport:?}: no completed task in the transcript"
        );
        drop(http);
    }
}

/// kill -9 while the task's model request is in flight; a new process on the same store
/// finishes the task on `tasks/get`, with one user message and the final answer.
async fn a_task_survives_kill_9(transport: Transport, delete_index: bool) {
    let script = held_once_then(
        move |request: &RecordedRequest| match request.last_user_text() {
            Some(text) if text.starts_with("held:") => {
                Reply::text(format!("finished after resume: {text}"))
            }
            _ => default_script(request),
        },
    );
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let (first, http) = serve(&env, transport).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "held: survive", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the model request", || !model.requests().is_empty()).await;
    kill_9(&first, http);
    drop(first);
    if delete_index {
        std::fs::remove_file(env.home.join("state.sqlite")).expect("delete the index");
    }

    let (second, http) = serve(&env, transport).await;
    let resumed = second.get(&task_id).await;
    if delete_index {
        // Without the index only this `tasks/get` can find the task: it resumes it and says so.
        assert_eq!(resumed.task.status(), TaskStatus::Working, "{resumed:?}");
        assert!(
            resumed
                .task
                .task
                .status_message
                .as_deref()
                .is_some_and(|m| m.starts_with("resumed after the process running it stopped")),
            "{resumed:?}"
        );
    } else {
        // With the index the new server may have continued it at start-up already.
        assert_ne!(resumed.task.status(), TaskStatus::Failed, "{resumed:?}");
    }
    let done = second.wait_for(&task_id, TaskStatus::Completed).await;
    let result = completed_result(&done);
    assert_eq!(
        result["structuredContent"]["content"], "finished after resume: held: survive",
        "{result}"
    );
    let thread_id = result["structuredContent"]["threadId"]
        .as_str()
        .expect("threadId")
        .to_owned();
    let lines = transcript_lines(&env, &thread_id);
    assert_eq!(
        user_messages(&lines, "held: survive"),
        1,
        "one user message for the turn"
    );
    assert!(lines.iter().any(|l| l["payload"]["type"] == "agent_message"
        && l["payload"]["message"] == "finished after resume: held: survive"));
    assert!(
        lines.iter().any(|l| l["payload"]["type"] == "baton_task"
            && l["payload"]["resumed"] == 1
            && l["payload"]["status_message"]
                .as_str()
                .is_some_and(|m| m.contains("resumed"))),
        "the resumption is recorded"
    );

    // The thread goes on as any other.
    let next = second
        .call_task(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "RECALL"}),
        )
        .await;
    let recalled = completed_result(
        &second
            .wait_for(&next.task.task_id, TaskStatus::Completed)
            .await,
    );
    assert_eq!(
        recalled["structuredContent"]["content"], "recall: held: survive (0 tool outputs)",
        "{recalled}"
    );
    drop(http);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_kill_9_of_its_http_server_mid_model_request() {
    a_task_survives_kill_9(Transport::Http, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_survives_kill_9_of_its_stdio_server_with_the_index_deleted() {
    a_task_survives_kill_9(Transport::Stdio, true).await;
}

/// kill -9 during a slow shell command: the command is recorded as aborted, the model is asked
/// again and runs it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_killed_with_its_server_is_recorded_as_aborted_and_run_again() {
    let script = |request: &RecordedRequest| match request.last_tool_output() {
        Some(output) if output.starts_with("aborted: baton stopped") => Reply::tool_call(
            "shell",
            json!({"command": ["bash", "-lc", "echo again > again.txt"]}),
        ),
        _ => default_script(request),
    };
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "shell: touch started.txt; sleep 876543 & wait", "cwd": env.project,
                   "approval-policy": "never"}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    let started = env.project.join("started.txt");
    eventually("the command to start", || started.exists()).await;
    let running = first.get(&task_id).await;
    assert!(
        running
            .task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("running: ")),
        "{running:?}"
    );
    // `touch` ran, but the shell may be mid-exec of `sleep` (its command line reads empty
    // for that moment): look until it shows.
    eventually("the sleep to show in /proc", || {
        !processes_matching("sleep 876543").is_empty()
    })
    .await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);
    // The command dies with its server: it would otherwise run beside the resumed turn.
    eventually("the command to die with its server", || {
        processes_matching("sleep 876543").is_empty()
    })
    .await;

    let second = TaskSession::stdio(&env).await;
    let done = second.wait_for(&task_id, TaskStatus::Completed).await;
    let result = completed_result(&done);
    assert!(
        result["structuredContent"]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("tool output: Exit code: 0")),
        "{result}"
    );
    assert!(
        env.project.join("again.txt").exists(),
        "the model ran the command again"
    );
    let thread_id = result["structuredContent"]["threadId"]
        .as_str()
        .expect("threadId");
    let outputs: Vec<String> = transcript_lines(&env, thread_id)
        .iter()
        .filter(|l| l["payload"]["type"] == "function_call_output")
        .map(|l| {
            l["payload"]["output"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    assert!(
        outputs[0].starts_with("aborted: baton stopped"),
        "{outputs:?}"
    );
}

/// An approval surfaces as `input_required`; after kill -9 a new server asks the same question,
/// and its answer runs the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_is_asked_again_after_a_restart_and_answered_by_tasks_update() {
    let script = |request: &RecordedRequest| {
        if request.last_tool_output().is_none()
            && request.last_user_text().as_deref() == Some("please create it")
        {
            // Under on-request, running outside the sandbox needs the person's approval.
            return Reply::tool_call(
                "shell",
                json!({"command": ["bash", "-lc", "touch approved.txt"],
                       "with_escalated_permissions": true,
                       "justification": "needs to write outside the sandbox"}),
            );
        }
        default_script(request)
    };
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "please create it", "cwd": env.project,
                   "approval-policy": "on-request"}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    let asked = first.wait_for(&task_id, TaskStatus::InputRequired).await;
    let status = asked
        .task
        .task
        .status_message
        .as_deref()
        .unwrap_or_default();
    assert!(
        status.starts_with("waiting for approval to run `bash -lc touch approved.txt`"),
        "{status}"
    );
    let (key, question) = input_request(&asked);
    assert_eq!(question["method"], "elicitation/create", "{question}");
    let message = question["params"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("touch approved.txt"), "{message}");
    assert_eq!(
        question["params"]["requestedSchema"]["required"],
        json!(["decision"])
    );
    // Another process cannot deliver the answer: it says where the task runs rather than
    // dropping the answer while the task keeps waiting.
    let other = TaskSession::stdio(&env).await;
    let refused = other
        .try_update(&task_id, &key, approve())
        .await
        .expect_err("the answer cannot reach the process that waits for it");
    assert!(
        refused
            .to_string()
            .contains("runs in another baton process"),
        "{refused}"
    );
    drop(other);
    assert_eq!(
        first.get(&task_id).await.task.status(),
        TaskStatus::InputRequired
    );
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);

    let second = TaskSession::stdio(&env).await;
    let asked_again = second.wait_for(&task_id, TaskStatus::InputRequired).await;
    let (key_again, question_again) = input_request(&asked_again);
    assert_eq!(key_again, key);
    assert_eq!(question_again["params"]["message"], message.as_str());
    assert!(!env.project.join("approved.txt").exists());

    // Unknown keys are ignored; the right one runs the command.
    second.update(&task_id, "no-such-key", approve()).await;
    second.update(&task_id, &key, approve()).await;
    let done = second.wait_for(&task_id, TaskStatus::Completed).await;
    assert!(env.project.join("approved.txt").exists());
    let result = completed_result(&done);
    assert_eq!(result["isError"], false, "{result}");
}

/// `tasks/cancel` aborts the turn: its processes are killed, the task is `cancelled`, and the
/// thread stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_cancel_aborts_the_turn_and_the_thread_stays_usable() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let client = TaskSession::stdio(&env).await;
    let created = client
        .call_task(
            "baton",
            json!({"prompt": "shell: touch started.txt; sleep 765432", "cwd": env.project,
                   "approval-policy": "never"}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    let started = env.project.join("started.txt");
    eventually("the command to start", || started.exists()).await;
    // `touch` ran, but the shell may be mid-exec of `sleep` (its command line reads empty
    // for that moment): look until it shows.
    eventually("the sleep to show in /proc", || {
        !processes_matching("sleep 765432").is_empty()
    })
    .await;
    client.try_cancel(&task_id).await.expect("tasks/cancel");
    client.wait_for(&task_id, TaskStatus::Cancelled).await;
    assert!(
        processes_matching("sleep 765432").is_empty(),
        "the command's process is gone"
    );
    // Cancelling again is a no-op, not an error.
    client
        .try_cancel(&task_id)
        .await
        .expect("second tasks/cancel");

    let thread_id = {
        let lines: Vec<Value> = env
            .rollout_files()
            .iter()
            .flat_map(|path| parse_complete_lines(path))
            .collect();
        assert!(lines.iter().any(|l| l["payload"]["type"] == "turn_aborted"));
        lines[0]["payload"]["id"].as_str().expect("id").to_owned()
    };
    let next = client
        .call_task(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "after"}),
        )
        .await;
    let done = client
        .wait_for(&next.task.task_id, TaskStatus::Completed)
        .await;
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "echo: after"
    );
}

/// Over HTTP a task belongs to its token's owner: for anyone else it does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_one_owner_is_not_found_for_another() {
    let gate = Gate::new();
    let model = ScriptedModelServer::start_blocking(held_script(gate.clone())).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let add_token = |owner: &str| {
        let output = env.run(&["server", "add-token", owner]);
        assert_success(&output);
        stdout(&output).trim().to_owned()
    };
    let alice_token = add_token("alice");
    let bob_token = add_token("bob");
    let server = HttpServerProcess::spawn(&env, &[]);
    let alice = TaskSession::http(&server, Some(&alice_token)).await;
    let bob = TaskSession::http(&server, Some(&bob_token)).await;
    let created = alice
        .call_task(
            "baton",
            json!({"prompt": "held: private", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();

    let bob_get = bob
        .try_get(&task_id)
        .await
        .expect_err("bob must not see it");
    let unknown = format!("{}{}", &task_id[..32], "0".repeat(32));
    let unknown_get = alice.try_get(&unknown).await.expect_err("unknown task");
    let shape = |err: &rmcp::service::ServiceError| {
        err.to_string()
            .replace(&task_id, "ID")
            .replace(&unknown, "ID")
    };
    assert_eq!(
        shape(&bob_get),
        shape(&unknown_get),
        "exactly like an unknown id"
    );
    assert!(bob.try_cancel(&task_id).await.is_err());
    assert_eq!(alice.get(&task_id).await.task.status(), TaskStatus::Working);

    gate.open();
    alice.wait_for(&task_id, TaskStatus::Completed).await;
}

/// A task whose server is killed during the turn four times in a row fails with the reason
/// instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_four_times_fails_with_the_reason() {
    // Never opened: every model request hangs until its server is killed.
    let gate = Gate::new();
    let model = ScriptedModelServer::start_blocking(held_script(gate.clone())).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "held: doomed", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the first model request", || model.requests().len() == 1).await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);
    for kill in 2..=4 {
        let next = TaskSession::stdio(&env).await;
        let resumed = next.get(&task_id).await;
        assert_eq!(resumed.task.status(), TaskStatus::Working, "{resumed:?}");
        eventually("the resumed model request", || {
            model.requests().len() == kill
        })
        .await;
        kill_9_and_wait(next.pid.expect("pid"));
    }
    let last = TaskSession::stdio(&env).await;
    let failed = last.wait_for(&task_id, TaskStatus::Failed).await;
    let error = serde_json::to_value(&failed).expect("JSON");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("resumed 3 times")),
        "{error}"
    );
    assert_eq!(model.requests().len(), 4, "no fifth attempt");
}

/// A call on the thread of a task whose process died continues that task first: the task
/// completes, and the new turn sees the finished one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_on_the_thread_of_an_orphaned_task_finishes_the_task_first() {
    let script = held_once_then(
        move |request: &RecordedRequest| match request.last_user_text() {
            Some(text) if text.starts_with("held:") => {
                Reply::text(format!("finished after resume: {text}"))
            }
            _ => default_script(request),
        },
    );
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "held: orphan", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the model request", || !model.requests().is_empty()).await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);
    let thread_id = {
        let files = env.rollout_files();
        let lines = parse_complete_lines(&files[0]);
        lines[0]["payload"]["id"].as_str().expect("id").to_owned()
    };

    // A client without tasks continues the thread: the task's turn is finished first.
    let plain = common::mcp::McpProcess::spawn(&env).await;
    let recalled = plain.reply(&thread_id, "RECALL").await;
    assert_eq!(recalled, "recall: held: orphan (0 tool outputs)");
    let lines = transcript_lines(&env, &thread_id);
    assert_eq!(user_messages(&lines, "held: orphan"), 1);
    assert!(lines.iter().any(|l| l["payload"]["type"] == "agent_message"
        && l["payload"]["message"] == "finished after resume: held: orphan"));
    drop(plain);

    let later = TaskSession::stdio(&env).await;
    let done = later.get(&task_id).await;
    assert_eq!(done.task.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "finished after resume: held: orphan"
    );
}

/// SIGTERM: once the shutdown grace is over the server aborts the task's turn, but the client
/// did not cancel it, so the task stays unfinished and the next server continues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_interrupted_by_a_server_shutdown_is_continued_by_the_next_server() {
    let script =
        held_once_then(move |_: &RecordedRequest| Reply::text("finished by the next server"));
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let config = env.home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[server]\nshutdown_grace = \"200ms\"\n");
    std::fs::write(&config, text).expect("config");

    let mut server = HttpServerProcess::spawn(&env, &[]);
    let client = TaskSession::http(&server, None).await;
    let created = client
        .call_task(
            "baton",
            json!({"prompt": "held: shutdown", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the model request", || !model.requests().is_empty()).await;
    server.signal("TERM");
    let status =
        tokio::task::block_in_place(|| server.wait_exit(std::time::Duration::from_secs(60)))
            .expect("the server exits after the grace");
    assert!(status.success(), "{status:?}");
    drop(client);
    let interrupted = env
        .rollout_files()
        .iter()
        .flat_map(|path| parse_complete_lines(path))
        .rfind(|l| l["payload"]["type"] == "baton_task")
        .expect("task events");
    assert_eq!(interrupted["payload"]["state"], "working", "{interrupted}");

    let next = HttpServerProcess::spawn(&env, &[]);
    let client = TaskSession::http(&next, None).await;
    let done = client.wait_for(&task_id, TaskStatus::Completed).await;
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "finished by the next server"
    );
}

/// A process killed after it wrote a task but before its turn recorded the prompt (the next
/// line) leaves a task with nothing to continue: it fails saying so, rather than completing
/// with the previous turn's answer, and the thread goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_prompt_was_never_recorded_fails_instead_of_answering_from_the_last_turn() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let (thread_id, _) = env.exec_ok("first prompt");
    // What the dead process left: its `baton-reply` task, and nothing after it.
    let task_id = format!("{}{}", thread_id.replace('-', ""), "5a".repeat(16));
    let at = "2026-12-02T12:00:00.000Z";
    let created = json!({"timestamp": at, "type": "event_msg", "payload": {
        "type": "baton_task", "task_id": task_id, "state": "working", "at": at,
        "tool": "baton-reply", "ttl_ms": 86_400_000u64, "status_message": "started"}});
    let rollout = env.rollout_of(&thread_id);
    let mut text = std::fs::read_to_string(&rollout).expect("transcript");
    text.push_str(&format!("{created}\n"));
    std::fs::write(&rollout, text).expect("transcript");
    let requests = model.requests().len();

    let client = TaskSession::stdio(&env).await;
    let failed = client.wait_for(&task_id, TaskStatus::Failed).await;
    let failed = serde_json::to_value(&failed).expect("JSON");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("before it recorded the prompt")),
        "{failed}"
    );
    assert_eq!(model.requests().len(), requests, "the model was not asked");
    drop(client);

    let resumed = env.run(&["exec", "resume", &thread_id, "RECALL"]);
    assert_success(&resumed);
    assert_eq!(
        stdout(&resumed).trim(),
        "recall: first prompt (0 tool outputs)"
    );
}

/// Malformed params of the task methods (a task id that is not a string, `inputResponses`
/// that is not an object or holds thousands of answers, no params) are -32602, not "method
/// not found"; a well-formed unknown id is "not found" (-32602 too), and the server keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_task_requests_are_invalid_params() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let mut raw = common::mcp::RawMcp::spawn(&env);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw-task-test", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        }
    });
    let unknown = "0".repeat(64);
    let created = raw
        .request(
            1000,
            "tools/call",
            json!({"name": "baton", "arguments": {"prompt": "hi", "cwd": env.project},
                   "_meta": meta}),
        )
        .await;
    let known = created["result"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("a task: {created}"))
        .to_owned();
    let cases = [
        ("tasks/get", json!({"taskId": 42, "_meta": meta})),
        ("tasks/get", json!({"_meta": meta})),
        ("tasks/cancel", json!({"taskId": null, "_meta": meta})),
        (
            "tasks/update",
            json!({"taskId": unknown, "inputResponses": [1, 2], "_meta": meta}),
        ),
        ("tasks/get", json!({"taskId": unknown, "_meta": meta})),
        (
            "tasks/get",
            json!({"taskId": "x".repeat(1 << 20), "_meta": meta}),
        ),
        // Each answer costs a look-up of the task: thousands in one request are refused.
        (
            "tasks/update",
            json!({"taskId": known, "_meta": meta, "inputResponses": (0..5000)
                .map(|i| (format!("k{i}"), json!({"action": "accept"})))
                .collect::<serde_json::Map<String, Value>>()}),
        ),
    ];
    for (id, (method, params)) in (1..).zip(cases) {
        let answer = raw.request(id, method, params).await;
        assert_eq!(answer["error"]["code"], -32602, "{method}: {answer}");
        assert!(
            answer.to_string().len() < 4096,
            "a huge id is not echoed whole: {} bytes",
            answer.to_string().len()
        );
    }
    let tools = raw.request(100, "tools/list", json!({"_meta": meta})).await;
    assert!(tools["result"]["tools"].is_array(), "{tools}");
}

/// A call on the thread of a task that waited for an approval when its process died drives
/// that task's turn: the question goes to this caller (here it approves), never to a
/// `tasks/update` that no one may send, so the call does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_on_the_thread_of_a_task_waiting_for_approval_asks_its_own_client() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "shell: touch approved.txt", "cwd": env.project,
                   "approval-policy": "untrusted"}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    first.wait_for(&task_id, TaskStatus::InputRequired).await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);
    let thread_id = {
        let files = env.rollout_files();
        let lines = parse_complete_lines(&files[0]);
        lines[0]["payload"]["id"].as_str().expect("id").to_owned()
    };

    let plain =
        common::mcp::McpProcess::spawn_with(&env, common::mcp::Elicit::Answer("approve")).await;
    let recalled = tokio::time::timeout(
        common::tasks::TASK_DEADLINE,
        plain.reply(&thread_id, "RECALL"),
    )
    .await
    .expect("the reply does not wait for a tasks/update");
    assert_eq!(
        recalled,
        "recall: shell: touch approved.txt (1 tool outputs)"
    );
    let asked = plain.elicitations();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0].to_string().contains("touch approved.txt"),
        "{asked:?}"
    );
    assert!(env.project.join("approved.txt").exists());
    drop(plain);

    let later = TaskSession::stdio(&env).await;
    let done = later.wait_for(&task_id, TaskStatus::Completed).await;
    assert_eq!(completed_result(&done)["isError"], false, "{done:?}");
}

/// A task whose process died after its answer was recorded but before the task was marked
/// completed, with another turn run on the thread since: the task's result is its own
/// answer, not the later turn's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_answered_before_its_process_died_keeps_its_answer_after_later_turns() {
    let model = ScriptedModelServer::start_blocking(default_script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task("baton", json!({"prompt": "first", "cwd": env.project}))
        .await;
    let task_id = created.task.task_id.clone();
    let done = first.wait_for(&task_id, TaskStatus::Completed).await;
    let thread_id = completed_result(&done)["structuredContent"]["threadId"]
        .as_str()
        .expect("threadId")
        .to_owned();
    drop(first);
    // What a kill -9 just before the last line leaves: the answer, not the task's end.
    let rollout = env.rollout_of(&thread_id);
    let text = std::fs::read_to_string(&rollout).expect("transcript");
    let (kept, last) = text
        .trim_end()
        .rsplit_once('\n')
        .expect("more than one line");
    assert!(last.contains("\"completed\""), "{last}");
    std::fs::write(&rollout, format!("{kept}\n")).expect("transcript");

    let later = env.run(&["exec", "resume", &thread_id, "second"]);
    assert_success(&later);
    let client = TaskSession::stdio(&env).await;
    let done = client.wait_for(&task_id, TaskStatus::Completed).await;
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "echo: first"
    );
}

/// A task whose process died mid-turn, after which another turn ran on the thread without
/// continuing it (`exec resume`): the task cannot be continued any more and fails saying why,
/// rather than asking the model on top of the later turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_superseded_by_a_later_turn_fails_instead_of_running_again() {
    let gate = Gate::new();
    let model = ScriptedModelServer::start_blocking(held_script(gate.clone())).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "held: never answered", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the model request", || model.requests().len() == 1).await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);
    let thread_id = {
        let files = env.rollout_files();
        let lines = parse_complete_lines(&files[0]);
        lines[0]["payload"]["id"].as_str().expect("id").to_owned()
    };
    let later = env.run(&["exec", "resume", &thread_id, "later"]);
    assert_success(&later);
    let requests = model.requests().len();

    let client = TaskSession::stdio(&env).await;
    let failed = client.wait_for(&task_id, TaskStatus::Failed).await;
    let failed = serde_json::to_value(&failed).expect("JSON");
    assert!(
        failed["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a later turn started")),
        "{failed}"
    );
    assert_eq!(model.requests().len(), requests, "the model was not asked");
}

/// Two servers on one PostgreSQL database: while A runs a task, B reports it running
/// elsewhere; after kill -9 of A, B's `tasks/get` continues it to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_another_server_finishes_the_task_of_a_killed_one() {
    let Some(cluster) = baton_test_support::PgCluster::start_or_skip("tasks_on_postgres") else {
        return;
    };
    let script = held_once_then(move |_: &RecordedRequest| Reply::text("finished on server B"));
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let url = cluster.url();
    let a = HttpServerProcess::spawn(&env, &["--store", &url]);
    let b = HttpServerProcess::spawn(&env, &["--store", &url]);
    let client_a = TaskSession::http(&a, None).await;
    let client_b = TaskSession::http(&b, None).await;
    let created = client_a
        .call_task(
            "baton",
            json!({"prompt": "held: fleet", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("A's model request", || !model.requests().is_empty()).await;
    let elsewhere = client_b.get(&task_id).await;
    assert_eq!(elsewhere.task.status(), TaskStatus::Working);
    assert_eq!(
        elsewhere.task.task.status_message.as_deref(),
        Some("running in another baton process")
    );

    a.kill_9();
    let done = client_b.wait_for(&task_id, TaskStatus::Completed).await;
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "finished on server B"
    );
    assert!(
        env.rollout_files().is_empty(),
        "the sessions live in PostgreSQL, not in files"
    );
    assert_eq!(model.requests().len(), 2, "resumed once");
}

/// A server that starts up finds, through the index, the tasks a killed server left, and
/// continues them without waiting for a `tasks/get`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starting_up_continues_the_tasks_a_killed_server_left() {
    let script = held_once_then(move |_: &RecordedRequest| Reply::text("finished at start-up"));
    let model = ScriptedModelServer::start_blocking(script).expect("model");
    let env = TestEnv::new(&model, Wire::Responses);
    let first = TaskSession::stdio(&env).await;
    let created = first
        .call_task(
            "baton",
            json!({"prompt": "held: restart", "cwd": env.project}),
        )
        .await;
    let task_id = created.task.task_id.clone();
    eventually("the model request", || !model.requests().is_empty()).await;
    kill_9_and_wait(first.pid.expect("pid"));
    drop(first);

    // No tasks/get: the new server continues the task on its own.
    let second = TaskSession::stdio(&env).await;
    eventually("the resumed model request", || model.requests().len() == 2).await;
    let ended = || {
        env.rollout_files()
            .iter()
            .flat_map(|path| parse_complete_lines(path))
            .any(|l| l["payload"]["type"] == "baton_task" && l["payload"]["state"] == "completed")
    };
    eventually("the task's end in the transcript", ended).await;
    let done = second.wait_for(&task_id, TaskStatus::Completed).await;
    assert_eq!(
        completed_result(&done)["structuredContent"]["content"],
        "finished at start-up"
    );
    // The index forgets a task once it ended: a third server has nothing to continue.
    let index = rusqlite::Connection::open(env.home.join("state.sqlite")).expect("index");
    let open: i64 = index
        .query_row("SELECT count(*) FROM open_tasks", [], |row| row.get(0))
        .expect("open_tasks");
    assert_eq!(open, 0);
}
