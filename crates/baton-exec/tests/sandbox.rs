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
    let policy = SandboxPolicy {
        mode,
        writable_roots: Vec::new(),
        network_access,
    };
    run_with_policy(script, cwd, policy).await
}

async fn run_with_policy(script: &str, cwd: &Path, sandbox: SandboxPolicy) -> ShellOutput {
    let request = ShellRequest {
        argv: vec!["bash".into(), "-c".into(), script.into()],
        cwd: cwd.to_path_buf(),
        timeout: Duration::from_secs(30),
        sandbox,
        output_cap: OutputCap::default(),
    };
    run_shell(request, CancellationToken::new())
        .await
        .expect("sandboxed command runs")
}

/// A fresh repository (`git init`) in a new temp directory.
fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("git")
        .args(["init", "--quiet"])
        .current_dir(dir.path())
        .status()
        .expect("git runs");
    assert!(status.success(), "git init failed");
    dir
}

/// Tries to change `.git/config` and create `.git/x` in `repo`, and to write `elsewhere.txt`.
fn git_write_script(repo: &Path) -> String {
    let repo = repo.display();
    format!(
        "echo '# changed' >> {repo}/.git/config && echo config-written || echo config-blocked; \
         touch {repo}/.git/x && echo x-created || echo x-blocked; \
         echo ok > {repo}/elsewhere.txt && echo elsewhere-ok"
    )
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

#[tokio::test]
async fn workspace_write_keeps_git_read_only() {
    if !filesystem_supported() {
        return;
    }
    let report = sandbox_capabilities();
    let text = report.to_string();
    if !report.git_read_only {
        eprintln!("note: skipping, no mount namespace for .git here:\n{report}");
        assert!(
            text.contains(".git read-only under workspace-write: not enforced"),
            "{text}"
        );
        return;
    }
    assert!(
        text.contains(".git read-only under workspace-write: enforced"),
        "{text}"
    );
    eprintln!("{text}");

    let cwd = git_repo();
    let extra_root = git_repo();
    let config_before = std::fs::read_to_string(cwd.path().join(".git/config")).expect("config");
    let policy = SandboxPolicy {
        mode: SandboxMode::WorkspaceWrite,
        writable_roots: vec![extra_root.path().to_path_buf()],
        network_access: false,
    };
    for repo in [cwd.path(), extra_root.path()] {
        let out = run_with_policy(&git_write_script(repo), cwd.path(), policy.clone()).await;
        assert!(out.output.contains("config-blocked"), "{}", out.output);
        assert!(out.output.contains("x-blocked"), "{}", out.output);
        assert!(
            out.output.contains("Read-only file system"),
            "{}",
            out.output
        );
        assert!(out.output.contains("elsewhere-ok"), "{}", out.output);
        assert!(!out.output.contains("baton: warning"), "{}", out.output);
        assert!(!repo.join(".git/x").exists());
        assert!(repo.join("elsewhere.txt").exists());
    }
    assert_eq!(
        std::fs::read_to_string(cwd.path().join(".git/config")).expect("config"),
        config_before
    );
    // The read-only bind lived in the command's namespace only.
    std::fs::write(cwd.path().join(".git/after"), "x").expect(".git writable for baton");
}

#[tokio::test]
async fn danger_full_access_can_write_git() {
    let repo = git_repo();
    let out = run_sandboxed(
        &git_write_script(repo.path()),
        repo.path(),
        SandboxMode::DangerFullAccess,
        false,
    )
    .await;
    assert!(out.output.contains("config-written"), "{}", out.output);
    assert!(out.output.contains("x-created"), "{}", out.output);
    assert!(repo.path().join(".git/x").exists());
}
