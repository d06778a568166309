//! `baton mcp-server` driven by a real MCP client (rmcp's) and by raw JSON-RPC lines, against
//! the scripted model server: the "Must show" list of issue 4 and the MCP tools' contract.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_test_support::{RecordedRequest, ScriptedModelServer, Wire, default_script};
use common::mcp::*;
use common::*;
use rmcp::model::{ErrorCode, ReadResourceRequestParams, ResourceContents};
use rmcp::service::ServiceError;
use serde_json::{Value, json};

/// Failure guard for waits on events (a process exiting, a notification): generous, since
/// the behaviour under test either happens or never does; no test measures how fast.
const GUARD: Duration = Duration::from_secs(60);

fn model_server() -> ScriptedModelServer {
    ScriptedModelServer::start_blocking(default_script).expect("scripted model server")
}

/// The conversation of a model request without system/developer messages.
fn dialogue(request: &RecordedRequest) -> Vec<String> {
    request
        .conversation()
        .into_iter()
        .filter(|e| !e.starts_with("system: "))
        .collect()
}

/// The transcript records of a thread.
fn records(env: &TestEnv, thread_id: &str) -> Vec<Value> {
    parse_complete_lines(&env.rollout_of(thread_id))
}

fn has_event(records: &[Value], event: &str) -> bool {
    records
        .iter()
        .any(|r| r["type"] == "event_msg" && r["payload"]["type"] == event)
}

/// The enum values a property of a JSON Schema allows, following `$ref`, `anyOf` and `oneOf`
/// (schemars writes `Option<Enum>` as `anyOf: [{$ref}, {type: null}]`).
fn enum_values(root: &Value, property: &str) -> Vec<String> {
    fn collect(root: &Value, schema: &Value, out: &mut Vec<String>) {
        if let Some(values) = schema["enum"].as_array() {
            out.extend(values.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if let Some(value) = schema["const"].as_str() {
            out.push(value.to_owned());
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let pointer = reference.trim_start_matches('#');
            if let Some(target) = root.pointer(pointer) {
                collect(root, target, out);
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for sub in schema[key].as_array().into_iter().flatten() {
                collect(root, sub, out);
            }
        }
    }
    let mut out = Vec::new();
    collect(root, &root["properties"][property], &mut out);
    out
}

fn strings(values: &Value) -> Vec<String> {
    values
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, except the server logs the tests write there.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.retain(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("mcp-server-"))
    });
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_has_the_three_tools_with_schemas_and_results_are_structured() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;

    let tools = mcp.service.list_all_tools().await.expect("tools/list");
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name} in {tools:?}"))
    };
    let schema = |name: &str| Value::Object((*tool(name).input_schema).clone());
    let output = |name: &str| {
        Value::Object(
            (**tool(name)
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{name} has no outputSchema")))
            .clone(),
        )
    };

    let baton = schema("baton");
    assert_eq!(strings(&baton["required"]), ["prompt"], "{baton}");
    for property in [
        "prompt",
        "cwd",
        "model",
        "profile",
        "sandbox",
        "approval-policy",
        "base-instructions",
        "developer-instructions",
        "config",
    ] {
        assert!(
            baton["properties"].get(property).is_some(),
            "baton has no `{property}`: {baton}"
        );
    }
    assert_eq!(
        enum_values(&baton, "sandbox"),
        ["read-only", "workspace-write", "danger-full-access"]
    );
    assert_eq!(
        enum_values(&baton, "approval-policy"),
        ["untrusted", "on-request", "on-failure", "never"]
    );
    let turn_output = output("baton");
    let mut required = strings(&turn_output["required"]);
    required.sort();
    assert_eq!(required, ["content", "threadId"], "{turn_output}");

    let reply = schema("baton-reply");
    let mut required = strings(&reply["required"]);
    required.sort();
    assert_eq!(required, ["prompt", "threadId"], "{reply}");
    assert!(reply["properties"].get("cwd").is_some(), "{reply}");
    assert_eq!(output("baton-reply"), turn_output);

    let sessions = schema("baton-sessions");
    for property in ["query", "cwd", "limit", "cursor"] {
        assert!(
            sessions["properties"].get(property).is_some(),
            "baton-sessions has no `{property}`: {sessions}"
        );
    }
    let sessions_output = output("baton-sessions");
    assert!(
        sessions_output["properties"].get("sessions").is_some(),
        "{sessions_output}"
    );

    // The result: text = final message, structuredContent {threadId, content, usage}.
    let result = mcp
        .call("baton", json!({"prompt": "hello", "cwd": env.project}))
        .await;
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text_of(&result), "echo: hello");
    let structured = result
        .structured_content
        .clone()
        .expect("structuredContent");
    let thread_id = structured["threadId"].as_str().expect("threadId");
    assert!(uuid::Uuid::parse_str(thread_id).is_ok(), "{structured}");
    assert_eq!(structured["content"], "echo: hello");
    // Plus the turn's token usage; `plan` only once the agent made one.
    let mut keys: Vec<&str> = structured
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["content", "threadId", "usage"], "{structured}");
    mcp.close().await;
}

