//! `baton sessions fork`: a new thread from an existing one; the source is untouched.

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::*;

#[test]
fn a_fork_continues_independently_and_the_source_is_unchanged() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let (source, _) = env.exec_ok("one");
    env.resume_ok(&source, "shell: echo two");
    env.resume_ok(&source, "three");
    let source_path = env.rollout_of(&source);
    let source_bytes = std::fs::read(&source_path).expect("read");

    let output = env.run(&["sessions", "fork", &source, "--at-turn", "2"]);
    assert_success(&output);
    let fork = thread_id_of(&output);
    assert_ne!(fork, source);

    let answer = env.resume_ok(&fork, "RECALL");
    assert_eq!(
        answer.trim(),
        "recall: one | shell: echo two (1 tool outputs)"
    );
    let answer = env.resume_ok(&source, "RECALL");
    assert_eq!(
        answer.trim(),
        "recall: one | shell: echo two | three (1 tool outputs)"
    );
    let after = std::fs::read(&source_path).expect("read");
    assert!(
        after.starts_with(&source_bytes),
        "the fork never wrote to the source"
    );
    let fork_meta = &parse_complete_lines(&env.rollout_of(&fork))[0];
    assert_eq!(fork_meta["payload"]["forked_from"], source.as_str());

    let too_far = env.run(&["sessions", "fork", &source, "--at-turn", "9"]);
    assert_eq!(too_far.status.code(), Some(1));
    assert!(
        stderr(&too_far).contains("has 4 turns"),
        "{}",
        stderr(&too_far)
    );
}
