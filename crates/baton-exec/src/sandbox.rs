//! OS enforcement of a [`SandboxPolicy`] for one command (`read-only`, `workspace-write`, `danger-full-access`, as Codex names them).
//!
//! Everything that allocates or opens files happens in the parent ([`prepare`]): the Landlock
//! ruleset is created and filled there, the seccomp program is assembled there. Between fork
//! and exec the child only makes a handful of syscalls ([`ChildRestrictions::apply_in_child`]).
//!
//! * `read-only`: writes are refused everywhere except a few harmless devices (`/dev/null`, …).
//! * `workspace-write`: writes allowed under the workspace (the session cwd, never the working
//!   directory the model picked for the command), the configured writable roots and a private
//!   temporary directory (exported as `TMPDIR`), which is removed afterwards.
//! * network (both modes, unless `network_access`): a seccomp filter refuses every socket, Unix
//!   sockets included unless `allow_unix_sockets` lists some; where Landlock ABI ≥ 4 is
//!   available TCP bind/connect is refused by Landlock too. Without seccomp the command is
//!   refused (Landlock alone cannot refuse UDP).
//! * both modes: no capabilities (`child`), and a PID namespace per command where this machine
//!   allows one (`pid_namespace`), so nothing the command starts outlives it.
//!
//! * `.git` inside a writable root (nested ones too, to a bounded depth) stays read-only under
//!   `workspace-write`, through a private mount namespace (see `git_protection`) where this
//!   machine allows one. Where it does not, commands still run (Landlock confines them to the
//!   workspace) and the report says so.
//! * baton's home, when inside a writable root, is hidden under an empty read-only tmpfs by the
//!   same means; where that is impossible the command is refused (it could rewrite baton's
//!   config and escape the sandbox on the next call).
//!
//! When the kernel cannot enforce a mode, [`prepare`] fails and the command is not run.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use baton_protocol::{SandboxMode, SandboxPolicy};
use landlock::{
    ABI, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

use crate::ExecError;
use crate::child::{self, ChildLimits};
use crate::git_protection::{self, ProtectedDirs};
use crate::pid_namespace::{self, PidNamespace};
use crate::seccomp;

/// Device files every sandboxed command may write to: writing there changes nothing on disk.
const HARMLESS_DEVICES: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];

/// What this machine can enforce, for `baton sandbox check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxReport {
    /// The Landlock ABI version of the running kernel; `None` if Landlock is unavailable.
    pub landlock_abi: Option<i32>,
    /// Why Landlock is unavailable, when it is.
    pub landlock_error: Option<String>,
    /// Landlock can refuse TCP bind/connect (ABI ≥ 4).
    pub landlock_network: bool,
    /// The kernel accepts the seccomp filter that refuses sockets (TCP, UDP, Unix, …).
    pub seccomp_network: bool,
    /// Commands under `workspace-write` cannot write inside the `.git` directory of a writable
    /// root (a private mount namespace makes it a read-only bind mount).
    pub git_read_only: bool,
    /// How `.git` is kept read-only when `git_read_only`, else why it cannot be.
    pub git_read_only_detail: String,
    /// baton runs as root: a sandboxed command's bounding set is emptied too.
    pub running_as_root: bool,
    /// The kernel marks all descriptors close-on-exec in one call (`close_range`, 5.11+);
    /// otherwise each possible descriptor is marked in a loop. Either way none above 2 leaks.
    pub close_range: bool,
    /// A process that leaves the command's process group is killed with the command.
    pub escaped_processes_killed: bool,
    /// How (a PID namespace), or why not.
    pub escaped_processes_detail: String,
}

impl SandboxReport {
    /// Whether `read-only` and `workspace-write` can be enforced for the filesystem.
    pub fn filesystem_enforced(&self) -> bool {
        self.landlock_abi.is_some()
    }

    /// Whether network access can be turned off (TCP, UDP and Unix sockets alike).
    pub fn network_enforced(&self) -> bool {
        self.seccomp_network
    }
}

