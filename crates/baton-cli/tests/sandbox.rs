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

/// Whether baton can enforce what a test checks here; prints why not, and fails under
/// `CI=true` (CI machines must enforce every promise).
fn enforced(what: &str, usable: impl Fn(&baton_exec::SandboxReport) -> bool) -> bool {
    let report = baton_exec::sandbox_capabilities();
    if usable(&report) {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |value| value != "true"),
        "CI=true: {what} is not enforced here:\n{report}"
    );
    eprintln!("note: skipping, {what} is not enforced on this machine:\n{report}");
    false
}

#[test]
fn sandbox_check_prints_one_line_per_promise() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let output = env.run(&["sandbox", "check"]);
    assert_success(&output);
    let text = stdout(&output);
    let prefixes: Vec<&str> = text
        .lines()
        .map(|line| line.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        prefixes,
        [
            "landlock",
            "read-only",
            "workspace-write",
            "network when network_access = false",
            "unix sockets when network_access = false",
            "capabilities of sandboxed commands",
            "descriptors above 2",
            "escaped processes (setsid, double fork)",
            ".git read-only under workspace-write",
            "baton's home inside a writable root",
        ],
        "{text}"
    );
    // The binary says what the library measured, line for line; the tests in
    // crates/baton-exec/tests/sandbox.rs prove each claim on this kernel.
    assert_eq!(
        text.trim_end(),
        baton_exec::sandbox_capabilities().to_string(),
        "{text}"
    );
}

#[test]
fn unix_sockets_outside_the_workspace_are_off_with_the_network() {
    if !enforced("turning the network off", |report| {
        report.filesystem_enforced() && report.network_enforced()
    }) {
        return;
    }
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let socket = env.root.join("outside/agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let connect = format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\"); print(\"unix-connected\")'",
        socket.display()
    );

    let answer = run_under(&env, "workspace-write", &connect);
    assert!(!answer.contains("unix-connected"), "{answer}");
    assert!(!answer.contains("Exit code: 0"), "{answer}");
    assert!(
        listener
            .accept()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::WouldBlock),
        "the listener saw a connection"
    );

    let output = env.run(&[
        "-c",
        &format!(
            "sandbox_workspace_write.allow_unix_sockets=[\"{}\"]",
            socket.display()
        ),
        "exec",
        &format!("shell: {connect}"),
    ]);
    assert_success(&output);
    assert!(
        stdout(&output).contains("unix-connected"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_sandboxed_command_has_no_capabilities_and_no_escaped_process_outlives_the_turn() {
    if !enforced("a PID namespace per command", |report| {
        report.filesystem_enforced() && report.escaped_processes_killed
    }) {
        return;
    }
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let marker = format!("baton-cli-escape-{}", std::process::id());
    let answer = run_under(
        &env,
        "workspace-write",
        &format!(
            "setsid -f sh -c 'touch ready; sleep 1000; exit # {marker}' </dev/null >/dev/null 2>&1; \
             while [ ! -e ready ]; do sleep 0.01; done; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status"
        ),
    );
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        assert!(
            answer.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {answer}"
        );
    }
    // baton has exited: nothing the command started may still run (bounded wait for the
    // kernel to finish tearing the namespace down).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let survivors: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|entry| {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
            })
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        if survivors.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            for pid in &survivors {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain syscall; cleans up after a failed test.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            panic!("processes {survivors:?} outlived the turn");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The workspace contains baton's home (as when the server starts in `~`): a sandboxed command
/// cannot rewrite its config (which would widen the sandbox of the next call) nor forge tokens,
/// and apply_patch refuses the home too.
#[test]
fn baton_home_inside_the_workspace_stays_untouched() {
    if !enforced("hiding baton's home", |report| {
        report.filesystem_enforced() && report.git_read_only
    }) {
        return;
    }
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = env_with(&server);
    let config = env.home.join("config.toml");
    let before = std::fs::read_to_string(&config).expect("config");
    let workspace = env.root.to_str().expect("utf-8");
    let command = format!(
        "echo '[sandbox_workspace_write]' >> {config} ; echo 'alice sha256:00' >> {tokens} ; \
         echo ok > {inside} && echo inside-ok",
        config = config.display(),
        tokens = env.home.join("tokens").display(),
        inside = env.root.join("inside.txt").display(),
    );
    let output = env.run(&[
        "-c",
        "sandbox_mode=\"workspace-write\"",
        "exec",
        "--cd",
        workspace,
        &format!("shell: {command}"),
    ]);
    assert_success(&output);
    let answer = stdout(&output);
    assert!(answer.contains("inside-ok"), "{answer}");
    assert_eq!(std::fs::read_to_string(&config).expect("config"), before);
    assert!(!env.home.join("tokens").exists(), "{answer}");

    let patch = "*** Begin Patch\n*** Add File: baton-home/tokens\n+alice sha256:00\n*** End Patch";
    let output = env.run(&[
        "-c",
        "sandbox_mode=\"workspace-write\"",
        "exec",
        "--cd",
        workspace,
        &format!("patch: {patch}"),
    ]);
    assert_success(&output);
    let answer = stdout(&output);
    assert!(answer.contains("baton's home"), "{answer}");
    assert!(!env.home.join("tokens").exists(), "{answer}");
}