/// start → reply → `kill -9` → a new server → `baton-reply` continues with the whole history.
async fn continues_after_kill_9(delete_index: bool) {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, first) = mcp.start("shell: echo first-output", &env.project).await;
    assert!(
        first.starts_with("tool output:") && first.contains("first-output"),
        "{first}"
    );
    assert_eq!(
        mcp.reply(&thread_id, "second prompt").await,
        "echo: second prompt"
    );
    mcp.kill_9().await;

    if delete_index {
        for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
            let path = env.home.join(name);
            if path.exists() {
                std::fs::remove_file(&path).expect("delete the index");
            }
        }
        assert!(!env.home.join("state.sqlite").exists());
    }

    let mcp = McpProcess::spawn(&env).await;
    let answer = mcp.reply(&thread_id, "RECALL").await;
    assert_eq!(
        answer,
        "recall: shell: echo first-output | second prompt (1 tool outputs)"
    );
    let last = server.requests().pop().expect("a model request");
    let conversation = dialogue(&last);
    assert_eq!(conversation.len(), 7, "{conversation:#?}");
    assert_eq!(conversation[0], "user: shell: echo first-output");
    assert!(
        conversation[1].starts_with("call shell ") && conversation[1].contains("echo first-output"),
        "{conversation:#?}"
    );
    assert!(
        conversation[2].starts_with("output: ") && conversation[2].contains("first-output"),
        "{conversation:#?}"
    );
    assert!(
        conversation[3].starts_with("assistant: tool output:"),
        "{conversation:#?}"
    );
    assert_eq!(conversation[4], "user: second prompt");
    assert_eq!(conversation[5], "assistant: echo: second prompt");
    assert_eq!(conversation[6], "user: RECALL");
    // Still one transcript: the same thread, not a copy.
    assert_eq!(env.rollout_files().len(), 1, "{:?}", env.rollout_files());
    if delete_index {
        assert!(
            env.home.join("state.sqlite").exists(),
            "the lookup that missed rebuilds the index"
        );
    }
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_a_new_server_continues_with_the_whole_history() {
    continues_after_kill_9(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_a_new_server_continues_with_the_index_deleted() {
    continues_after_kill_9(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_threads_continue_over_mcp_and_the_other_way_round() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Chat);
    let (exec_id, _) = tokio::task::block_in_place(|| env.exec_ok("shell: echo from-exec"));

    let mcp = McpProcess::spawn(&env).await;
    assert_eq!(mcp.reply(&exec_id, "over mcp").await, "echo: over mcp");

    let (mcp_id, _) = mcp.start("started over mcp", &env.project).await;
    let out = tokio::task::block_in_place(|| env.resume_ok(&mcp_id, "RECALL"));
    assert_eq!(out.trim(), "recall: started over mcp (0 tool outputs)");

    // Another process appends to a thread this server holds in memory: the server re-reads it.
    tokio::task::block_in_place(|| env.resume_ok(&exec_id, "from exec again"));
    assert_eq!(
        mcp.reply(&exec_id, "RECALL").await,
        "recall: shell: echo from-exec | over mcp | from exec again (1 tool outputs)"
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_ids_get_clear_errors_and_the_server_keeps_serving() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let before = tree(&env.root);

    let unknown = uuid::Uuid::now_v7().to_string();
    let result = mcp
        .call("baton-reply", json!({"threadId": unknown, "prompt": "hi"}))
        .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains(&unknown), "{text}");
    assert!(
        text.contains(&env.home.join("sessions").display().to_string()),
        "names where baton looked: {text}"
    );
    assert!(
        text.contains(&env.codex_home.display().to_string()),
        "{text}"
    );

    let long = "a".repeat(5000);
    for bad in [
        "",
        "not-a-uuid",
        "../../etc/passwd",
        "../../../tmp/x",
        long.as_str(),
    ] {
        match mcp
            .try_call("baton-reply", json!({"threadId": bad, "prompt": "hi"}))
            .await
        {
            Ok(result) => {
                assert_eq!(result.is_error, Some(true), "{bad:.40}: {result:?}");
                let text = text_of(&result);
                assert!(text.to_lowercase().contains("thread id"), "{text}");
                assert!(text.len() < 400, "the message stays short: {text}");
            }
            Err(ServiceError::McpError(err)) => {
                assert_eq!(err.code, ErrorCode::INVALID_PARAMS, "{bad:.40}: {err:?}")
            }
            Err(err) => panic!("{bad:.40}: {err}"),
        }
    }
    // The same ids as resources.
    for bad in ["not-a-uuid", "../../etc/passwd", unknown.as_str()] {
        let uri = format!("baton://sessions/{bad}");
        match mcp
            .service
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
        {
            Err(ServiceError::McpError(err)) => assert_eq!(err.code, ErrorCode::RESOURCE_NOT_FOUND),
            other => panic!("{uri}: expected resource_not_found, got {other:?}"),
        }
    }

    let after = tree(&env.root);
    // An unknown id leaves no lock file behind.
    assert!(
        !after
            .iter()
            .any(|p| p.to_string_lossy().contains(&format!("{unknown}.lock"))),
        "{after:#?}"
    );
    // Inside BATON_HOME the index may appear; nothing is ever named after a malformed id,
    // and nothing appears outside the home.
    let created: Vec<_> = after
        .iter()
        .filter(|p| !before.contains(p))
        .filter(|p| {
            !p.starts_with(&env.home)
                || ["passwd", "not-a-uuid", "aaaa", "tmp/x"]
                    .iter()
                    .any(|bad| p.to_string_lossy().contains(bad))
        })
        .collect();
    assert!(created.is_empty(), "files created: {created:#?}");
    // SQLite's journal comes and goes with each index write (the server looks for unfinished
    // tasks at start-up), so only other files count.
    let removed: Vec<_> = before
        .iter()
        .filter(|p| !after.contains(p))
        .filter(|p| !p.to_string_lossy().ends_with("-journal"))
        .collect();
    assert!(removed.is_empty(), "files removed: {removed:#?}");
    assert!(!Path::new("/etc/passwd.jsonl").exists());

    let tools = mcp
        .service
        .list_all_tools()
        .await
        .expect("tools/list after errors");
    assert!(tools.len() >= 3, "{tools:?}");
    // …and a real call still works, also with the `conversationId` alias.
    let (thread_id, _) = mcp.start("hi", &env.project).await;
    let result = mcp
        .call(
            "baton-reply",
            json!({"conversationId": thread_id, "prompt": "by alias"}),
        )
        .await;
    assert_eq!(
        mcp.turn_output(&result),
        (thread_id, "echo: by alias".to_owned())
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_have_json_rpc_codes() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);
    let init = raw.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "baton", "{init}");

    let missing_prompt = raw
        .request(
            1,
            "tools/call",
            json!({"name": "baton", "arguments": {"cwd": env.project}}),
        )
        .await;
    assert_eq!(missing_prompt["error"]["code"], -32602, "{missing_prompt}");
    assert!(
        missing_prompt["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("prompt")),
        "{missing_prompt}"
    );
    let missing_id = raw
        .request(
            2,
            "tools/call",
            json!({"name": "baton-reply", "arguments": {"prompt": "x"}}),
        )
        .await;
    assert_eq!(missing_id["error"]["code"], -32602, "{missing_id}");
    let bad_sandbox = raw
        .request(
            3,
            "tools/call",
            json!({"name": "baton", "arguments": {"prompt": "x", "sandbox": "yolo"}}),
        )
        .await;
    assert_eq!(bad_sandbox["error"]["code"], -32602, "{bad_sandbox}");
    let unknown = raw.request(4, "nope/nothing", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let tools = raw.request(5, "tools/list", json!({})).await;
    assert!(
        tools["result"]["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "baton-reply")),
        "{tools}"
    );
    // The wire shape of a result.
    let ok = raw
        .request(
            6,
            "tools/call",
            json!({"name": "baton", "arguments": {"prompt": "hi", "cwd": env.project}}),
        )
        .await;
    assert_eq!(
        ok["result"]["content"],
        json!([{"type": "text", "text": "echo: hi"}])
    );
    assert_eq!(ok["result"]["structuredContent"]["content"], "echo: hi");
    assert_eq!(ok["result"]["isError"], false);
    // The 2026-07-28 probe Claude Code sends first is answered.
    let discover = raw
        .request(
            7,
            "server/discover",
            json!({"_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }}),
        )
        .await;
    assert!(discover.get("result").is_some(), "{discover}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_recorded_cwd_is_named_and_cwd_overrides_it() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let moving = env.root.join("moving-project");
    std::fs::create_dir_all(&moving).expect("dir");
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("in the old place", &moving).await;
    std::fs::remove_dir_all(&moving).expect("delete the project");

    let result = mcp
        .call(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "pwd?"}),
        )
        .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains(&moving.display().to_string()), "{text}");
    assert!(text.contains("cwd"), "says to pass cwd: {text}");

    // A new process (the thread is not in memory) gives the same answer, and `cwd` fixes it.
    mcp.kill_9().await;
    let mcp = McpProcess::spawn(&env).await;
    let result = mcp
        .call(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "pwd?"}),
        )
        .await;
    assert_eq!(result.is_error, Some(true), "{}", text_of(&result));
    let result = mcp
        .call(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": "shell: pwd", "cwd": env.project}),
        )
        .await;
    let (id, content) = mcp.turn_output(&result);
    assert_eq!(id, thread_id);
    assert!(
        content.contains(&env.project.display().to_string()),
        "ran in the new cwd: {content}"
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_argument_of_the_wrong_type_says_what_was_given() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let result = mcp
        .call(
            "baton",
            json!({"prompt": "hello", "cwd": env.project, "config": {"sandbox_mode": 7}}),
        )
        .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains(r#"sandbox_mode`: expected one of "read-only", "workspace-write", "danger-full-access", got integer `7`"#),
        "{text}"
    );
    assert!(server.requests().is_empty(), "no turn ran");
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_model_server_is_named_and_the_server_keeps_serving() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let env = TestEnv::with_provider(&format!(
        "[model_providers.scripted]\nname = \"Down Provider\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    ));
    let mcp = McpProcess::spawn(&env).await;
    for _ in 0..2 {
        let result = mcp
            .call("baton", json!({"prompt": "hello", "cwd": env.project}))
            .await;
        assert_eq!(result.is_error, Some(true));
        let text = text_of(&result);
        assert!(text.contains("Down Provider"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains(SECRET_KEY), "{text}");
    }
    let tools = mcp.service.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "baton"), "{tools:?}");
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_threads_run_in_parallel() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let rendezvous = env.project.join("rendezvous");
    std::fs::create_dir(&rendezvous).expect("mkdir");
    // Each turn's command checks in and waits until all four have: only turns that run at
    // the same time can all print "together". (A serialised server makes the first one give
    // up after its 60 s deadline and print "alone"; nothing here measures time.)
    // `mktemp`, not `$$`: each sandboxed command has its own PID namespace, so every shell is
    // the same small pid there.
    let command = "mktemp rendezvous/in-XXXXXXXX >/dev/null; for _ in $(seq 1200); do \
                   [ \"$(ls rendezvous | wc -l)\" -ge 4 ] && { echo together; exit 0; }; \
                   sleep 0.05; done; echo alone";
    let mcp = McpProcess::spawn(&env).await;
    let calls = (0..4).map(|_| {
        mcp.call(
            "baton",
            json!({"prompt": format!("shell: {command}"), "cwd": env.project}),
        )
    });
    let results = futures_join_all(calls).await;
    let mut ids = Vec::new();
    for result in &results {
        let (id, content) = mcp.turn_output(result);
        assert!(content.ends_with("Output:\ntogether"), "{content}");
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "four distinct threads");
    assert_eq!(std::fs::read_dir(&rendezvous).expect("ls").count(), 4);
    mcp.close().await;
}

/// Polls several futures to completion together (no `futures` dependency in this crate).
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("completed")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replies_at_once_on_one_thread_are_served_in_order() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);
    raw.initialize().await;
    let started = raw
        .request(
            1,
            "tools/call",
            json!({"name": "baton", "arguments": {"prompt": "first", "cwd": env.project}}),
        )
        .await;
    let thread_id = started["result"]["structuredContent"]["threadId"]
        .as_str()
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();

    // Both requests in one write: A is on the wire before B. (rmcp's client may swap two
    // requests sent at once, as it writes each from its own task.)
    let call = |id: i64, prompt: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "baton-reply", "arguments": {"threadId": thread_id, "prompt": prompt}}})
    };
    raw.send_all(&[
        call(2, "shell: sleep 0.5 && echo turn-a"),
        call(3, "RECALL"),
    ])
    .await;
    let a = raw.response(2, Duration::from_secs(30)).await;
    let b = raw.response(3, Duration::from_secs(30)).await;
    let text = |r: &Value| {
        assert_eq!(
            r["result"]["structuredContent"]["threadId"],
            thread_id.as_str(),
            "{r}"
        );
        r["result"]["structuredContent"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_owned()
    };
    let (a, b) = (text(&a), text(&b));
    assert!(a.contains("turn-a"), "{a}");
    // The second call saw the first one's whole exchange.
    assert_eq!(
        b,
        "recall: first | shell: sleep 0.5 && echo turn-a (1 tool outputs)"
    );

    // In the transcript, turn A's lines all come before turn B's: no interleaving.
    let records = records(&env, &thread_id);
    let user_messages: Vec<(usize, String)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["type"] == "event_msg" && r["payload"]["type"] == "user_message")
        .map(|(i, r)| (i, r["payload"]["message"].as_str().unwrap_or("").to_owned()))
        .collect();
    let prompts: Vec<&str> = user_messages.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        prompts,
        ["first", "shell: sleep 0.5 && echo turn-a", "RECALL"]
    );
    let turn_starts: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["type"] == "turn_context")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(turn_starts.len(), 3);
    let turn_a = &records[turn_starts[1]..turn_starts[2]];
    let kinds: Vec<String> = turn_a
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["type"].as_str().unwrap_or(""),
                r["payload"]["type"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        kinds.contains(&"response_item/function_call".to_owned())
            && kinds.contains(&"response_item/function_call_output".to_owned())
            && kinds.last().map(String::as_str) == Some("event_msg/agent_message"),
        "turn A is whole before turn B starts: {kinds:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_during_a_slow_turn_and_cancel_stops_it() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("hello", &env.project).await;

    // A distinctive duration finds the `sleep` process in /proc; it never ends by itself
    // within the test, so only the cancel can stop it.
    let marker = "sleep 73141";
    let handle = mcp
        .call_cancellable(
            "baton-reply",
            json!({"threadId": thread_id, "prompt": format!("shell: {marker}")}),
        )
        .await;
    let token = handle.progress_token.clone();
    let running = mcp
        .wait_for_progress(GUARD, |m| m.starts_with("running: sleep 7"))
        .await;
    assert_eq!(running, format!("running: {marker}"));
    wait_for_process(marker).await;
    let heartbeat = mcp
        .wait_for_progress(GUARD, |m| m.starts_with("working"))
        .await;
    // The call's own notifications: its token, a start, the tool call, the heartbeat.
    let this_call: Vec<_> = mcp
        .progress()
        .into_iter()
        .filter(|(_, p)| p.progress_token == token)
        .collect();
    let messages: Vec<String> = this_call
        .iter()
        .filter_map(|(_, p)| p.message.clone())
        .collect();
    assert!(messages.len() >= 3, "{messages:?}");
    assert!(
        messages.contains(&format!("running: {marker}")),
        "{messages:?}"
    );
    assert!(messages.contains(&heartbeat), "{messages:?}");
    let steps: Vec<f64> = this_call.iter().map(|(_, p)| p.progress).collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "progress increases: {steps:?}"
    );

    handle
        .cancel(Some("test cancels".into()))
        .await
        .expect("cancel");
    let deadline = Instant::now() + GUARD;
    loop {
        let aborted = has_event(&records(&env, &thread_id), "turn_aborted");
        if aborted && processes_matching(marker).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after cancel: turn_aborted recorded = {aborted}, sleep processes = {:?}",
            processes_matching(marker)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The thread stays usable and its history pairs the aborted call with an output.
    assert_eq!(
        mcp.reply(&thread_id, "RECALL").await,
        format!("recall: hello | shell: {marker} (1 tool outputs)")
    );
    mcp.close().await;
}