/// Probes the running kernel. The `.git` and PID namespace probes fork once per process (their
/// results are cached) and leave nothing behind.
pub fn sandbox_capabilities() -> SandboxReport {
    let (landlock_abi, landlock_error) = match landlock_abi() {
        Ok(abi) => (Some(abi), None),
        Err(reason) => (None, Some(reason)),
    };
    let describe = |result: &Result<&'static str, String>| match result {
        Ok(mechanism) => (*mechanism).to_owned(),
        Err(reason) => reason.clone(),
    };
    let git = git_protection::availability()
        .as_ref()
        .map(|mechanism| mechanism.describe())
        .map_err(Clone::clone);
    let pid = pid_namespace::availability()
        .as_ref()
        .map(|mechanism| mechanism.describe())
        .map_err(Clone::clone);
    SandboxReport {
        landlock_abi,
        landlock_error,
        landlock_network: landlock_abi.is_some_and(|abi| abi >= 4),
        seccomp_network: seccomp::SUPPORTED_ARCH && seccomp::errno_filters_available(),
        git_read_only: git.is_ok(),
        git_read_only_detail: describe(&git),
        // SAFETY: geteuid cannot fail.
        running_as_root: unsafe { libc::geteuid() } == 0,
        close_range: child::close_range_cloexec_available(),
        escaped_processes_killed: pid.is_ok(),
        escaped_processes_detail: describe(&pid),
    }
}

impl fmt::Display for SandboxReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |enforced: bool| {
            if enforced {
                "enforced"
            } else {
                "NOT enforceable"
            }
        };
        match (self.landlock_abi, &self.landlock_error) {
            (Some(abi), _) => writeln!(f, "landlock: ABI {abi}")?,
            (None, Some(reason)) => writeln!(f, "landlock: unavailable ({reason})")?,
            (None, None) => writeln!(f, "landlock: unavailable")?,
        }
        writeln!(f, "read-only: {}", yes_no(self.filesystem_enforced()))?;
        writeln!(f, "workspace-write: {}", yes_no(self.filesystem_enforced()))?;
        let network = match (self.seccomp_network, self.landlock_network) {
            (true, true) => {
                "TCP and UDP refused (seccomp refuses every socket; Landlock refuses TCP too)"
            }
            (true, false) => "TCP and UDP refused (seccomp refuses every socket)",
            (false, _) => {
                "NOT enforceable (no seccomp filter; Landlock alone cannot refuse UDP): commands \
                 that need the network off are refused"
            }
        };
        writeln!(f, "network when network_access = false: {network}")?;
        if self.seccomp_network {
            let abstract_scope = if self.landlock_abi.is_some_and(|abi| abi >= 6) {
                "abstract sockets stay scoped to the sandbox (Landlock ABI 6)"
            } else {
                "abstract sockets are NOT scoped (Landlock ABI 6 needed)"
            };
            writeln!(
                f,
                "unix sockets when network_access = false: refused (seccomp refuses \
                 socket(AF_UNIX); socketpair stays allowed); with allow_unix_sockets set, Unix \
                 sockets at any path are allowed and {abstract_scope}"
            )?;
        } else {
            writeln!(
                f,
                "unix sockets when network_access = false: NOT enforceable: commands that need \
                 the network off are refused"
            )?;
        }
        if self.running_as_root {
            writeln!(
                f,
                "capabilities of sandboxed commands: all dropped (effective, permitted, \
                 inheritable, ambient and bounding sets)"
            )?;
        } else {
            writeln!(
                f,
                "capabilities of sandboxed commands: all dropped (effective, permitted, \
                 inheritable, ambient); the bounding set needs root to shrink, and no_new_privs \
                 keeps exec from granting any"
            )?;
        }
        writeln!(
            f,
            "descriptors above 2: closed at exec for every command ({})",
            if self.close_range {
                "close_range"
            } else {
                "a loop over every possible descriptor; close_range needs Linux 5.11"
            }
        )?;
        if self.escaped_processes_killed {
            writeln!(
                f,
                "escaped processes (setsid, double fork): killed when a sandboxed command ends, \
                 times out or is cancelled ({}); under danger-full-access only the process \
                 group is killed",
                self.escaped_processes_detail
            )?;
        } else {
            writeln!(
                f,
                "escaped processes (setsid, double fork): NOT killed (no PID namespace: {}); \
                 only the command's process group is killed",
                self.escaped_processes_detail
            )?;
        }
        if self.git_read_only {
            writeln!(
                f,
                ".git read-only under workspace-write: enforced ({} makes every .git directory \
                 up to {} levels below a writable root a read-only bind mount, nested \
                 repositories included; apply_patch refuses paths in any .git)",
                self.git_read_only_detail,
                git_protection::GIT_WALK_DEPTH
            )?;
            write!(
                f,
                "baton's home inside a writable root: hidden from workspace-write commands under \
                 an empty read-only mount (config, tokens and transcripts can be neither read \
                 nor changed); apply_patch refuses paths in it"
            )
        } else {
            writeln!(
                f,
                ".git read-only under workspace-write: not enforced for commands (no mount \
                 namespace: {}); commands can write .git like the rest of the workspace, \
                 apply_patch still refuses paths in any .git",
                self.git_read_only_detail
            )?;
            write!(
                f,
                "baton's home inside a writable root: cannot be hidden here, so workspace-write \
                 commands are refused while BATON_HOME lies inside a writable root; apply_patch \
                 refuses paths in it"
            )
        }
    }
}

