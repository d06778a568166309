//! `run_shell` without a sandbox: argv handling, output capture, exit status, timeouts and
//! cancellation (which must take the whole process group down).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_exec::{ExecError, OutputCap, ShellOutput, ShellRequest, run_shell};
use baton_protocol::{SandboxMode, SandboxPolicy};
use tokio_util::sync::CancellationToken;

/// Failure guard only (a hang is a failure); no test here measures how fast anything is.
const GUARD: Duration = Duration::from_secs(60);

fn request(argv: &[&str], cwd: &Path) -> ShellRequest {
    ShellRequest {
        argv: argv.iter().map(|word| word.to_string()).collect(),
        cwd: cwd.to_path_buf(),
        workspace: cwd.to_path_buf(),
        timeout: Duration::from_secs(60),
        sandbox: SandboxPolicy {
            mode: SandboxMode::DangerFullAccess,
            ..SandboxPolicy::default()
        },
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
    }
}

async fn run(req: ShellRequest) -> ShellOutput {
    run_shell(req, CancellationToken::new())
        .await
        .expect("command runs")
}

/// Whether `pid` is gone (or a zombie waiting for a parent that does not reap).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn assert_dies(pid: u32) {
    let started = Instant::now();
    while !is_dead(pid) {
        assert!(started.elapsed() < GUARD, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn first_line_pid(output: &str) -> u32 {
    output
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected a pid on the first line of {output:?}"))
}

#[tokio::test]
async fn runs_argv_without_a_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(request(&["echo", "$HOME", "a;b"], dir.path())).await;
    assert_eq!(out.output, "$HOME a;b\n");
    assert_eq!(out.exit_code, Some(0));
    let text = out.to_model_text();
    assert!(text.starts_with("Exit code: 0\nWall time: "), "{text}");
    assert!(text.ends_with("Output:\n$HOME a;b\n"), "{text}");
}

#[tokio::test]
async fn runs_in_the_requested_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let out = run(request(&["pwd", "-P"], &sub)).await;
    let expected = sub.canonicalize().expect("canonical");
    assert_eq!(PathBuf::from(out.output.trim_end()), expected);
}

#[tokio::test]
async fn reports_exit_code_and_captures_stderr_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(request(
        &["sh", "-c", "echo one; echo two >&2; echo three; exit 3"],
        dir.path(),
    ))
    .await;
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.output, "one\ntwo\nthree\n");
    assert!(out.to_model_text().starts_with("Exit code: 3\n"));
}

#[tokio::test]
async fn reports_the_signal_that_killed_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(request(&["sh", "-c", "kill -9 $$"], dir.path())).await;
    assert_eq!(out.exit_code, None);
    assert_eq!(out.signal, Some(9));
    let text = out.to_model_text();
    assert!(text.contains("killed by signal 9, SIGKILL"), "{text}");
}

#[tokio::test]
async fn caps_output_keeping_head_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request(
        &[
            "sh",
            "-c",
            "echo START; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END",
        ],
        dir.path(),
    );
    req.output_cap = OutputCap {
        head_bytes: 1000,
        tail_bytes: 1000,
    };
    let out = run(req).await;
    // 6 + 100000 + 1 + 4 bytes were written; 2000 are kept.
    assert_eq!(out.truncated_bytes, 100_011 - 2000);
    assert!(
        out.output.starts_with("START\naaa"),
        "{}",
        &out.output[..20]
    );
    assert!(out.output.ends_with("aaa\nEND\n"));
    assert!(
        out.output
            .contains("\n[... 98011 bytes cut from the middle of the output ...]\n"),
        "cut message missing"
    );
    assert!(out.output.len() < 2100);
    assert!(
        out.to_model_text()
            .contains("98011 bytes cut from the middle")
    );
}

/// Runs `req`; the command under test never ends on its own, so a run that does not return
/// within [`GUARD`] is a hang (the behaviour under test is broken), never a slow machine.
async fn run_guarded(req: ShellRequest, cancel: CancellationToken) -> ShellOutput {
    tokio::time::timeout(GUARD, run_shell(req, cancel))
        .await
        .expect("run_shell hangs on a command that never ends by itself")
        .expect("command runs")
}

/// The pid a command wrote into `path`, once it has (the command's "ready" signal).
async fn wait_for_pid_file(path: &Path) -> u32 {
    let started = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        {
            return pid;
        }
        assert!(started.elapsed() < GUARD, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut req = request(
        &["bash", "-c", "sleep infinity & echo $!; sleep infinity"],
        dir.path(),
    );
    req.timeout = Duration::from_millis(500);
    let out = run_guarded(req, CancellationToken::new()).await;
    assert!(out.timed_out);
    assert_eq!(out.exit_code, None);
    assert_dies(first_line_pid(&out.output)).await;
    let text = out.to_model_text();
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("killed after"), "{text}");
}

#[tokio::test]
async fn background_job_holding_the_pipe_does_not_hang_us() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The background job keeps stdout open forever: waiting for EOF would never return.
    let req = request(&["bash", "-c", "sleep infinity & echo $!"], dir.path());
    let out = run_guarded(req, CancellationToken::new()).await;
    assert_eq!(out.exit_code, Some(0));
    assert!(!out.timed_out);
    assert_dies(first_line_pid(&out.output)).await;
}

#[tokio::test]
async fn cancel_kills_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    // Cancelled once the background job exists (its pid written to `ready`), not after a
    // guessed delay.
    let script = format!(
        "sleep infinity & echo $! > {0}.tmp && mv {0}.tmp {0}; sleep infinity",
        ready.display()
    );
    let cancel = CancellationToken::new();
    let running = tokio::spawn(run_guarded(
        request(&["bash", "-c", &script], dir.path()),
        cancel.clone(),
    ));
    let background = wait_for_pid_file(&ready).await;
    cancel.cancel();
    let out = running.await.expect("task");
    assert!(out.cancelled);
    assert!(!out.timed_out);
    assert_dies(background).await;
    assert!(out.to_model_text().contains("cancelled"));
}

#[tokio::test]
async fn dropping_the_future_kills_the_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep infinity", pid_file.display());
    let task = tokio::spawn(run_shell(
        request(&["bash", "-c", &script], dir.path()),
        CancellationToken::new(),
    ));
    let pid = wait_for_pid_file(&pid_file).await;
    task.abort();
    assert!(task.await.expect_err("aborted").is_cancelled());
    assert_dies(pid).await;
}

#[tokio::test]
async fn missing_program_is_named_with_the_cwd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = run_shell(
        request(&["no-such-program-baton", "x"], dir.path()),
        CancellationToken::new(),
    )
    .await
    .expect_err("must fail");
    assert!(
        matches!(error, ExecError::ProgramNotFound { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("`no-such-program-baton` not found"),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn missing_cwd_and_empty_command_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("gone");
    let error = run_shell(request(&["ls"], &gone), CancellationToken::new())
        .await
        .expect_err("must fail");
    assert!(matches!(error, ExecError::CwdMissing { .. }), "{error:?}");
    assert!(error.to_string().contains("does not exist"));

    let error = run_shell(request(&[], dir.path()), CancellationToken::new())
        .await
        .expect_err("must fail");
    assert!(matches!(error, ExecError::EmptyCommand), "{error:?}");
}
