//! The OS sandbox of `run_shell` on this machine. Each test is skipped, with a note saying why,
//! only when baton cannot enforce what it checks here; under `CI=true` a skip is a failure when
//! the kernel itself has the feature (so a broken probe cannot hide a broken sandbox).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_exec::{
    OutputCap, SandboxReport, ShellOutput, ShellRequest, looks_like_sandbox_denial, run_shell,
    sandbox_capabilities,
};
use baton_protocol::{SandboxMode, SandboxPolicy};
use tokio_util::sync::CancellationToken;

/// A kernel feature a test needs.
#[derive(Debug, Clone, Copy)]
enum Feature {
    Landlock,
    Seccomp,
    MountNamespace,
    PidNamespace,
}

impl Feature {
    /// What baton's own probe says.
    fn usable(self, report: &SandboxReport) -> bool {
        match self {
            Feature::Landlock => report.filesystem_enforced(),
            Feature::Seccomp => report.filesystem_enforced() && report.network_enforced(),
            Feature::MountNamespace => report.filesystem_enforced() && report.git_read_only,
            Feature::PidNamespace => {
                report.filesystem_enforced() && report.escaped_processes_killed
            }
        }
    }

    /// What the kernel says, without baton's probes.
    fn in_kernel(self) -> bool {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        match self {
            Feature::Landlock => read("/sys/kernel/security/lsm").contains("landlock"),
            Feature::Seccomp => read("/proc/self/status").contains("\nSeccomp:"),
            Feature::MountNamespace => Path::new("/proc/self/ns/mnt").exists(),
            Feature::PidNamespace => Path::new("/proc/self/ns/pid").exists(),
        }
    }
}

/// Whether the test can run here; prints why not, and fails under `CI=true` when the kernel has
/// the feature although baton says it cannot use it.
fn supported(feature: Feature) -> bool {
    let report = sandbox_capabilities();
    if feature.usable(&report) {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|value| value == "true");
    if ci && feature.in_kernel() {
        panic!("CI=true: the kernel has {feature:?} but baton cannot use it:\n{report}");
    }
    eprintln!("note: skipping, baton cannot use {feature:?} on this machine:\n{report}");
    false
}

fn filesystem_supported() -> bool {
    supported(Feature::Landlock)
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
        allow_unix_sockets: Vec::new(),
    };
    run_with_policy(script, cwd, policy).await
}

async fn run_with_policy(script: &str, cwd: &Path, sandbox: SandboxPolicy) -> ShellOutput {
    run_in_workspace(script, cwd, cwd, sandbox).await
}

