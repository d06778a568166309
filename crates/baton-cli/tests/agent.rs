//! What the agent sees and reports (issue 17): base instructions, `prompt_cache_key`, project
//! instructions (AGENTS.md), plans, usage and parallel tool calls. Every test reads what the
//! scripted model server received.

mod common;

use baton_test_support::{RecordedRequest, ScriptedModelServer, Wire, default_script};
use common::*;
use serde_json::json;

#[test]
fn baton_sends_its_own_base_instructions_on_both_wires() {
    for wire in [Wire::Responses, Wire::Chat] {
        let server = ScriptedModelServer::start_blocking(default_script).expect("server");
        let env = TestEnv::new(&server, wire);
        env.exec_ok("hello");
        let requests = server.requests();
        let instructions = requests[0].instructions().expect("instructions sent");
        for needle in [
            "You are baton",
            "Read before you change",
            "never run destructive commands",
            "- shell:",
            "- apply_patch:",
            "- update_plan:",
            "The final message",
        ] {
            assert!(
                instructions.contains(needle),
                "{wire:?}: `{needle}` missing from {instructions}"
            );
        }
        match wire {
            Wire::Responses => assert!(requests[0].body["instructions"].is_string()),
            Wire::Chat => assert_eq!(requests[0].body["messages"][0]["role"], "system"),
        }

        // `base_instructions` in config replaces them.
        let output = env.run(&["-c", "base_instructions=\"be terse\"", "exec", "hi"]);
        assert_success(&output);
        let requests = server.requests();
        let replaced = requests
            .last()
            .and_then(|r| r.instructions())
            .expect("sent");
        assert!(replaced.starts_with("be terse"), "{replaced}");
        assert!(!replaced.contains("You are baton"), "{replaced}");
    }
}

#[test]
fn prompt_cache_key_is_the_thread_id_also_after_resume_and_for_a_fork() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread, _) = env.exec_ok("one");
    assert_eq!(server.requests()[0].body["prompt_cache_key"], json!(thread));

    // A new process continues the session: same key.
    env.resume_ok(&thread, "two");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].body["prompt_cache_key"], json!(thread));

    // A fork is a new thread with its own cache key.
    let output = env.run(&["sessions", "fork", &thread]);
    assert_success(&output);
    let fork = thread_id_of(&output);
    env.resume_ok(&fork, "three");
    let requests = server.requests();
    assert_eq!(requests[2].body["prompt_cache_key"], json!(fork));
    assert_ne!(fork, thread);
}

#[test]
fn the_chat_wire_sends_no_cache_key() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Chat);
    env.exec_ok("one");
    let body = &server.requests()[0].body;
    assert!(body.get("prompt_cache_key").is_none(), "{body}");
    assert!(body.get("parallel_tool_calls").is_none(), "{body}");
}

/// What the scripted server reported over `requests`, summed: `(input, cached, output)`, and
/// the size of the conversation after the last one (its input plus output).
fn reported_sums(requests: &[RecordedRequest]) -> ([u64; 3], u64) {
    let mut sums = [0u64; 3];
    let mut last = 0;
    for request in requests {
        let usage = request
            .reported_usage(&default_script(request))
            .expect("the default script reports usage");
        let count = |pointer: &str| {
            usage
                .pointer(pointer)
                .and_then(|v| v.as_u64())
                .expect(pointer)
        };
        let (input, cached, output) = (
            count("/input_tokens"),
            count("/input_tokens_details/cached_tokens"),
            count("/output_tokens"),
        );
        sums[0] += input;
        sums[1] += cached;
        sums[2] += output;
        last = input + output;
    }
    (sums, last)
}

const WINDOW: u64 = 200_000;

fn assert_usage(usage: &serde_json::Value, requests: &[RecordedRequest]) {
    let ([input, cached, output], last) = reported_sums(requests);
    assert!(cached > 0, "the scripted server reports cached tokens");
    assert_eq!(
        usage,
        &json!({
            "input_tokens": input,
            "cached_input_tokens": cached,
            "output_tokens": output,
            "context_window": WINDOW,
            "context_left_percent": (WINDOW - last) * 100 / WINDOW,
        })
    );
}

