//! `baton exec` and `baton exec resume` driven as a user would, against the scripted model
//! server on both wire APIs.

mod common;

use std::time::{Duration, Instant};

use baton_test_support::{Reply, ScriptedModelServer, Wire, default_script, first_n_then};
use common::*;

fn server() -> ScriptedModelServer {
    ScriptedModelServer::start_blocking(default_script).expect("scripted server")
}

fn shell_call_runs_in_cwd_and_reaches_the_model(wire: Wire) {
    let server = server();
    let env = TestEnv::new(&server, wire);
    let (thread_id, out) = env.exec_ok("shell: echo made-by-tool > note.txt && pwd");
    assert!(uuid::Uuid::parse_str(&thread_id).is_ok(), "{thread_id}");
    assert_eq!(
        std::fs::read_to_string(env.project.join("note.txt")).expect("the tool wrote in the cwd"),
        "made-by-tool\n"
    );
    // The final message is the model's answer to the tool output, which holds `pwd`.
    assert!(out.starts_with("tool output:"), "{out}");
    assert!(out.contains(&env.project.display().to_string()), "{out}");

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "one request for the call, one after its output"
    );
    assert!(requests[0].tool_names().contains(&"shell".to_owned()));
    let second = requests[1].conversation();
    assert!(
        second
            .iter()
            .any(|e| e.starts_with("output: ") && e.contains("Exit code: 0")),
        "{second:?}"
    );
}

#[test]
fn exec_runs_a_shell_call_on_the_responses_wire() {
    shell_call_runs_in_cwd_and_reaches_the_model(Wire::Responses);
}

#[test]
fn exec_runs_a_shell_call_on_the_chat_wire() {
    shell_call_runs_in_cwd_and_reaches_the_model(Wire::Chat);
}

#[test]
fn resume_in_a_new_process_sends_the_whole_conversation_in_order() {
    for wire in [Wire::Responses, Wire::Chat] {
        let server = server();
        let env = TestEnv::new(&server, wire);
        let (thread_id, _) = env.exec_ok("shell: echo first-output");
        let answer = env.resume_ok(&thread_id, "RECALL");
        assert_eq!(
            answer.trim(),
            "recall: shell: echo first-output (1 tool outputs)"
        );

        let last = server.requests().pop().expect("a request");
        let conversation: Vec<String> = last
            .conversation()
            .into_iter()
            .filter(|e| !e.starts_with("system: "))
            .collect();
        assert_eq!(conversation.len(), 5, "{conversation:?}");
        assert_eq!(conversation[0], "user: shell: echo first-output");
        assert!(
            conversation[1].starts_with("call shell "),
            "{conversation:?}"
        );
        assert!(conversation[1].contains("echo first-output"));
        assert!(
            conversation[2].starts_with("output: ") && conversation[2].contains("first-output")
        );
        assert!(conversation[3].starts_with("assistant: tool output:"));
        assert_eq!(conversation[4], "user: RECALL");
    }
}

#[test]
fn transcript_lines_have_the_documented_shape() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("shell: echo hi");
    let path = env.rollout_of(&thread_id);

    // sessions/YYYY/MM/DD/rollout-YYYY-MM-DDThh-mm-ss-<id>.jsonl
    let relative = path
        .strip_prefix(env.home.join("sessions"))
        .expect("under sessions");
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert!(parts[3].starts_with(&format!("rollout-{}-{}-{}T", parts[0], parts[1], parts[2])));

    let records = parse_complete_lines(&path);
    assert_eq!(records[0]["type"], "session_meta");
    assert_eq!(records[0]["payload"]["id"], thread_id.as_str());
    assert_eq!(records[0]["payload"]["originator"], "baton");
    assert_eq!(records[0]["payload"]["source"], "exec");
    assert_eq!(
        records[0]["payload"]["cwd"],
        env.project.display().to_string().as_str()
    );
    for record in &records {
        let object = record.as_object().expect("object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["payload", "timestamp", "type"]);
        let ts = record["timestamp"].as_str().expect("timestamp");
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
    }
    let types: Vec<String> = records
        .iter()
        .map(|r| {
            let kind = r["type"].as_str().unwrap_or_default();
            match r["payload"]["type"].as_str() {
                Some(inner) if kind != "turn_context" => format!("{kind}/{inner}"),
                _ => kind.to_owned(),
            }
        })
        .collect();
    let position = |name: &str| {
        types
            .iter()
            .position(|t| t == name)
            .unwrap_or_else(|| panic!("{name} missing from {types:?}"))
    };
    assert!(position("turn_context") < position("response_item/message"));
    assert!(position("response_item/function_call") < position("event_msg/exec_command_end"));
    assert!(
        position("response_item/function_call") < position("response_item/function_call_output")
    );
    assert!(types.contains(&"event_msg/agent_message".to_owned()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&env.home.join("sessions")), 0o700);
    }
}