/// Runs `script` starting in `cwd` with the sandbox built around `workspace`.
async fn run_in_workspace(
    script: &str,
    workspace: &Path,
    cwd: &Path,
    sandbox: SandboxPolicy,
) -> ShellOutput {
    let request = ShellRequest {
        argv: vec!["bash".into(), "-c".into(), script.into()],
        cwd: cwd.to_path_buf(),
        workspace: workspace.to_path_buf(),
        timeout: Duration::from_secs(30),
        sandbox,
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
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
    if !supported(Feature::Seccomp) {
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
    if !supported(Feature::Seccomp) {
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
        "unix sockets when",
        "capabilities of sandboxed commands:",
        "descriptors above 2:",
        "escaped processes",
        ".git read-only",
        "baton's home inside a writable root:",
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
    if !supported(Feature::MountNamespace) {
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
        allow_unix_sockets: Vec::new(),
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

/// A project directory inside a fresh parent, both outside the system temp dir: writing next to
/// the project must be refused even when the command starts in the parent.
fn project_with_parent() -> (tempfile::TempDir, PathBuf) {
    let parent = outside_dir();
    let project = parent.path().join("project");
    std::fs::create_dir(&project).expect("mkdir project");
    (parent, project)
}

fn workspace_write() -> SandboxPolicy {
    SandboxPolicy {
        mode: SandboxMode::WorkspaceWrite,
        writable_roots: Vec::new(),
        network_access: false,
        allow_unix_sockets: Vec::new(),
    }
}

#[tokio::test]
async fn a_workdir_outside_the_workspace_grants_no_writes() {
    if !filesystem_supported() {
        return;
    }
    let (parent, project) = project_with_parent();
    let escape = parent.path().join("escape.txt");
    let inside = project.join("inside.txt");
    let absolute_writes = format!(
        "echo out > {} && echo escaped || echo outside-blocked; echo in > {} && echo inside-ok",
        escape.display(),
        inside.display()
    );
    // `/` (what `"workdir": "/"` gives), the parent, and `project/..` (what
    // `session_cwd.join("..")` gives) all start the command outside the workspace; none of them
    // may become writable. A relative write is only tried where a failure of this test would
    // leave its file in a temp directory rather than in `/`.
    let relative_write = "echo here > escape.txt && echo escaped || echo relative-blocked; ";
    for (cwd, script) in [
        (PathBuf::from("/"), absolute_writes.clone()),
        (
            parent.path().to_path_buf(),
            format!("{relative_write}{absolute_writes}"),
        ),
        (
            project.join(".."),
            format!("{relative_write}{absolute_writes}"),
        ),
    ] {
        let out = run_in_workspace(&script, &project, &cwd, workspace_write()).await;
        let context = format!("cwd {}: {}", cwd.display(), out.output);
        assert!(out.output.contains("outside-blocked"), "{context}");
        assert!(!out.output.contains("escaped"), "{context}");
        assert!(out.output.contains("inside-ok"), "{context}");
        assert!(!escape.exists(), "{context}");
        assert_eq!(
            std::fs::read_to_string(&inside).expect("written inside"),
            "in\n"
        );
        std::fs::remove_file(&inside).expect("cleanup");
    }
}

#[tokio::test]
async fn relative_writable_roots_resolve_against_the_workspace_not_the_cwd() {
    if !filesystem_supported() {
        return;
    }
    let (parent, project) = project_with_parent();
    std::fs::create_dir(project.join("cache")).expect("mkdir cache");
    std::fs::create_dir(parent.path().join("cache")).expect("mkdir parent cache");
    let policy = SandboxPolicy {
        writable_roots: vec![PathBuf::from("cache")],
        ..workspace_write()
    };
    let script = format!(
        "echo a > {}/cache/a && echo project-cache-ok; \
         echo b > {}/cache/b && echo parent-cache-written || echo parent-cache-blocked",
        project.display(),
        parent.path().display()
    );
    let out = run_in_workspace(&script, &project, parent.path(), policy).await;
    assert!(out.output.contains("project-cache-ok"), "{}", out.output);
    assert!(
        out.output.contains("parent-cache-blocked"),
        "{}",
        out.output
    );
    assert!(!parent.path().join("cache/b").exists());
}

#[tokio::test]
async fn git_stays_read_only_when_the_command_starts_outside_the_workspace() {
    if !supported(Feature::MountNamespace) {
        return;
    }
    let repo = git_repo();
    let out = run_in_workspace(
        &git_write_script(repo.path()),
        repo.path(),
        Path::new("/"),
        workspace_write(),
    )
    .await;
    assert!(out.output.contains("config-blocked"), "{}", out.output);
    assert!(out.output.contains("x-blocked"), "{}", out.output);
    assert!(out.output.contains("elsewhere-ok"), "{}", out.output);
    assert!(!repo.path().join(".git/x").exists());
}

#[tokio::test]
async fn a_relative_workspace_is_refused() {
    let request = ShellRequest {
        argv: vec!["true".into()],
        cwd: PathBuf::from("/"),
        workspace: PathBuf::from("project"),
        timeout: Duration::from_secs(30),
        sandbox: workspace_write(),
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
    };
    let error = run_shell(request, CancellationToken::new())
        .await
        .expect_err("relative workspace");
    assert!(
        matches!(error, baton_exec::ExecError::WorkspaceNotAbsolute { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_blocked_write_looks_like_a_sandbox_denial() {
    if !filesystem_supported() {
        return;
    }
    let project = tempfile::tempdir().expect("tempdir");
    let outside = outside_dir();
    let target = outside.path().join("blocked.txt");
    for script in [
        format!("touch {}", target.display()),
        format!("echo x > {}", target.display()),
    ] {
        let out = run_sandboxed(&script, project.path(), SandboxMode::WorkspaceWrite, false).await;
        assert_ne!(out.exit_code, Some(0), "{}", out.output);
        assert!(looks_like_sandbox_denial(&out), "{script}: {}", out.output);
    }
    // The same write without the sandbox succeeds: nothing else refused it.
    let free = run_sandboxed(
        &format!("touch {}", target.display()),
        project.path(),
        SandboxMode::DangerFullAccess,
        false,
    )
    .await;
    assert_eq!(free.exit_code, Some(0), "{}", free.output);
    assert!(!looks_like_sandbox_denial(&free));
}

#[tokio::test]
async fn a_blocked_git_write_looks_like_a_sandbox_denial() {
    if !supported(Feature::MountNamespace) {
        return;
    }
    let repo = git_repo();
    let out = run_sandboxed(
        "touch .git/x",
        repo.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert!(looks_like_sandbox_denial(&out), "{}", out.output);
}

#[tokio::test]
async fn a_blocked_connect_looks_like_a_sandbox_denial() {
    if !supported(Feature::Seccomp) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let cwd = tempfile::tempdir().expect("tempdir");
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    let blocked = run_sandboxed(&script, cwd.path(), SandboxMode::WorkspaceWrite, false).await;
    assert_ne!(blocked.exit_code, Some(0), "{}", blocked.output);
    assert!(looks_like_sandbox_denial(&blocked), "{}", blocked.output);
    let allowed = run_sandboxed(&script, cwd.path(), SandboxMode::WorkspaceWrite, true).await;
    assert_eq!(allowed.exit_code, Some(0), "{}", allowed.output);
    assert!(!looks_like_sandbox_denial(&allowed));
}

#[tokio::test]
async fn plain_failures_in_the_sandbox_are_not_denials() {
    if !filesystem_supported() {
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    std::fs::write(cwd.path().join("notes.txt"), "alpha\n").expect("write");
    for script in ["false", "grep beta notes.txt", "ls missing-file", "exit 3"] {
        let out = run_sandboxed(script, cwd.path(), SandboxMode::WorkspaceWrite, false).await;
        assert_ne!(out.exit_code, Some(0), "{script}: {}", out.output);
        assert!(!looks_like_sandbox_denial(&out), "{script}: {}", out.output);
    }
}

/// The `Cap*` lines of `/proc/self/status` as a sandboxed command sees them.
fn capability_sets(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let name = name.strip_prefix("Cap")?;
            Some((name.to_owned(), u64::from_str_radix(value.trim(), 16).ok()?))
        })
        .collect()
}

#[tokio::test]
async fn a_sandboxed_command_has_no_capabilities() {
    if !filesystem_supported() {
        return;
    }
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let cwd = tempfile::tempdir().expect("tempdir");
    for mode in [SandboxMode::WorkspaceWrite, SandboxMode::ReadOnly] {
        let out = run_sandboxed("cat /proc/self/status", cwd.path(), mode, false).await;
        assert_eq!(out.exit_code, Some(0), "{}", out.output);
        let sets = capability_sets(&out.output);
        let names: Vec<&str> = sets.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Inh", "Prm", "Eff", "Bnd", "Amb"], "{}", out.output);
        for (name, value) in sets {
            if name == "Bnd" && !root {
                // An unprivileged process cannot shrink its bounding set (and, with
                // no_new_privs, cannot use it).
                eprintln!("note: not root, CapBnd is {value:x}");
                continue;
            }
            assert_eq!(value, 0, "{mode}: Cap{name} is {value:x}\n{}", out.output);
        }
    }
    if root {
        // The same command unsandboxed shows what was dropped.
        let free = run_sandboxed(
            "cat /proc/self/status",
            cwd.path(),
            SandboxMode::DangerFullAccess,
            false,
        )
        .await;
        let effective = capability_sets(&free.output)
            .into_iter()
            .find(|(name, _)| name == "Eff");
        assert!(
            effective.is_some_and(|(_, value)| value != 0),
            "{}",
            free.output
        );
    }
}

/// Lists the command's open descriptors (`ls -l /proc/self/fd`) and fails on any above 2 except
/// the directory `ls` itself opened to list them.
fn assert_only_standard_fds(listing: &str, leaked: &Path) {
    let leaked = leaked.display().to_string();
    assert!(!listing.contains(&leaked), "{leaked} leaked:\n{listing}");
    for line in listing.lines().filter(|line| line.contains(" -> ")) {
        let (left, target) = line.split_once(" -> ").expect("a link");
        let fd: u32 = left
            .split_whitespace()
            .last()
            .and_then(|fd| fd.parse().ok())
            .unwrap_or_else(|| panic!("no fd number in {line:?}"));
        let ls_own_dir = target.starts_with("/proc/") && target.ends_with("/fd");
        assert!(
            fd <= 2 || ls_own_dir,
            "fd {fd} ({target}) leaked:\n{listing}"
        );
    }
}

#[tokio::test]
async fn a_command_inherits_no_descriptor_above_2() {
    let cwd = tempfile::tempdir().expect("tempdir");
    let secret = cwd.path().join("held-open-by-baton.txt");
    std::fs::write(&secret, "x").expect("write");
    let file = std::fs::File::open(&secret).expect("open");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // As a descriptor baton inherited from its parent would be: no close-on-exec.
    // SAFETY: fcntl on a descriptor we own.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);

    let mut modes = vec![SandboxMode::DangerFullAccess];
    if filesystem_supported() {
        modes.extend([SandboxMode::WorkspaceWrite, SandboxMode::ReadOnly]);
    }
    for mode in modes {
        let out = run_sandboxed("ls -l /proc/self/fd", cwd.path(), mode, false).await;
        assert_eq!(out.exit_code, Some(0), "{mode}: {}", out.output);
        assert!(out.output.contains(" 0 -> "), "{mode}: {}", out.output);
        assert_only_standard_fds(&out.output, &secret);
    }
    drop(file);
}

/// `python3 -c` connecting to the Unix socket at `path`; prints `unix-connected` on success.
fn unix_connect_script(path: &Path) -> String {
    format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect(\"{}\"); \
         print(\"unix-connected\")'",
        path.display()
    )
}

#[tokio::test]
async fn unix_sockets_outside_the_sandbox_are_refused_without_network_access() {
    if !supported(Feature::Seccomp) {
        return;
    }
    // Outside the workspace, like /var/run/docker.sock or an ssh agent's socket.
    let outside = outside_dir();
    let path = outside.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let cwd = tempfile::tempdir().expect("tempdir");
    let script = unix_connect_script(&path);

    for mode in [SandboxMode::WorkspaceWrite, SandboxMode::ReadOnly] {
        let out = run_sandboxed(&script, cwd.path(), mode, false).await;
        assert_ne!(out.exit_code, Some(0), "{mode}: {}", out.output);
        assert!(
            !out.output.contains("unix-connected"),
            "{mode}: {}",
            out.output
        );
        assert!(
            out.output.contains("PermissionError") || out.output.contains("not permitted"),
            "{mode}: {}",
            out.output
        );
        let accepted = listener.accept();
        assert!(
            accepted
                .as_ref()
                .is_err_and(|error| error.kind() == std::io::ErrorKind::WouldBlock),
            "{mode}: the listener saw a connection: {accepted:?}"
        );
    }

    // A connected pair reaches nothing outside the command and stays allowed.
    let pair = run_sandboxed(
        "python3 -c 'import socket; a, b = socket.socketpair(); a.send(b\"x\"); print(\"pair-\" + b.recv(1).decode())'",
        cwd.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert!(pair.output.contains("pair-x"), "{}", pair.output);

    // `allow_unix_sockets` lets the command connect (which also shows the test would see one).
    let allowed = SandboxPolicy {
        allow_unix_sockets: vec![path.clone()],
        ..workspace_write()
    };
    let out = run_with_policy(&script, cwd.path(), allowed).await;
    assert!(out.output.contains("unix-connected"), "{}", out.output);
    listener.set_nonblocking(false).expect("blocking");
    listener.accept().expect("the allowed connection arrived");
}

/// The pids (as this process sees them) of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect()
}

/// Waits (bounded) until no process carries `marker`; kills and fails if one survives.
async fn assert_all_gone(marker: &str, context: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive = processes_with(marker);
        if alive.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            for pid in &alive {
                // SAFETY: plain syscall; cleans up after a failed test.
                unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            }
            panic!("{context}: processes {alive:?} escaped the command and survived it");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A script that starts a process outside its process group (`setsid -f`), waits until that
/// process runs, then does `then`. `sleep` is not the escaped shell's last command, so the
/// shell (whose command line carries the marker) waits for it rather than exec'ing it.
fn escaping_script(marker: &str, then: &str) -> String {
    format!(
        "setsid -f sh -c 'touch escaped-ready; sleep 1000; exit # {marker}' </dev/null >/dev/null 2>&1; \
         while [ ! -e escaped-ready ]; do sleep 0.01; done; echo started; {then}"
    )
}

#[tokio::test]
async fn processes_that_escape_the_process_group_die_with_the_command() {
    if !supported(Feature::PidNamespace) {
        return;
    }
    let marker = format!("baton-escape-{}", std::process::id());

    // The command ends on its own.
    let cwd = tempfile::tempdir().expect("tempdir");
    let ended = format!("{marker}-ended");
    let out = run_sandboxed(
        &escaping_script(&ended, "true"),
        cwd.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert_eq!(out.exit_code, Some(0), "{}", out.output);
    assert!(out.output.contains("started"), "{}", out.output);
    assert_all_gone(&ended, "after the command ended").await;

    // The command times out.
    let cwd = tempfile::tempdir().expect("tempdir");
    let timed_out = format!("{marker}-timeout");
    let request = ShellRequest {
        argv: vec![
            "bash".into(),
            "-c".into(),
            escaping_script(&timed_out, "sleep 1000"),
        ],
        cwd: cwd.path().to_path_buf(),
        workspace: cwd.path().to_path_buf(),
        timeout: Duration::from_secs(2),
        sandbox: workspace_write(),
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
    };
    let out = run_shell(request, CancellationToken::new())
        .await
        .expect("runs");
    assert!(out.timed_out, "{}", out.output);
    assert!(out.output.contains("started"), "{}", out.output);
    assert_all_gone(&timed_out, "after the timeout").await;

    // The command is cancelled once the escaped process runs.
    let cwd = tempfile::tempdir().expect("tempdir");
    let cancelled = format!("{marker}-cancel");
    let cancel = CancellationToken::new();
    let request = ShellRequest {
        argv: vec![
            "bash".into(),
            "-c".into(),
            escaping_script(&cancelled, "sleep 1000"),
        ],
        cwd: cwd.path().to_path_buf(),
        workspace: cwd.path().to_path_buf(),
        timeout: Duration::from_secs(60),
        sandbox: workspace_write(),
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
    };
    let ready = cwd.path().join("escaped-ready");
    let trigger = cancel.clone();
    let canceller = tokio::spawn(async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ready.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.cancel();
    });
    let out = run_shell(request, cancel).await.expect("runs");
    canceller.await.expect("canceller");
    assert!(out.cancelled, "{}", out.output);
    assert_all_gone(&cancelled, "after the cancel").await;
}

#[tokio::test]
async fn a_sandboxed_command_ends_as_it_would_without_the_pid_namespace() {
    if !filesystem_supported() {
        return;
    }
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = run_sandboxed(
        "echo out; exit 7",
        cwd.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert_eq!(
        (out.exit_code, out.signal),
        (Some(7), None),
        "{}",
        out.output
    );
    assert_eq!(out.output, "out\n");
    let out = run_sandboxed(
        "kill -SEGV $$",
        cwd.path(),
        SandboxMode::WorkspaceWrite,
        false,
    )
    .await;
    assert_eq!(
        (out.exit_code, out.signal),
        (None, Some(libc::SIGSEGV)),
        "{}",
        out.output
    );
    let missing = ShellRequest {
        argv: vec!["/nonexistent/no-such-program-baton".into()],
        cwd: cwd.path().to_path_buf(),
        workspace: cwd.path().to_path_buf(),
        timeout: Duration::from_secs(30),
        sandbox: workspace_write(),
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: Vec::new(),
    };
    let error = run_shell(missing, CancellationToken::new())
        .await
        .expect_err("no such program");
    assert!(
        matches!(error, baton_exec::ExecError::ProgramNotFound { .. }),
        "{error}"
    );
}

/// A workspace that contains baton's home (the HTTP server started in `~`): the command can
/// neither change the home's config nor tokens, nor read the transcripts there.
#[tokio::test]
async fn baton_home_inside_the_workspace_is_hidden_and_read_only() {
    if !filesystem_supported() || !supported(Feature::MountNamespace) {
        return;
    }
    let workspace = tempfile::tempdir().expect("tempdir");
    let home = workspace.path().join(".baton");
    std::fs::create_dir_all(home.join("sessions")).expect("mkdir");
    std::fs::write(home.join("config.toml"), "model = \"m\"\n").expect("write");
    std::fs::write(home.join("tokens"), "").expect("write");
    std::fs::write(home.join("sessions/other.jsonl"), "secret transcript\n").expect("write");
    let script = "echo '[sandbox_workspace_write]' >> .baton/config.toml \
                  && echo config-written || echo config-blocked; \
                  echo 'alice sha256:00' >> .baton/tokens && echo token-written || echo token-blocked; \
                  cat .baton/sessions/other.jsonl || echo transcript-hidden; \
                  echo ok > elsewhere.txt && echo elsewhere-ok";
    let request = ShellRequest {
        argv: vec!["bash".into(), "-c".into(), script.into()],
        cwd: workspace.path().to_path_buf(),
        workspace: workspace.path().to_path_buf(),
        timeout: Duration::from_secs(30),
        sandbox: SandboxPolicy {
            mode: SandboxMode::WorkspaceWrite,
            ..SandboxPolicy::default()
        },
        output_cap: OutputCap::default(),
        env: std::env::vars_os().collect(),
        hidden_dirs: vec![home.clone()],
    };
    let out = run_shell(request, CancellationToken::new())
        .await
        .expect("sandboxed command runs");
    assert!(out.output.contains("config-blocked"), "{}", out.output);
    assert!(out.output.contains("token-blocked"), "{}", out.output);
    assert!(out.output.contains("transcript-hidden"), "{}", out.output);
    assert!(!out.output.contains("secret transcript"), "{}", out.output);
    assert!(out.output.contains("elsewhere-ok"), "{}", out.output);
    assert_eq!(
        std::fs::read_to_string(home.join("config.toml")).expect("config"),
        "model = \"m\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("tokens")).expect("tokens"),
        ""
    );
}

/// A repository nested in the workspace keeps its `.git` read-only too (its hooks would run
/// outside the sandbox on the user's next git command).
#[tokio::test]
async fn a_nested_repository_keeps_its_git_read_only() {
    if !filesystem_supported() || !supported(Feature::MountNamespace) {
        return;
    }
    let workspace = tempfile::tempdir().expect("tempdir");
    let hooks = workspace.path().join("sub/inner/.git/hooks");
    std::fs::create_dir_all(&hooks).expect("mkdir");
    let out = run_with_policy(
        "echo evil > sub/inner/.git/hooks/post-commit && echo hook-written || echo hook-blocked",
        workspace.path(),
        SandboxPolicy {
            mode: SandboxMode::WorkspaceWrite,
            ..SandboxPolicy::default()
        },
    )
    .await;
    assert!(out.output.contains("hook-blocked"), "{}", out.output);
    assert!(!hooks.join("post-commit").exists());
}
