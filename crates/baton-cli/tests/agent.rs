//! What the agent sees and reports (issue 17): base instructions, `prompt_cache_key`, project
//! instructions (AGENTS.md), plans, usage and parallel tool calls. Every test reads what the
//! scripted model server received.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
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