#[test]
fn kill_during_a_tool_call_keeps_every_line_and_resume_continues() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut child = env
        .baton()
        .args(["exec", "shell: sleep 30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn baton exec");
    // Wait until the call is on disk, i.e. the tool is running.
    let deadline = Instant::now() + Duration::from_secs(30);
    let path = loop {
        let found = env.rollout_files().into_iter().find(|p| {
            std::fs::read_to_string(p).is_ok_and(|text| text.contains("\"function_call\""))
        });
        if let Some(path) = found {
            break path;
        }
        assert!(
            Instant::now() < deadline,
            "the tool call never reached the transcript"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let records = parse_complete_lines(&path);
    assert!(
        records
            .iter()
            .any(|r| r["payload"]["type"] == "function_call")
    );
    let thread_id = records[0]["payload"]["id"].as_str().expect("id").to_owned();

    let answer = env.resume_ok(&thread_id, "RECALL");
    // The dangling call got a synthetic output, so the model saw a paired call.
    assert_eq!(answer.trim(), "recall: shell: sleep 30 (1 tool outputs)");
    let last = server.requests().pop().expect("request");
    assert!(
        last.conversation()
            .iter()
            .any(|e| e.starts_with("output: ") && e.contains("aborted")),
        "{:?}",
        last.conversation()
    );
    parse_complete_lines(&path);
}

#[test]
fn torn_last_line_and_corrupt_middle_line_still_load_and_continue() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("first prompt");
    let path = env.rollout_of(&thread_id);
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{this is not json");
    let mut broken = lines.join("\n");
    broken.push('\n');
    broken.push_str("{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"respo");
    std::fs::write(&path, broken).expect("write damaged transcript");

    let answer = env.resume_ok(&thread_id, "RECALL");
    assert_eq!(answer.trim(), "recall: first prompt (0 tool outputs)");

    // The append after the torn tail started on a fresh line: every line but the two damaged
    // ones parses, and none holds two records.
    let text = std::fs::read_to_string(&path).expect("read");
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(text.ends_with('\n'));
}

#[test]
fn resume_finds_the_session_with_the_index_deleted_and_rebuilds_it() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("remember me");
    let index = env.home.join("state.sqlite");
    assert!(index.exists(), "the index is created");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", index.display()));
    }
    let answer = env.resume_ok(&thread_id, "RECALL");
    assert_eq!(answer.trim(), "recall: remember me (0 tool outputs)");
    assert!(index.exists(), "the index is back");
    assert_eq!(env.listed_ids(), [thread_id]);
}

#[test]
fn model_server_down_is_a_clear_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let env = TestEnv::with_provider(&format!(
        "[model_providers.scripted]\nname = \"Down Provider\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\n"
    ));
    let output = env.run(&["exec", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("Down Provider"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains(SECRET_KEY), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The prompt is not lost: the error names the saved thread to continue.
    let thread_id = thread_id_of(&output);
    assert!(
        err.contains(&format!("baton exec resume {thread_id}")),
        "{err}"
    );
    assert_eq!(env.rollout_files().len(), 1);
}

#[test]
fn unauthorized_is_not_retried_and_never_shows_the_key() {
    let server =
        ScriptedModelServer::start_blocking(|_req: &baton_test_support::RecordedRequest| {
            Reply::status(401)
        })
        .expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let output = env.run(&["exec", "hello"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("401"), "{err}");
    assert!(err.contains(&server.addr().to_string()), "{err}");
    assert!(!err.contains(SECRET_KEY), "{err}");
    assert_eq!(server.requests().len(), 1, "401 is not retried");
    let auth = server.requests()[0]
        .header("authorization")
        .map(str::to_owned);
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {SECRET_KEY}").as_str())
    );
}

#[test]
fn a_500_then_200_succeeds_after_a_retry() {
    let server =
        ScriptedModelServer::start_blocking(first_n_then(1, Reply::status(500), default_script))
            .expect("server");
    let env = TestEnv::new(&server, Wire::Chat);
    let (_, out) = env.exec_ok("hello");
    assert_eq!(out.trim(), "echo: hello");
    assert_eq!(server.requests().len(), 2);
}

/// The key must reach neither a command, nor the model, nor any file: the scripted model has
/// the shell tool print the whole environment and the key variable, and a copy of the key that
/// reached the command under another name (which only redaction can catch).
#[test]
fn the_api_key_never_reaches_any_file() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let prompt = format!(
        "shell: env; echo \"key=${KEY_VAR}\"; echo \"copy=$BATON_TEST_COPY\"; echo done-listing"
    );
    let output = env
        .baton()
        .env("BATON_TEST_COPY", SECRET_KEY)
        .args(["exec", &prompt])
        .output()
        .expect("run baton");
    assert_success(&output);
    let thread_id = thread_id_of(&output);
    let answer = stdout(&output);
    // The command really ran and printed its environment.
    assert!(answer.contains("PATH="), "{answer}");
    assert!(answer.contains("done-listing"), "{answer}");
    assert!(
        answer.contains("key=\n"),
        "the key variable is unset: {answer}"
    );
    assert!(answer.contains("copy=[redacted]"), "{answer}");
    assert!(!answer.contains(KEY_VAR), "{answer}");

    // A failed turn writes its error into the transcript: the key must not be in it either.
    let failed = env.run(&["exec", "resume", &thread_id, "fail: 401"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(!stderr(&failed).contains(SECRET_KEY), "{}", stderr(&failed));

    let mut files = Vec::new();
    collect_files(&env.home, &mut files);
    assert!(
        files.iter().any(|file| file.ends_with("state.sqlite")),
        "{files:?}"
    );
    assert!(!env.rollout_files().is_empty(), "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            !contains(&bytes, SECRET_KEY.as_bytes()),
            "the key is in {}",
            file.display()
        );
    }
    let requests = server.requests();
    assert!(requests.len() >= 3, "{}", requests.len());
    for (number, request) in requests.iter().enumerate() {
        let body = request.body.to_string();
        assert!(
            !body.contains(SECRET_KEY),
            "the key is in request {number}: {body}"
        );
        for (name, value) in &request.headers {
            // The one place the key belongs.
            if !name.eq_ignore_ascii_case("authorization") {
                assert!(!value.contains(SECRET_KEY), "the key is in header {name}");
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// `[shell_environment_policy]`: names that look like secrets and the ssh agent stay out of a
/// command's environment by default, and `set` adds variables.
#[test]
fn commands_get_a_filtered_environment_and_what_the_config_sets() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let config = env.home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[shell_environment_policy]\nset = { GREETING = \"hello-from-set\" }\n");
    std::fs::write(&config, text).expect("write config");
    let output = env
        .baton()
        .env("MY_SECRET_X", "hidden-value")
        .env("db_password", "hidden-value")
        .env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .env("PLAIN_SETTING", "visible-value")
        .args(["exec", "shell: env; echo done-listing"])
        .output()
        .expect("run baton");
    assert_success(&output);
    let answer = stdout(&output);
    assert!(answer.contains("done-listing"), "{answer}");
    assert!(answer.contains("PLAIN_SETTING=visible-value"), "{answer}");
    assert!(answer.contains("GREETING=hello-from-set"), "{answer}");
    for hidden in [
        "MY_SECRET_X",
        "db_password",
        "SSH_AUTH_SOCK",
        "hidden-value",
    ] {
        assert!(
            !answer.contains(hidden),
            "{hidden} reached the command: {answer}"
        );
    }
}

#[test]
fn sessions_show_and_list() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let (first, _) = env.exec_ok("alpha prompt");
    let (second, _) = env.exec_ok("beta prompt");

    assert_eq!(
        env.listed_ids(),
        [second.clone(), first.clone()],
        "newest first"
    );
    assert_eq!(env.listed_sessions()[0]["first_prompt"], "beta prompt");

    let shown = env.run(&["sessions", "show", &first]);
    assert_success(&shown);
    let text = stdout(&shown);
    assert!(
        text.contains("alpha prompt") && text.contains("echo: alpha prompt"),
        "{text}"
    );

    let unknown = env.run(&["sessions", "show", "019c7616-b3e9-7782-9ea8-b53e6bb09329"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("019c7616-b3e9-7782-9ea8-b53e6bb09329"));
    let malformed = env.run(&["exec", "resume", "../../etc/passwd", "hi"]);
    assert_eq!(malformed.status.code(), Some(1));
    assert!(
        stderr(&malformed).contains("not a thread id"),
        "{}",
        stderr(&malformed)
    );
}

#[test]
fn a_broken_config_names_the_file_and_line_and_exits_2() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let config = env.home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    // A known key with a value it cannot take, on line 3.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "approval_policy = \"sometimes\"");
    std::fs::write(&config, lines.join("\n") + "\n").expect("write");
    let output = env.run(&["exec", "hi"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    // Invalid TOML is reported the same way.
    std::fs::write(&config, "model = \"a\"\nmodel_provider = [\n").expect("write");
    let output = env.run(&["exec", "hi"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("line "), "{}", stderr(&output));
}

#[test]
fn a_config_copied_from_codex_with_keys_baton_does_not_use_still_works() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let config = env.home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!(
            "notify = [\"say\"]\nmodel_verbosity = \"low\"\n{text}\n[tui]\nanimations = false\n"
        ),
    )
    .expect("write");
    let (_, answer) = env.exec_ok("hello");
    assert_eq!(answer.trim(), "echo: hello");
}

#[test]
fn overrides_on_the_command_line_change_the_model() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let output = env.run(&["--model", "flag-model", "exec", "hi"]);
    assert_success(&output);
    let output = env.run(&["-c", "model=\"dash-c-model\"", "exec", "hi"]);
    assert_success(&output);
    let models: Vec<String> = server
        .requests()
        .iter()
        .filter_map(|r| r.model().map(str::to_owned))
        .collect();
    assert_eq!(models, ["flag-model", "dash-c-model"]);
}

#[test]
fn exec_json_streams_the_turn_as_events() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let output = env.run(&["exec", "--json", "shell: echo streamed"]);
    assert_success(&output);
    let thread_id = thread_id_of(&output);
    let events: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON event"))
        .collect();
    assert_eq!(events[0]["type"], "thread.started");
    assert_eq!(events[0]["thread_id"], thread_id.as_str());
    let items: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "item.completed")
        .map(|e| e["item"]["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        items,
        [
            "message",
            "function_call",
            "function_call_output",
            "message"
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "progress" && e["message"] == "running: echo streamed")
    );
    let last = events.last().expect("events");
    assert_eq!(last["type"], "turn.completed");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("streamed"))
    );
}

#[test]
fn a_closed_stdout_ends_quietly_without_a_panic() {
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    env.exec_ok("one");
    env.exec_ok("two");
    // `| head -c 0`: a reader that closes the pipe at once.
    let mut child = env
        .baton()
        .args(["sessions", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    let err = stderr(&output);
    assert!(!err.contains("panicked"), "{err}");
    assert!(output.status.success(), "{:?} {err}", output.status);
}

#[test]
fn an_unusable_provider_fails_before_a_session_is_created() {
    let env = TestEnv::with_provider(
        "[model_providers.scripted]\nname = \"Broken\"\nbase_url = \"not a url\"\n",
    );
    let output = env.run(&["exec", "hello"]);
    assert_eq!(output.status.code(), Some(2), "a config the user must fix");
    assert!(stderr(&output).contains("Broken"), "{}", stderr(&output));
    assert!(
        env.rollout_files().is_empty(),
        "no empty session was left behind"
    );
}

#[test]
fn the_thread_id_is_printed_as_soon_as_the_turn_starts() {
    use std::io::BufRead;
    let server = server();
    let env = TestEnv::new(&server, Wire::Responses);
    let mut child = env
        .baton()
        .args(["exec", "shell: sleep 30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("a line on stderr");
    assert!(first.starts_with("thread: "), "{first}");
    // The 30 s command is still running: the id came before the end of the turn.
    assert!(child.try_wait().expect("poll").is_none());
    child.kill().expect("kill");
    child.wait().expect("reap");
}