/// The directories a command (or apply_patch) may write to under `policy`, all absolute when
/// `workspace` is: `None` means no restriction (`danger-full-access`).
///
/// `workspace` is the session's working directory (never a `workdir` the model chose): under
/// `workspace-write` it is writable itself, and relative entries of `policy.writable_roots`
/// are resolved against it. Under `read-only` nothing is writable.
pub fn writable_roots(policy: &SandboxPolicy, workspace: &Path) -> Option<Vec<PathBuf>> {
    match policy.mode {
        SandboxMode::DangerFullAccess => None,
        SandboxMode::ReadOnly => Some(Vec::new()),
        SandboxMode::WorkspaceWrite => {
            let mut roots = vec![workspace.to_path_buf()];
            roots.extend(
                policy
                    .writable_roots
                    .iter()
                    .map(|root| workspace.join(root)),
            );
            Some(roots)
        }
    }
}

/// The sandbox of one command, ready to be applied in the child. Keep it alive until the
/// command has finished: it owns the ruleset descriptor and the private temp directory.
#[derive(Debug, Default)]
pub(crate) struct PreparedSandbox {
    pid_namespace: Option<PidNamespace>,
    ruleset: Option<OwnedFd>,
    network_filter: Option<Vec<libc::sock_filter>>,
    git: Option<ProtectedDirs>,
    private_tmp: Option<tempfile::TempDir>,
}

/// The part of a [`PreparedSandbox`] the child needs: plain data, no allocation when applied.
#[derive(Clone)]
pub(crate) struct ChildRestrictions {
    /// Set for every sandboxed command: its capabilities are dropped.
    limits: Option<ChildLimits>,
    pid_namespace: Option<PidNamespace>,
    ruleset_fd: Option<RawFd>,
    network_filter: Option<Vec<libc::sock_filter>>,
    git: Option<ProtectedDirs>,
}

impl PreparedSandbox {
    pub(crate) fn child_restrictions(&self) -> ChildRestrictions {
        ChildRestrictions {
            limits: self.ruleset.is_some().then(ChildLimits::probe),
            pid_namespace: self.pid_namespace.clone(),
            ruleset_fd: self.ruleset.as_ref().map(AsRawFd::as_raw_fd),
            network_filter: self.network_filter.clone(),
            git: self.git.clone(),
        }
    }

    /// Environment variables the command should see (the private temp directory).
    pub(crate) fn env(&self) -> Vec<(&'static str, PathBuf)> {
        match &self.private_tmp {
            Some(dir) => ["TMPDIR", "TMP", "TEMP"]
                .into_iter()
                .map(|name| (name, dir.path().to_path_buf()))
                .collect(),
            None => Vec::new(),
        }
    }
}

impl ChildRestrictions {
    /// Runs between fork and exec: only async-signal-safe syscalls, no allocation.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        if self.ruleset_fd.is_none() && self.network_filter.is_none() && self.git.is_none() {
            return Ok(());
        }
        // First, while the process still has every capability; from here on this runs in the
        // process that becomes the command.
        if let Some(namespace) = &self.pid_namespace {
            namespace.enter_in_child()?;
        }
        // Mounts first: once Landlock is on, the kernel refuses every mount change.
        if let Some(git) = &self.git
            && let Err(failure) = git.apply_in_child()
        {
            if failure.leaves_the_process_unusable() || git.is_required() {
                return Err(io::Error::from_raw_os_error(failure.errno));
            }
            // Landlock still confines the command to the workspace; say that .git is open.
            failure.warn_on_stderr();
        }
        // Required by both Landlock and seccomp for an unprivileged process, and it keeps
        // set-uid programs from escaping the sandbox.
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // After the mounts (which need CAP_SYS_ADMIN); Landlock and seccomp need none once
        // no_new_privs is set. Without this a command run by root keeps root's capabilities.
        if let Some(limits) = self.limits {
            child::drop_capabilities(limits)?;
        }
        if let Some(fd) = self.ruleset_fd {
            // SAFETY: `fd` is a Landlock ruleset descriptor inherited from the parent.
            let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(filter) = &self.network_filter {
            seccomp::install(filter)?;
        }
        Ok(())
    }
}