#[test]
fn exec_json_and_sessions_show_report_the_turns_usage() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let window = format!("model_context_window={WINDOW}");
    let output = env.run(&["-c", &window, "exec", "--json", "shell: echo hi"]);
    assert_success(&output);
    let completed = stdout(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|event| event["type"] == "turn.completed")
        .expect("a turn.completed event");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "a tool call, then the answer");
    assert_usage(&completed["usage"], &requests);

    let thread = thread_id_of(&output);
    env.resume_ok(&thread, "second turn");
    let shown = env.run(&["sessions", "show", &thread]);
    assert_success(&shown);
    let shown = stdout(&shown);
    let requests = server.requests();
    let usage_lines: Vec<&str> = shown.lines().filter(|l| l.starts_with("[usage]")).collect();
    let expected: Vec<String> = [&requests[..2], &requests[2..]]
        .iter()
        .map(|turn| {
            let ([input, cached, output], _) = reported_sums(turn);
            format!(
                "[usage] {} model requests: input {input} tokens ({cached} cached), output {output} tokens",
                turn.len()
            )
        })
        .collect();
    assert_eq!(usage_lines, expected, "{shown}");
    // Each turn's usage follows its answer.
    let first_answer = shown.find("[assistant]").expect("first answer shown");
    let second_prompt = shown.find("second turn").expect("second prompt shown");
    let first_usage = shown.find(&expected[0]).expect("usage shown");
    assert!(
        first_answer < first_usage && first_usage < second_prompt,
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_results_carry_the_turns_usage() {
    let server = ScriptedModelServer::start(default_script)
        .await
        .expect("server");
    let env = TestEnv::new(&server, Wire::Chat);
    let mcp = mcp::McpProcess::spawn(&env).await;
    let result = mcp
        .call(
            "baton",
            json!({"prompt": "shell: echo hi", "cwd": env.project,
                "config": {"model_context_window": WINDOW}}),
        )
        .await;
    let (thread, _) = mcp.turn_output(&result);
    let structured = result.structured_content.as_ref().expect("structured");
    assert_usage(&structured["usage"], &server.requests());

    // A reply's usage covers its own requests only.
    let before = server.requests().len();
    let result = mcp
        .call(
            "baton-reply",
            json!({"threadId": thread, "prompt": "again"}),
        )
        .await;
    let structured = result.structured_content.as_ref().expect("structured");
    let ([input, cached, output], _) = reported_sums(&server.requests()[before..]);
    assert_eq!(structured["usage"]["input_tokens"], json!(input));
    assert_eq!(structured["usage"]["cached_input_tokens"], json!(cached));
    assert_eq!(structured["usage"]["output_tokens"], json!(output));
    mcp.close().await;
}

/// The instructions messages of a request, in order.
fn instructions_messages(request: &RecordedRequest) -> Vec<String> {
    request
        .conversation()
        .into_iter()
        .filter(|entry| entry.starts_with("user: # AGENTS.md instructions for "))
        .collect()
}

/// A repository in the project dir: root `AGENTS.md`, and `sub/` with an `AGENTS.md` that its
/// `AGENTS.override.md` replaces. Returns the `sub` directory.
fn repository_with_instructions(env: &TestEnv) -> std::path::PathBuf {
    std::fs::create_dir_all(env.project.join(".git")).expect(".git");
    let sub = env.project.join("sub");
    std::fs::create_dir_all(&sub).expect("sub");
    std::fs::write(env.project.join("AGENTS.md"), "ROOT: run make check\n").expect("write");
    std::fs::write(sub.join("AGENTS.md"), "SUB: replaced by the override\n").expect("write");
    std::fs::write(sub.join("AGENTS.override.md"), "OVERRIDE: use tabs\n").expect("write");
    std::fs::write(env.home.join("AGENTS.md"), "HOME: answer briefly\n").expect("write");
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_md_from_root_to_cwd_is_sent_once_and_kept_after_restart() {
    let server = ScriptedModelServer::start(default_script)
        .await
        .expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let sub = repository_with_instructions(&env);
    let output = env.run(&["exec", "--cd", sub.to_str().expect("utf-8"), "first"]);
    assert_success(&output);
    let thread = thread_id_of(&output);

    let first = &server.requests()[0];
    let expected = format!(
        "user: # AGENTS.md instructions for {}\n\n<INSTRUCTIONS>\nHOME: answer briefly\n\n\
         ROOT: run make check\n\nOVERRIDE: use tabs\n</INSTRUCTIONS>",
        sub.display()
    );
    assert_eq!(
        first.conversation(),
        vec![expected.clone(), "user: first".to_owned()],
        "one instructions message, before the prompt"
    );

    // A restarted server continues the thread: the same message, once.
    let mcp = mcp::McpProcess::spawn(&env).await;
    mcp.reply(&thread, "second").await;
    mcp.close().await;
    let requests = server.requests();
    let second = requests.last().expect("a request");
    assert_eq!(instructions_messages(second), vec![expected.clone()]);
    assert_eq!(second.conversation()[0], expected);

    // Compaction keeps it at the front.
    env.run(&["exec", "resume", &thread, "third", "--compact"]);
    let requests = server.requests();
    let after = requests.last().expect("a request");
    assert_eq!(
        after.conversation()[0],
        expected,
        "{:?}",
        after.conversation()
    );
    assert_eq!(instructions_messages(after).len(), 1);

    // A fork keeps its source's instructions, even once the files changed.
    std::fs::write(sub.join("AGENTS.override.md"), "CHANGED\n").expect("write");
    let output = env.run(&["sessions", "fork", &thread]);
    assert_success(&output);
    env.resume_ok(&thread_id_of(&output), "in the fork");
    let requests = server.requests();
    assert_eq!(
        instructions_messages(requests.last().expect("a request")),
        vec![expected]
    );
}

#[test]
fn agents_md_is_capped_and_fallback_names_are_used_when_configured() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    std::fs::write(env.project.join("CLAUDE.md"), "CLAUDE: no emojis\n").expect("write");
    env.exec_ok("plain");
    assert!(instructions_messages(&server.requests()[0]).is_empty());

    let output = env.run(&[
        "-c",
        "project_doc_fallback_filenames=[\"CLAUDE.md\"]",
        "exec",
        "with fallback",
    ]);
    assert_success(&output);
    let requests = server.requests();
    let messages = instructions_messages(requests.last().expect("a request"));
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("<INSTRUCTIONS>\nCLAUDE: no emojis\n</INSTRUCTIONS>"));

    // 40 KiB of instructions: 32 KiB are sent, and the message says the rest was cut.
    std::fs::write(env.project.join("AGENTS.md"), "x".repeat(40 * 1024)).expect("write");
    env.exec_ok("big");
    let requests = server.requests();
    let messages = instructions_messages(requests.last().expect("a request"));
    let body = messages[0]
        .split_once("<INSTRUCTIONS>\n")
        .and_then(|(_, rest)| rest.strip_suffix("\n</INSTRUCTIONS>"))
        .expect("tagged body");
    let (kept, note) = body
        .split_once("\n\n[baton:")
        .expect("the cut is said in words");
    assert_eq!(kept, "x".repeat(32 * 1024));
    assert!(
        note.contains("8192 of 40960 bytes exceed project_doc_max_bytes = 32768"),
        "{note}"
    );
}