/// Waits until a process whose command line contains `marker` runs ("running:" progress is
/// sent just before the command is spawned).
async fn wait_for_process(marker: &str) {
    let deadline = Instant::now() + GUARD;
    while processes_matching(marker).is_empty() {
        assert!(Instant::now() < deadline, "`{marker}` never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How a test tells the server to stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    StdinEof,
    Signal(&'static str),
}

impl Stop {
    fn apply(self, raw: &mut RawMcp) {
        match self {
            Stop::StdinEof => raw.close_stdin(),
            Stop::Signal(sig) => signal(raw.pid(), sig),
        }
    }
}

/// An idle server exits promptly and cleanly.
async fn idle_server_exits(stop: Stop) {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);
    raw.initialize().await;
    stop.apply(&mut raw);
    let status = raw.wait_exit(GUARD).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} after {stop:?}\n{}",
        read_log(&raw.log)
    );
}

/// A server stopped during a shell command kills it, records the abort, and exits promptly;
/// the thread then continues in a new server.
async fn busy_server_exits(stop: Stop, marker: &str) {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut raw = RawMcp::spawn(&env);
    raw.initialize().await;
    raw.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "baton",
            "arguments": {"prompt": format!("shell: {marker}"), "cwd": env.project},
            "_meta": {"progressToken": "t1"}
        }}),
    )
    .await;
    loop {
        let progress = raw
            .notification("notifications/progress", Duration::from_secs(10))
            .await;
        if progress["params"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("running:"))
        {
            break;
        }
    }
    wait_for_process(marker).await;
    stop.apply(&mut raw);
    // The command never ends by itself: a server waiting for it would never exit.
    let status = raw.wait_exit(GUARD).await;
    assert!(
        status.is_some(),
        "still running after {stop:?}\n{}",
        read_log(&raw.log)
    );
    // SIGKILL is delivered at once, but a loaded machine may take a moment to reap.
    let deadline = Instant::now() + GUARD;
    while !processes_matching(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the command was not killed\n{}",
            read_log(&raw.log)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let path = env
        .rollout_files()
        .into_iter()
        .next()
        .expect("a transcript");
    let records = parse_complete_lines(&path);
    assert!(
        has_event(&records, "turn_aborted"),
        "{records:#?}\n{}",
        read_log(&raw.log)
    );

    let thread_id = records[0]["payload"]["id"].as_str().expect("id").to_owned();
    let mcp = McpProcess::spawn(&env).await;
    assert_eq!(
        mcp.reply(&thread_id, "RECALL").await,
        format!("recall: shell: {marker} (1 tool outputs)")
    );
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdin_ends_an_idle_server() {
    idle_server_exits(Stop::StdinEof).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_idle_server() {
    idle_server_exits(Stop::Signal("TERM")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdin_aborts_a_running_turn_and_ends_the_server() {
    busy_server_exits(Stop::StdinEof, "sleep 92718").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_a_running_turn_and_ends_the_server() {
    busy_server_exits(Stop::Signal("TERM"), "sleep 92719").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_aborts_a_running_turn_and_ends_the_server() {
    busy_server_exits(Stop::Signal("INT"), "sleep 92720").await;
}

/// Runs `prompt` in a new `untrusted` session with a client that answers `elicit`.
async fn untrusted_turn(
    env: &TestEnv,
    elicit: Elicit,
    prompt: &str,
) -> (McpProcess, String, String) {
    let mcp = McpProcess::spawn_with(env, elicit).await;
    let (id, content) = mcp
        .start_with(json!({
            "prompt": prompt,
            "cwd": env.project,
            "approval-policy": "untrusted",
        }))
        .await;
    (mcp, id, content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_go_through_elicitation() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);

    // approve: runs; the form has one required enum `decision`.
    let (mcp, _, content) =
        untrusted_turn(&env, Elicit::Answer("approve"), "shell: touch approved.txt").await;
    assert!(env.project.join("approved.txt").exists(), "{content}");
    let asked = mcp.elicitations();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    let form = &asked[0];
    assert_eq!(form["mode"], "form", "{form}");
    assert!(
        form["message"]
            .as_str()
            .is_some_and(|m| m.contains("touch approved.txt")),
        "{form}"
    );
    let schema = &form["requestedSchema"];
    assert_eq!(strings(&schema["required"]), ["decision"], "{schema}");
    assert_eq!(
        schema["properties"].as_object().map(|p| p.len()),
        Some(1),
        "{schema}"
    );
    assert_eq!(
        enum_values(schema, "decision"),
        ["approve", "approve_for_session", "deny"]
    );
    // Listing commands are not asked about.
    let before = mcp.elicitations().len();
    let (id, _) = mcp
        .start_with(
            json!({"prompt": "shell: ls", "cwd": env.project, "approval-policy": "untrusted"}),
        )
        .await;
    assert_eq!(mcp.elicitations().len(), before, "`ls` was asked about");
    assert!(!records(&env, &id).is_empty());
    mcp.close().await;

    // deny: not run, and the model is told.
    let (mcp, _, content) =
        untrusted_turn(&env, Elicit::Answer("deny"), "shell: touch denied.txt").await;
    assert!(!env.project.join("denied.txt").exists());
    assert_eq!(mcp.elicitations().len(), 1);
    assert!(content.contains("denied"), "{content}");
    let told = server.requests().pop().and_then(|r| r.last_tool_output());
    assert!(told.is_some_and(|o| o.contains("denied")));
    mcp.close().await;

    // approve_for_session: asked once for two identical commands.
    let (mcp, id, _) = untrusted_turn(
        &env,
        Elicit::Answer("approve_for_session"),
        "shell: echo again >> session.txt",
    )
    .await;
    mcp.reply(&id, "shell: echo again >> session.txt").await;
    assert_eq!(
        std::fs::read_to_string(env.project.join("session.txt")).expect("ran twice"),
        "again\nagain\n"
    );
    assert_eq!(mcp.elicitations().len(), 1, "asked once");
    mcp.close().await;

    // No elicitation capability: denied, and the model learns why.
    let (mcp, _, content) =
        untrusted_turn(&env, Elicit::Unsupported, "shell: touch unasked.txt").await;
    assert!(!env.project.join("unasked.txt").exists());
    assert!(mcp.elicitations().is_empty());
    assert!(
        content.contains("denied") && content.contains("elicitation"),
        "{content}"
    );
    mcp.close().await;

    // Declining the form is a denial too.
    let (mcp, _, content) =
        untrusted_turn(&env, Elicit::Decline, "shell: touch declined.txt").await;
    assert!(!env.project.join("declined.txt").exists());
    assert!(content.contains("declined"), "{content}");
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_sessions_lists_newest_first() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (older, _) = mcp.start("the older session", &env.project).await;
    let (newer, _) = mcp.start("the newer session", &env.project).await;
    mcp.reply(&newer, "a second turn").await;

    let result = mcp.call("baton-sessions", json!({})).await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    // The text block lists the sessions too, for clients that show only `content`.
    let text = text_of(&result);
    assert!(
        text.contains(&newer) && text.contains("the older session"),
        "{text}"
    );
    let sessions = result.structured_content.expect("structuredContent")["sessions"].clone();
    let list = sessions.as_array().expect("sessions array");
    assert_eq!(list.len(), 2, "{sessions:#}");
    assert_eq!(list[0]["threadId"], newer.as_str());
    assert_eq!(list[1]["threadId"], older.as_str());
    let entry = &list[0];
    assert_eq!(entry["firstPrompt"], "the newer session");
    assert_eq!(entry["lastMessage"], "echo: a second turn");
    assert_eq!(entry["cwd"], env.project.display().to_string());
    assert_eq!(entry["turns"], 2);
    assert_eq!(entry["source"], "baton");
    assert!(
        entry["updatedAt"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{entry}"
    );

    // Filtering by text and limiting.
    let result = mcp
        .call("baton-sessions", json!({"query": "older", "limit": 5}))
        .await;
    let list = result.structured_content.expect("structuredContent")["sessions"].clone();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list[0]["threadId"], older.as_str());
    let result = mcp.call("baton-sessions", json!({"limit": 1})).await;
    let page = result.structured_content.expect("structuredContent");
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(1));
    assert!(page["nextCursor"].is_string(), "{page}");
    // `limit: 0` means the default page, not one session.
    let result = mcp.call("baton-sessions", json!({"limit": 0})).await;
    let page = result.structured_content.expect("structuredContent");
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(2), "{page}");
    mcp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_are_resources() {
    let server = model_server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = McpProcess::spawn(&env).await;
    let (thread_id, _) = mcp.start("shell: echo resource-output", &env.project).await;

    let resources = mcp
        .service
        .list_all_resources()
        .await
        .expect("resources/list");
    let uri = format!("baton://sessions/{thread_id}");
    assert!(
        resources.iter().any(|r| r.uri == uri),
        "{uri} not in {resources:#?}"
    );
    let read = mcp
        .service
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .expect("resources/read");
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("expected text contents: {read:?}")
    };
    assert!(text.contains("shell: echo resource-output"), "{text}");
    assert!(text.contains("resource-output"), "{text}");
    assert!(text.contains(&thread_id), "{text}");
    mcp.close().await;
}