/// Builds the restrictions for `policy` around `workspace` (see [`writable_roots`]), or
/// explains why this machine cannot enforce them.
pub(crate) fn prepare(
    policy: &SandboxPolicy,
    workspace: &Path,
    hide: &[PathBuf],
) -> Result<PreparedSandbox, ExecError> {
    let unavailable = |reason: String| ExecError::SandboxUnavailable {
        mode: policy.mode,
        reason,
    };
    let Some(mut writable) = writable_roots(policy, workspace) else {
        return Ok(PreparedSandbox::default());
    };
    let abi = landlock_abi().map_err(unavailable)?;

    let block_network = !policy.network_access;
    let network_filter =
        network_filter(policy, seccomp::errno_filters_available()).map_err(unavailable)?;
    let landlock_blocks_tcp = block_network && abi >= 4;

    let git = if policy.mode == SandboxMode::WorkspaceWrite {
        ProtectedDirs::for_roots(&writable, hide).map_err(unavailable)?
    } else {
        None
    };
    let private_tmp = if policy.mode == SandboxMode::WorkspaceWrite {
        let dir = tempfile::Builder::new()
            .prefix("baton-tmp-")
            .tempdir()
            .map_err(|source| ExecError::Io {
                context: "creating the private temporary directory of a sandboxed command"
                    .to_owned(),
                source,
            })?;
        writable.push(dir.path().to_path_buf());
        Some(dir)
    } else {
        None
    };

    let ruleset = landlock_ruleset(abi, &writable, landlock_blocks_tcp, block_network)
        .map_err(unavailable)?;
    Ok(PreparedSandbox {
        pid_namespace: PidNamespace::for_command(),
        ruleset: Some(ruleset),
        network_filter,
        git,
        private_tmp,
    })
}

/// The seccomp program that turns the network off for `policy` (`None` when it stays on), or
/// why it cannot be turned off here. Landlock (ABI 4+) refuses TCP only: without seccomp, UDP
/// and Unix sockets would stay open, so the command is refused rather than run with half the
/// network on.
fn network_filter(
    policy: &SandboxPolicy,
    seccomp_available: bool,
) -> Result<Option<Vec<libc::sock_filter>>, String> {
    if policy.network_access {
        return Ok(None);
    }
    let allow_unix = !policy.allow_unix_sockets.is_empty();
    match seccomp_available
        .then(|| seccomp::network_filter(allow_unix))
        .flatten()
    {
        Some(filter) => Ok(Some(filter)),
        None => Err(
            "network_access = false needs a seccomp filter to refuse UDP and Unix \
                     sockets (Landlock alone refuses only TCP), and this kernel or architecture \
                     has none usable"
                .to_owned(),
        ),
    }
}

/// The Landlock ABI of the running kernel, or why there is none.
fn landlock_abi() -> Result<i32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with the VERSION flag and a null attribute the syscall only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if version > 0 {
        return Ok(version as i32);
    }
    let error = io::Error::last_os_error();
    Err(match error.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no Landlock support (Linux 5.13 or newer needed)".to_owned(),
        Some(libc::EOPNOTSUPP) => {
            "Landlock is built into the kernel but disabled (add `landlock` to the `lsm=` boot parameter)"
                .to_owned()
        }
        _ => format!("probing Landlock failed: {error}"),
    })
}

