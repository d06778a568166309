//! The OS sandbox of `run_shell` on this machine. Each test is skipped, with a note, only when
//! the kernel cannot enforce what it checks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_exec::{OutputCap, ShellOutput, ShellRequest, run_shell, sandbox_capabilities};
use baton_protocol::{SandboxMode, SandboxPolicy};
use tokio_util::sync::CancellationToken;

fn filesystem_supported() -> bool {
    let report = sandbox_capabilities();
    if !report.filesystem_enforced() {
        eprintln!("note: skipping, this kernel cannot enforce the sandbox:\n{report}");
    }
    report.filesystem_enforced()
}

async fn run_sandboxed(
    script: &str,
    cwd: &Path,
    mode: SandboxMode,
    network_access: bool,
) -> ShellOutput {
    let request = ShellRequest {
        argv: vec!["bash".into(), "-c".into(), script.into()],
        cwd: cwd.to_path_buf(),
        timeout: Duration::from_secs(30),
        sandbox: SandboxPolicy {
            mode,
            writable_roots: Vec::new(),
            network_access,
        },
        output_cap: OutputCap::default(),
    };
    run_shell(request, CancellationToken::new())
        .await
        .expect("sandboxed command runs")
}

/// A directory outside the system temp dir, so that no temp-dir exception could allow it.
fn outside_dir() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tempfile::tempdir_in(base).expect("tempdir")
}

#[tokio::test]
async fn workspace_write_allows_the_cwd_and_blocks_elsewhere() {
    if !filesystem_supported() {
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    let outside = outside_dir();
    let target = outside.path().join("escape.txt");
    let script = format!(
        "echo in > inside.txt && echo inside-ok; echo out > {} || echo outside-blocked; \
         cat /etc/hostname > /dev/null && echo read-ok",
        target.display()
    );
    let out = run_sandboxed(&script, cwd.path(), SandboxMode::WorkspaceWrite, false).await;
    assert!(out.output.contains("inside-ok"), "{}", out.output);
    assert!(out.output.contains("outside-blocked"), "{}", out.output);
    assert!(out.output.contains("read-ok"), "{}", out.output);
    assert_eq!(
        std::fs::read_to_string(cwd.path().join("inside.txt")).expect("written"),
        "in\n"
    );
    assert!(!target.exists());
}

#[tokio::test]
async fn workspace_write_gives_a_private_writable_tmpdir() {
    if !filesystem_supported() {
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = run_sandboxed(
        "echo t > \"$TMPDIR/scratch\" && cat \"$TMPDIR/scratch\"",
        cwd.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{}", out.output);
    assert_eq!(out.output, "t\n");
}

#[tokio::test]
async fn read_only_blocks_writes_in_the_cwd() {
    if !filesystem_supported() {
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = run_sandboxed(
        "echo x > inside.txt || echo blocked; echo y > /dev/null && echo devnull-ok; ls > /dev/null && echo ls-ok",
        cwd.path(),
        SandboxMode::ReadOnly,
        false,
    )
    .await;
    assert!(out.output.contains("blocked"), "{}", out.output);
    assert!(out.output.contains("devnull-ok"), "{}", out.output);
    assert!(out.output.contains("ls-ok"), "{}", out.output);
    assert!(!cwd.path().join("inside.txt").exists());
}

#[tokio::test]
async fn danger_full_access_is_unrestricted() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let outside = outside_dir();
    let target = outside.path().join("free.txt");
    let out = run_sandboxed(
        &format!("echo x > {}", target.display()),
        cwd.path(),
        SandboxMode::DangerFullAccess,
        false,
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{}", out.output);
    assert!(target.exists());
}

#[tokio::test]
async fn network_is_blocked_unless_allowed() {
    let report = sandbox_capabilities();
    if !report.filesystem_enforced() || !report.network_enforced() {
        eprintln!("note: skipping, this kernel cannot turn the network off:\n{report}");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let cwd = tempfile::tempdir().expect("tempdir");
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused");

    let blocked = run_sandboxed(&script, cwd.path(), SandboxMode::WorkspaceWrite, false).await;
    assert!(blocked.output.contains("refused"), "{}", blocked.output);
    assert!(!blocked.output.contains("connected"), "{}", blocked.output);

    let read_only = run_sandboxed(&script, cwd.path(), SandboxMode::ReadOnly, false).await;
    assert!(read_only.output.contains("refused"), "{}", read_only.output);

    let allowed = run_sandboxed(&script, cwd.path(), SandboxMode::WorkspaceWrite, true).await;
    assert!(allowed.output.contains("connected"), "{}", allowed.output);
}

#[tokio::test]
async fn udp_is_blocked_too_where_seccomp_is_available() {
    let report = sandbox_capabilities();
    if !report.filesystem_enforced() || !report.seccomp_network {
        eprintln!("note: skipping, no seccomp network filter here:\n{report}");
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    // Landlock has no UDP rules: only the seccomp filter can refuse this socket.
    let script = "exec 3<>/dev/udp/127.0.0.1/9 && echo udp-open || echo udp-refused";
    let blocked = run_sandboxed(script, cwd.path(), SandboxMode::WorkspaceWrite, false).await;
    assert!(blocked.output.contains("udp-refused"), "{}", blocked.output);
    let allowed = run_sandboxed(script, cwd.path(), SandboxMode::WorkspaceWrite, true).await;
    assert!(allowed.output.contains("udp-open"), "{}", allowed.output);
}

#[test]
fn capabilities_report_is_readable() {
    let text = sandbox_capabilities().to_string();
    for line in [
        "landlock:",
        "read-only:",
        "workspace-write:",
        "network when",
        ".git read-only",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