fn the_plan() -> serde_json::Value {
    json!({"explanation": "a small fix", "plan": [
        {"step": "read the code", "status": "completed"},
        {"step": "run the tests", "status": "in_progress"},
        {"step": "fix the bug", "status": "pending"},
        {"step": "rerun the tests", "status": "pending"},
        {"step": "report", "status": "pending"},
    ]})
}

/// The prompt `plan` makes the model set [`the_plan`]; everything else is the default script.
fn plan_script(request: &RecordedRequest) -> baton_test_support::Reply {
    if request.last_user_text().as_deref() == Some("plan") && request.last_tool_output().is_none() {
        return baton_test_support::Reply::tool_call("update_plan", the_plan());
    }
    default_script(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_plan_is_reported_returned_recorded_and_survives_a_restart() {
    let server = ScriptedModelServer::start(plan_script)
        .await
        .expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let mcp = mcp::McpProcess::spawn(&env).await;
    let handle = mcp
        .call_cancellable("baton", json!({"prompt": "plan", "cwd": env.project}))
        .await;
    let result = mcp::await_call(handle).await.expect("a result");
    let (thread, message) = mcp.turn_output(&result);
    assert_eq!(message, "tool output: Plan updated");
    let structured = result.structured_content.as_ref().expect("structured");
    assert_eq!(structured["plan"], the_plan());
    mcp.wait_for_progress(std::time::Duration::from_secs(10), |m| {
        m == "plan 2/5: run the tests"
    })
    .await;
    let requests = server.requests();
    assert!(requests[0].tool_names().contains(&"update_plan".to_owned()));
    assert_eq!(
        requests[1].last_tool_output().as_deref(),
        Some("Plan updated")
    );
    mcp.close().await;

    let records = parse_complete_lines(&env.rollout_of(&thread));
    let updates: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "event_msg" && r["payload"]["type"] == "plan_update")
        .collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["payload"]["plan"], the_plan()["plan"]);

    // Another server process: a turn that does not touch the plan still returns it.
    let mcp = mcp::McpProcess::spawn(&env).await;
    let result = mcp
        .call(
            "baton-reply",
            json!({"threadId": thread, "prompt": "go on"}),
        )
        .await;
    let structured = result.structured_content.as_ref().expect("structured");
    assert_eq!(structured["plan"], the_plan());
    mcp.close().await;

    let shown = env.run(&["sessions", "show", &thread]);
    assert_success(&shown);
    let shown = stdout(&shown);
    assert!(
        shown.contains(
            "[plan] plan 2/5: run the tests\na small fix\n[x] read the code\n[>] run the tests\n[ ] fix the bug\n"
        ),
        "{shown}"
    );
}

