//! Long sessions: compaction before the context window fills up, and after the provider says
//! it overflowed (issue 9).

mod common;

use baton_test_support::{RecordedRequest, Reply, ScriptedModelServer, Wire, default_script};
use common::*;

/// Small enough to compact within a few turns; the base instructions and tool specs alone take
/// about 1 600 tokens of it.
const WINDOW: usize = 3_000;

fn compacted_lines(env: &TestEnv, thread_id: &str) -> Vec<serde_json::Value> {
    parse_complete_lines(&env.rollout_of(thread_id))
        .into_iter()
        .filter(|r| r["type"] == "compacted")
        .collect()
}

fn set_window(env: &TestEnv, window: usize) {
    let config = env.home.join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("model_context_window = {window}\n{text}")).expect("write");
}

#[test]
fn a_session_past_a_small_window_compacts_and_continues_after_a_restart() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    set_window(&env, WINDOW);

    let (thread_id, _) = env.exec_ok("shell: printf 'a%.0s' $(seq 300)");
    for turn in 0..8 {
        env.resume_ok(
            &thread_id,
            &format!("shell: printf 'b{turn}%.0s' $(seq 300)"),
        );
    }
    let compactions = compacted_lines(&env, &thread_id);
    assert!(
        !compactions.is_empty(),
        "the transcript has a compacted line"
    );
    let replacement = compactions[compactions.len() - 1]["payload"]["replacement_history"]
        .as_array()
        .expect("replacement_history")
        .clone();
    let first = replacement[0]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        first.starts_with("Summary of the earlier conversation"),
        "{first}"
    );

    // Every request stayed within the window (the scripted server counts bytes / 4).
    for request in server.requests() {
        let tokens = serde_json::to_vec(&request.body).expect("json").len() / 4;
        assert!(
            tokens <= WINDOW,
            "a request of {tokens} tokens exceeds the window"
        );
    }

    // A new process rebuilds history from the compacted line: the first turn is gone, the
    // summary is there.
    let answer = env.resume_ok(&thread_id, "RECALL");
    let last = server.requests().pop().expect("request");
    let conversation = last.conversation();
    assert!(
        conversation[0].starts_with("user: Summary of the earlier conversation"),
        "{conversation:?}"
    );
    assert!(
        !conversation.iter().any(|e| e.contains("printf 'a%.0s'")),
        "the first turn was compacted away: {conversation:?}"
    );
    assert!(answer.starts_with("recall: "), "{answer}");
}

#[test]
fn context_length_exceeded_leads_to_compaction_and_a_successful_retry() {
    let script = |request: &RecordedRequest| {
        let conversation = request.conversation();
        let summarized = conversation
            .iter()
            .any(|e| e.contains("Summary of the earlier conversation"));
        let asks_for_summary = request
            .last_user_text()
            .is_some_and(|t| t.contains("context window is nearly full"));
        if asks_for_summary {
            Reply::text("the user said hello twice")
        } else if !summarized && conversation.len() >= 3 {
            Reply::ContextLengthExceeded
        } else {
            default_script(request)
        }
    };
    let server = ScriptedModelServer::start_blocking(script).expect("server");
    let env = TestEnv::new(&server, Wire::Chat);
    let (thread_id, _) = env.exec_ok("hello");
    let answer = env.resume_ok(&thread_id, "hello again");
    assert_eq!(answer.trim(), "echo: hello again");
    let compactions = compacted_lines(&env, &thread_id);
    assert_eq!(compactions.len(), 1);
    assert_eq!(
        compactions[0]["payload"]["message"],
        "the user said hello twice"
    );
}

#[test]
fn compact_on_demand_from_exec_resume() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("first");
    assert!(compacted_lines(&env, &thread_id).is_empty());
    let output = env.run(&["exec", "resume", &thread_id, "second", "--compact"]);
    assert_success(&output);
    assert_eq!(compacted_lines(&env, &thread_id).len(), 1);
}
