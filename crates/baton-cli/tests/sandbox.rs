//! The sandbox and apply_patch as the agent uses them, through the real binary (issue 6).

mod common;

use baton_test_support::{ScriptedModelServer, Wire, default_script};
use common::*;

fn env_with(server: &ScriptedModelServer) -> TestEnv {
    let env = TestEnv::new(server, Wire::Responses);
    std::fs::create_dir_all(env.root.join("outside")).expect("outside dir");
    env
}

/// Runs one `shell:` prompt under `sandbox_mode` and returns the model's final answer, which
/// quotes the tool output.
fn run_under(env: &TestEnv, mode: &str, command: &str) -> String {
    let output = env.run(&[
        "-c",
        &format!("sandbox_mode=\"{mode}\""),
        "exec",
        &format!("shell: {command}"),
    ]);
    assert_success(&output);
    stdout(&output)
}

#[test]
fn workspace_write_allows_the_cwd_and_blocks_the_rest() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let outside = env.root.join("outside/escaped.txt");

    let answer = run_under(
        &env,
        "workspace-write",
        "echo ok > inside.txt && echo wrote",
    );
    assert!(answer.contains("Exit code: 0"), "{answer}");
    assert!(env.project.join("inside.txt").exists());

    let answer = run_under(
        &env,
        "workspace-write",
        &format!("echo no > {}", outside.display()),
    );
    assert!(
        !outside.exists(),
        "the sandbox let a write outside the cwd through"
    );
    assert!(
        !answer.contains("Exit code: 0"),
        "the failure reaches the model: {answer}"
    );
    assert!(
        answer.contains("Permission denied") || answer.contains("not permitted"),
        "{answer}"
    );
}

#[test]
fn read_only_blocks_writes_in_the_cwd_and_full_access_allows_everything() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let answer = run_under(&env, "read-only", "echo no > blocked.txt");
    assert!(!env.project.join("blocked.txt").exists());
    assert!(!answer.contains("Exit code: 0"), "{answer}");

    let answer = run_under(
        &env,
        "read-only",
        "cat /etc/hostname > /dev/null && echo read-ok",
    );
    assert!(
        answer.contains("read-ok"),
        "reading stays allowed: {answer}"
    );

    let outside = env.root.join("outside/full.txt");
    run_under(
        &env,
        "danger-full-access",
        &format!("echo yes > inside.txt && echo yes > {}", outside.display()),
    );
    assert!(outside.exists() && env.project.join("inside.txt").exists());
}

#[test]
fn network_is_off_in_the_sandbox_unless_configured() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");

    let answer = run_under(&env, "workspace-write", &connect);
    assert!(
        !answer.contains("connected\n") && !answer.contains("Exit code: 0"),
        "{answer}"
    );

    let output = env.run(&[
        "-c",
        "sandbox_workspace_write.network_access=true",
        "exec",
        &format!("shell: {connect}"),
    ]);
    assert_success(&output);
    assert!(stdout(&output).contains("connected"), "{}", stdout(&output));
}

#[test]
fn apply_patch_edits_files_in_the_cwd_and_refuses_paths_outside() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    std::fs::write(env.project.join("hello.txt"), "hello\nworld\n").expect("seed file");
    let patch = "*** Begin Patch\n*** Add File: new.txt\n+created\n*** Update File: hello.txt\n@@\n hello\n-world\n+baton\n*** End Patch";
    let (thread_id, answer) = env.exec_ok(&format!("patch: {patch}"));
    assert_eq!(
        std::fs::read_to_string(env.project.join("new.txt")).expect("added"),
        "created\n"
    );
    assert_eq!(
        std::fs::read_to_string(env.project.join("hello.txt")).expect("updated"),
        "hello\nbaton\n"
    );
    assert!(answer.starts_with("tool output:"), "{answer}");
    let records = parse_complete_lines(&env.rollout_of(&thread_id));
    let patch_event = records
        .iter()
        .find(|r| r["payload"]["type"] == "patch_apply_end")
        .expect("patch_apply_end recorded");
    assert_eq!(patch_event["payload"]["success"], true);

    let escape = "*** Begin Patch\n*** Add File: ../outside/escape.txt\n+no\n*** End Patch";
    let (_, answer) = env.exec_ok(&format!("patch: {escape}"));
    assert!(!env.root.join("outside/escape.txt").exists());
    assert!(answer.contains("apply_patch failed"), "{answer}");

    let (_, answer) = env.exec_ok("patch: this is not a patch");
    assert!(answer.contains("apply_patch failed"), "{answer}");
}