/// Three reads of named pipes, a write, then a read of what the write wrote: all in one
/// response. A `cat` of a pipe blocks until someone writes to it, so the test sees the three
/// reads running at the same time only if baton runs them concurrently.
fn parallel_script(fifos: Vec<String>) -> impl Fn(&RecordedRequest) -> baton_test_support::Reply {
    use baton_test_support::{Reply, ReplyItem};
    move |request| {
        if request.last_user_text().as_deref() != Some("parallel")
            || request.last_tool_output().is_some()
        {
            return Reply::text("done");
        }
        let shell = |argv: Vec<&str>| ReplyItem::ToolCall {
            name: "shell".into(),
            arguments: json!({ "command": argv }),
        };
        let mut items: Vec<ReplyItem> = fifos.iter().map(|f| shell(vec!["cat", f])).collect();
        items.push(shell(vec!["bash", "-lc", "echo written > written.marker"]));
        items.push(shell(vec!["cat", "written.marker"]));
        Reply::Items(items)
    }
}

/// Waits (bounded) until a `cat` of every pipe runs at once, notes whether the write had
/// already happened by then, then feeds each pipe in turn.
fn feed_pipes(fifos: &[std::path::PathBuf], marker: &std::path::Path) -> (bool, bool) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    let all_at_once = loop {
        let running = fifos
            .iter()
            .filter(|f| !mcp::processes_matching(&format!("cat {}", f.display())).is_empty())
            .count();
        if running == fifos.len() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let write_waited = !marker.exists();
    // Feed each pipe once its reader is there, so a serial run also ends (and fails cleanly).
    for (index, fifo) in fifos.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut pipe = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo)
            {
                Ok(pipe) => break pipe,
                // ENXIO: no reader yet.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(err) => panic!("no reader ever opened {}: {err}", fifo.display()),
            }
        };
        writeln!(pipe, "released {index}").expect("write to the pipe");
    }
    (all_at_once, write_waited)
}

#[test]
fn read_only_calls_of_one_response_run_concurrently_and_are_recorded_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifos: Vec<std::path::PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("pipe-{i}")))
        .collect();
    for fifo in &fifos {
        let status = std::process::Command::new("mkfifo")
            .arg(fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    let names: Vec<String> = fifos.iter().map(|f| f.display().to_string()).collect();
    let server = ScriptedModelServer::start_blocking(parallel_script(names)).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let marker = env.project.join("written.marker");
    let feeder = {
        let fifos = fifos.clone();
        let marker = marker.clone();
        std::thread::spawn(move || feed_pipes(&fifos, &marker))
    };
    let output = env.run(&["exec", "parallel"]);
    let (all_at_once, write_waited) = feeder.join().expect("feeder");
    assert_success(&output);
    assert!(
        all_at_once,
        "the three read-only calls never ran at the same time"
    );
    assert!(write_waited, "the write ran before the reads had finished");

    // The transcript and the next request hold calls and outputs in the model's order.
    let requests = server.requests();
    assert!(requests[0].body["parallel_tool_calls"] == json!(true));
    let conversation = requests[1].conversation();
    let outputs: Vec<&String> = conversation
        .iter()
        .filter(|e| e.starts_with("output: "))
        .collect();
    assert_eq!(outputs.len(), 5, "{conversation:?}");
    for (index, output) in outputs[..3].iter().enumerate() {
        assert!(output.contains(&format!("released {index}")), "{output}");
    }
    // The read after the write saw what it wrote.
    assert!(outputs[4].contains("written"), "{}", outputs[4]);
    let records = parse_complete_lines(&env.rollout_of(&thread_id_of(&output)));
    let call_ids: Vec<&str> = records
        .iter()
        .filter(|r| r["payload"]["type"] == "function_call")
        .filter_map(|r| r["payload"]["call_id"].as_str())
        .collect();
    let output_ids: Vec<&str> = records
        .iter()
        .filter(|r| r["payload"]["type"] == "function_call_output")
        .filter_map(|r| r["payload"]["call_id"].as_str())
        .collect();
    assert_eq!(call_ids.len(), 5);
    assert_eq!(call_ids, output_ids);
}