fn landlock_ruleset(
    abi_version: i32,
    writable: &[PathBuf],
    block_tcp: bool,
    scope_abstract_sockets: bool,
) -> Result<OwnedFd, String> {
    let abi = ABI::from(abi_version);
    let write_access = AccessFs::from_write(abi);
    let file_write_access = AccessFs::from_file(abi) & write_access;
    let describe = |what: &str, error: &dyn fmt::Display| format!("Landlock {what}: {error}");

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(write_access)
        .map_err(|e| describe("ruleset", &e))?;
    if block_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| describe("network rules", &e))?;
    }
    if abi_version >= 6 {
        // Keeps the command from signalling processes outside its sandbox (such as baton).
        let mut scopes: BitFlags<Scope> = Scope::Signal.into();
        if scope_abstract_sockets {
            scopes |= Scope::AbstractUnixSocket;
        }
        ruleset = ruleset.scope(scopes).map_err(|e| describe("scopes", &e))?;
    }
    let mut created = ruleset.create().map_err(|e| describe("ruleset", &e))?;

    for device in HARMLESS_DEVICES {
        let Ok(fd) = PathFd::new(device) else {
            continue;
        };
        created = created
            .add_rule(PathBeneath::new(fd, file_write_access))
            .map_err(|e| describe(&format!("rule for {device}"), &e))?;
    }
    for root in writable {
        let metadata = match fs_err::metadata(root) {
            Ok(metadata) => metadata,
            Err(error) => {
                // A writable root that does not exist yet cannot be written to anyway.
                tracing::debug!("skipping writable root: {error}");
                continue;
            }
        };
        let access = if metadata.is_dir() {
            write_access
        } else {
            file_write_access
        };
        let fd =
            PathFd::new(root).map_err(|e| describe(&format!("rule for {}", root.display()), &e))?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| describe(&format!("rule for {}", root.display()), &e))?;
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| "Landlock did not create a ruleset".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_roots_follow_the_mode() {
        let workspace = Path::new("/work/project");
        let mut policy = SandboxPolicy {
            mode: SandboxMode::WorkspaceWrite,
            writable_roots: vec![PathBuf::from("/var/cache/x"), PathBuf::from("rel")],
            network_access: false,
            allow_unix_sockets: Vec::new(),
        };
        assert_eq!(
            writable_roots(&policy, workspace),
            Some(vec![
                PathBuf::from("/work/project"),
                PathBuf::from("/var/cache/x"),
                PathBuf::from("/work/project/rel"),
            ])
        );
        policy.mode = SandboxMode::ReadOnly;
        assert_eq!(writable_roots(&policy, workspace), Some(Vec::new()));
        policy.mode = SandboxMode::DangerFullAccess;
        assert_eq!(writable_roots(&policy, workspace), None);
    }

    #[test]
    fn without_seccomp_the_network_cannot_be_turned_off_and_the_command_is_refused() {
        let mut policy = SandboxPolicy {
            mode: SandboxMode::WorkspaceWrite,
            ..SandboxPolicy::default()
        };
        let refused = network_filter(&policy, false).expect_err("no seccomp");
        assert!(refused.contains("UDP and Unix"), "{refused}");
        assert!(network_filter(&policy, true).expect("seccomp").is_some());
        policy.network_access = true;
        assert!(
            network_filter(&policy, false)
                .expect("network on")
                .is_none()
        );
    }

    #[test]
    fn report_without_a_mount_namespace_says_why() {
        let report = SandboxReport {
            landlock_abi: Some(7),
            landlock_error: None,
            landlock_network: true,
            seccomp_network: true,
            git_read_only: false,
            git_read_only_detail: "unshare failed: Operation not permitted (os error 1)".to_owned(),
            running_as_root: true,
            close_range: true,
            escaped_processes_killed: true,
            escaped_processes_detail: "a PID namespace per sandboxed command".to_owned(),
        };
        let text = report.to_string();
        assert!(
            text.contains(
                ".git read-only under workspace-write: not enforced for commands (no mount \
                 namespace: unshare failed: Operation not permitted (os error 1)); commands can \
                 write .git like the rest of the workspace, apply_patch still refuses paths in \
                 any .git\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "baton's home inside a writable root: cannot be hidden here, so workspace-write \
                 commands are refused while BATON_HOME lies inside a writable root; apply_patch \
                 refuses paths in it"
            ),
            "{text}"
        );
    }

    #[test]
    fn report_says_how_git_is_protected_or_why_not() {
        let report = sandbox_capabilities();
        let text = report.to_string();
        let expected = match git_protection::availability() {
            Ok(mechanism) => format!(
                ".git read-only under workspace-write: enforced ({}",
                mechanism.describe()
            ),
            Err(reason) => format!(
                ".git read-only under workspace-write: not enforced for commands (no mount \
                 namespace: {reason})"
            ),
        };
        assert!(text.contains(&expected), "{text}");
        assert_eq!(report.git_read_only, git_protection::availability().is_ok());
        assert!(text.contains("landlock:"), "{text}");
    }
}
