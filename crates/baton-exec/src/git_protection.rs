//! Keeps the `.git` directories of the writable roots read-only for a `workspace-write` command,
//! as Codex does (so a sandboxed command cannot rewrite history or hooks).
//!
//! Landlock can only allow (it cannot carve a read-only hole into a writable tree), so the child
//! enters a private mount namespace before exec, bind-mounts each `.git` onto itself and remounts
//! that bind read-only: writes there fail with `EROFS` whatever the permissions (root included).
//! Landlock, applied right after, refuses every later mount change, so the command cannot undo
//! the remount; the bind lives only in the command's namespace, so nobody else sees it.
//!
//! Two ways in, probed once per process in a forked child ([`availability`]):
//! * with `CAP_SYS_ADMIN` (baton runs as root): `unshare(CLONE_NEWNS)`;
//! * otherwise a user namespace as well, mapping the caller's uid and gid onto themselves, so
//!   files keep their owners and `exec` drops the namespace's capabilities again.
//!
//! Only a `.git` *directory* directly inside a writable root is protected: a `.git` file that
//! points to a git directory elsewhere (worktrees, submodules) is not followed.
//!
//! As in `sandbox`, the parent prepares everything (C strings, mount flags, id maps); the child
//! only makes raw syscalls and does not allocate.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io::{self, Read as _};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libc::c_ulong;

/// `ST_RELATIME` of `statvfs(3)`; not exported by every libc flavour of the `libc` crate.
const ST_RELATIME: c_ulong = 4096;

/// How the command's private mount namespace is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// `unshare(CLONE_NEWNS)`: needs `CAP_SYS_ADMIN`.
    MountNamespace,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNS)` with identity uid/gid maps: needs unprivileged
    /// user namespaces.
    UserNamespace,
}

impl Mechanism {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Mechanism::MountNamespace => "a private mount namespace",
            Mechanism::UserNamespace => "a private user and mount namespace",
        }
    }
}

/// Whether, and how, this process can protect `.git`; probed on first use.
pub(crate) fn availability() -> &'static Result<Mechanism, String> {
    static AVAILABILITY: OnceLock<Result<Mechanism, String>> = OnceLock::new();
    AVAILABILITY.get_or_init(probe)
}

/// The `.git` directories of one command, ready to be made read-only in its child.
#[derive(Debug, Clone)]
pub(crate) struct GitProtection {
    binds: Vec<ReadOnlyBind>,
    /// Present for [`Mechanism::UserNamespace`].
    id_maps: Option<IdMaps>,
}

/// One directory to bind onto itself and remount read-only.
#[derive(Debug, Clone)]
struct ReadOnlyBind {
    path: CString,
    /// `MS_BIND | MS_REMOUNT | MS_RDONLY` plus the flags the mount already has: in a user
    /// namespace the kernel refuses a remount that would drop `nosuid`, `nodev`, ….
    remount_flags: c_ulong,
}

#[derive(Debug, Clone)]
struct IdMaps {
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
}

/// The syscall that failed in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    Unshare = 1,
    SetGroups,
    UidMap,
    GidMap,
    MakePrivate,
    Bind,
    Remount,
    /// Probe only: the remounted directory still accepted writes.
    StillWritable,
    /// Test only: dropping to another user before the probe.
    DropPrivileges,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Unshare,
        Step::SetGroups,
        Step::UidMap,
        Step::GidMap,
        Step::MakePrivate,
        Step::Bind,
        Step::Remount,
        Step::StillWritable,
        Step::DropPrivileges,
    ];

    fn text(self) -> &'static str {
        match self {
            Step::Unshare => "unshare",
            Step::SetGroups => "writing /proc/self/setgroups",
            Step::UidMap => "writing /proc/self/uid_map",
            Step::GidMap => "writing /proc/self/gid_map",
            Step::MakePrivate => "making mounts private",
            Step::Bind => "bind-mounting .git",
            Step::Remount => "remounting .git read-only",
            Step::StillWritable => "checking the remount",
            Step::DropPrivileges => "dropping privileges",
        }
    }
}

/// Why the child could not protect `.git`: plain data, so the child can produce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildFailure {
    pub(crate) step: Step,
    pub(crate) errno: i32,
}

impl fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Step::StillWritable if self.errno == 0 => {
                write!(f, "the read-only bind mount still accepted writes")
            }
            Step::StillWritable => write!(
                f,
                "checking the read-only bind mount gave `{}` instead of EROFS",
                io::Error::from_raw_os_error(self.errno)
            ),
            step => write!(
                f,
                "{} failed: {}",
                step.text(),
                io::Error::from_raw_os_error(self.errno)
            ),
        }
    }
}

impl ChildFailure {
    fn last_os_error(step: Step) -> Self {
        Self {
            step,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }

    /// After entering a user namespace without its id maps the process cannot create files
    /// (its uid is unmapped there): such a child must not run the command.
    pub(crate) fn leaves_the_process_unusable(&self) -> bool {
        matches!(self.step, Step::SetGroups | Step::UidMap | Step::GidMap)
    }

    /// Tells the command's output that `.git` stayed writable. Async-signal-safe: a stack
    /// buffer and one `write(2)` to the (already redirected) stderr.
    pub(crate) fn warn_on_stderr(&self) {
        let mut buffer = [0u8; 160];
        let len = self.warning(&mut buffer);
        // SAFETY: writes initialised bytes of a stack buffer to fd 2; failure is ignored.
        unsafe {
            libc::write(2, buffer.as_ptr().cast(), len);
        }
    }

    /// The warning line, written into `buffer` without allocating; returns its length.
    fn warning(&self, buffer: &mut [u8; 160]) -> usize {
        let mut len = 0;
        for part in [
            b"baton: warning: .git stays writable for this command (".as_slice(),
            self.step.text().as_bytes(),
            b" failed, errno ".as_slice(),
        ] {
            len += copy_into(&mut buffer[len..], part);
        }
        len += write_decimal(&mut buffer[len..], self.errno);
        len += copy_into(&mut buffer[len..], b")\n");
        len
    }
}

fn copy_into(buffer: &mut [u8], bytes: &[u8]) -> usize {
    let len = bytes.len().min(buffer.len());
    buffer[..len].copy_from_slice(&bytes[..len]);
    len
}

fn write_decimal(buffer: &mut [u8], value: i32) -> usize {
    let mut digits = [0u8; 10];
    let mut rest = value.unsigned_abs();
    let mut count = 0;
    loop {
        digits[digits.len() - 1 - count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    copy_into(buffer, &digits[digits.len() - count..])
}

/// The `.git` directories directly inside `roots` (symlinks resolved, duplicates removed).
pub(crate) fn git_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for root in roots {
        let Ok(dir) = root.join(".git").canonicalize() else {
            continue;
        };
        if dir.is_dir() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

impl GitProtection {
    /// Protection for the `.git` directories of `roots`: `None` when there are none, or when
    /// this machine cannot set up the namespace (the sandbox report says why).
    pub(crate) fn for_roots(roots: &[PathBuf]) -> Option<Self> {
        let dirs = git_dirs(roots);
        if dirs.is_empty() {
            return None;
        }
        match availability() {
            Ok(mechanism) => Some(Self::new(*mechanism, &dirs, current_ids())),
            Err(reason) => {
                tracing::debug!("not protecting .git ({reason})");
                None
            }
        }
    }

    fn new(mechanism: Mechanism, dirs: &[PathBuf], (uid, gid): (u32, u32)) -> Self {
        let binds = dirs
            .iter()
            .filter_map(|dir| {
                let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
                let remount_flags =
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_mount_flags(&path);
                Some(ReadOnlyBind {
                    path,
                    remount_flags,
                })
            })
            .collect();
        let id_maps = (mechanism == Mechanism::UserNamespace).then(|| IdMaps {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
        });
        Self { binds, id_maps }
    }

    /// Runs between fork and exec, before Landlock (which forbids mount changes): only raw
    /// syscalls on data prepared by the parent.
    pub(crate) fn apply_in_child(&self) -> Result<(), ChildFailure> {
        let namespaces = match self.id_maps {
            Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWNS,
            None => libc::CLONE_NEWNS,
        };
        // SAFETY: plain syscall with integer flags.
        if unsafe { libc::unshare(namespaces) } != 0 {
            return Err(ChildFailure::last_os_error(Step::Unshare));
        }
        if let Some(maps) = &self.id_maps {
            // An unprivileged process may map only its own ids, and its gid only once
            // setgroups(2) is denied in the namespace.
            write_proc_file(c"/proc/self/setgroups", b"deny", Step::SetGroups)?;
            write_proc_file(c"/proc/self/uid_map", &maps.uid_map, Step::UidMap)?;
            write_proc_file(c"/proc/self/gid_map", &maps.gid_map, Step::GidMap)?;
        }
        // Without this a shared `/` would propagate the read-only binds to baton's namespace.
        mount(
            None,
            c"/",
            libc::MS_REC | libc::MS_PRIVATE,
            Step::MakePrivate,
        )?;
        for bind in &self.binds {
            // Not recursive: a mount below `.git` would stay writable through a recursive bind.
            mount(Some(&bind.path), &bind.path, libc::MS_BIND, Step::Bind)?;
            mount(None, &bind.path, bind.remount_flags, Step::Remount)?;
        }
        Ok(())
    }
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    flags: c_ulong,
    step: Step,
) -> Result<(), ChildFailure> {
    let source = source.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: NUL-terminated strings (or null) that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(ChildFailure::last_os_error(step))
    }
}

fn write_proc_file(path: &CStr, contents: &[u8], step: Step) -> Result<(), ChildFailure> {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(ChildFailure::last_os_error(step));
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        let failure =
            (written != contents.len() as isize).then(|| ChildFailure::last_os_error(step));
        libc::close(fd);
        failure.map_or(Ok(()), Err)
    }
}

/// The flags of the mount holding `path` that a remount inside a user namespace must keep.
fn locked_mount_flags(path: &CStr) -> c_ulong {
    // SAFETY: statvfs fills the zeroed struct; on failure we keep no extra flags.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return 0;
    }
    [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
    ]
    .into_iter()
    .filter(|(statvfs_flag, _)| stats.f_flag & statvfs_flag != 0)
    .fold(0, |flags, (_, mount_flag)| flags | mount_flag)
}

fn current_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Tries each mechanism on a scratch `.git` in a forked child; the first that really makes it
/// read-only wins.
fn probe() -> Result<Mechanism, String> {
    let scratch = tempfile::Builder::new()
        .prefix("baton-git-probe-")
        .tempdir()
        .map_err(|error| format!("creating a scratch directory for the probe: {error}"))?;
    let git = scratch.path().join(".git");
    fs_err::create_dir(&git).map_err(|error| error.to_string())?;
    let git = git.canonicalize().unwrap_or(git);
    let mut reasons = Vec::new();
    for mechanism in [Mechanism::MountNamespace, Mechanism::UserNamespace] {
        let protection = GitProtection::new(mechanism, std::slice::from_ref(&git), current_ids());
        match check_in_forked_child(&protection, &git, None) {
            Ok(()) => return Ok(mechanism),
            Err(failure) => reasons.push(format!("{}: {failure}", mechanism.describe())),
        }
    }
    Err(reasons.join("; "))
}

/// Reads everything a forked probe child wrote to its pipe (after closing this process's copy
/// of the write end, so the read ends when the child does), then reaps the child: the report
/// and the child's wait status.
pub(crate) fn collect_probe_report(
    pid: libc::pid_t,
    mut reader: io::PipeReader,
    writer: io::PipeWriter,
) -> Result<(Vec<u8>, i32), String> {
    drop(writer);
    let mut message = Vec::new();
    let read = reader.read_to_end(&mut message);
    let mut status = 0;
    // SAFETY: waits for the child forked by the caller.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    read.map_err(|error| format!("reading the probe's report: {error}"))?;
    Ok((message, status))
}

/// Forks; the child (optionally after becoming `become_user` = (uid, gid)) applies
/// `protection` and checks that `dir` refuses writes, then reports back through a pipe.
fn check_in_forked_child(
    protection: &GitProtection,
    dir: &Path,
    become_user: Option<(u32, u32)>,
) -> Result<(), String> {
    let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|error| error.to_string())?;
    let (reader, writer) =
        io::pipe().map_err(|error| format!("creating the probe's pipe: {error}"))?;
    let report_fd = writer.as_raw_fd();

    // SAFETY: the child only makes raw syscalls on data prepared here and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "fork for the probe failed: {}",
            io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        let outcome = become_user
            .map_or(Ok(()), drop_privileges)
            .and_then(|()| protection.apply_in_child())
            .and_then(|()| refuses_writes(&dir));
        let code = match outcome {
            Ok(()) => 0,
            Err(failure) => {
                let mut message = [0u8; 5];
                message[0] = failure.step as u8;
                message[1..].copy_from_slice(&failure.errno.to_ne_bytes());
                // SAFETY: writes a stack buffer to the pipe inherited from the parent.
                unsafe { libc::write(report_fd, message.as_ptr().cast(), message.len()) };
                1
            }
        };
        // SAFETY: ends the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }

    let (message, status) = collect_probe_report(pid, reader, writer)?;
    if let [step, errno @ ..] = message.as_slice() {
        let step = Step::ALL
            .into_iter()
            .find(|candidate| *candidate as u8 == *step)
            .unwrap_or(Step::Unshare);
        let errno = <[u8; 4]>::try_from(errno).map_or(0, i32::from_ne_bytes);
        return Err(ChildFailure { step, errno }.to_string());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!(
            "the probe process ended abnormally (status {status})"
        ))
    }
}

fn refuses_writes(dir: &CStr) -> Result<(), ChildFailure> {
    // SAFETY: access(2) on a NUL-terminated path.
    if unsafe { libc::access(dir.as_ptr(), libc::W_OK) } == 0 {
        return Err(ChildFailure {
            step: Step::StillWritable,
            errno: 0,
        });
    }
    let failure = ChildFailure::last_os_error(Step::StillWritable);
    if failure.errno == libc::EROFS {
        Ok(())
    } else {
        Err(failure)
    }
}

pub(crate) fn drop_privileges((uid, gid): (u32, u32)) -> Result<(), ChildFailure> {
    // Raw syscalls: libc's wrappers synchronise all threads, which a forked child lacks.
    // SAFETY: plain syscalls with integer arguments.
    let ok = unsafe {
        libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(libc::SYS_setresgid, gid, gid, gid) == 0
            && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0
            // Changing ids made the process non-dumpable, which leaves /proc/self owned by
            // root; a process started as `uid` would be dumpable.
            && libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(ChildFailure::last_os_error(Step::DropPrivileges))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn warning_names_the_step_and_the_errno() {
        let failure = ChildFailure {
            step: Step::Remount,
            errno: libc::EPERM,
        };
        let mut buffer = [0u8; 160];
        let len = failure.warning(&mut buffer);
        assert_eq!(
            std::str::from_utf8(&buffer[..len]).expect("utf-8"),
            "baton: warning: .git stays writable for this command (remounting .git read-only \
             failed, errno 1)\n"
        );
        let mut buffer = [0u8; 12];
        let len = write_decimal(&mut buffer, 13);
        assert_eq!(&buffer[..len], b"13");
        let len = write_decimal(&mut buffer, 0);
        assert_eq!(&buffer[..len], b"0");
        let len = write_decimal(&mut buffer, i32::MAX);
        assert_eq!(&buffer[..len], b"2147483647");
    }

    #[test]
    fn git_dirs_are_directories_directly_in_a_root() {
        let with_dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(with_dir.path().join(".git")).expect("mkdir");
        let with_file = tempfile::tempdir().expect("tempdir");
        std::fs::write(with_file.path().join(".git"), "gitdir: /elsewhere\n").expect("write");
        let without = tempfile::tempdir().expect("tempdir");
        let roots = [
            with_dir.path().to_path_buf(),
            with_file.path().to_path_buf(),
            without.path().to_path_buf(),
            with_dir.path().join("."),
        ];
        let expected = with_dir
            .path()
            .join(".git")
            .canonicalize()
            .expect("canonical");
        assert_eq!(git_dirs(&roots), vec![expected]);
    }

    /// When the tests run as root, the probe picks the plain mount namespace and the user
    /// namespace path would go untested: try it here as `nobody`.
    #[test]
    fn an_unprivileged_user_gets_protection_through_a_user_namespace() {
        if current_ids().0 != 0 {
            eprintln!("note: not root; the sandbox probe exercises this path directly");
            return;
        }
        let scratch = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let git = scratch.path().join(".git");
        std::fs::create_dir(&git).expect("mkdir");
        let git = git.canonicalize().expect("canonical");
        let nobody = (65534, 65534);
        // As for a real user, the probed directory is the user's own.
        std::os::unix::fs::chown(&git, Some(nobody.0), Some(nobody.1)).expect("chown");

        let plain = GitProtection::new(
            Mechanism::MountNamespace,
            std::slice::from_ref(&git),
            nobody,
        );
        let refused = check_in_forked_child(&plain, &git, Some(nobody))
            .expect_err("nobody has no CAP_SYS_ADMIN");
        assert!(refused.starts_with("unshare failed"), "{refused}");

        let user = GitProtection::new(Mechanism::UserNamespace, std::slice::from_ref(&git), nobody);
        match check_in_forked_child(&user, &git, Some(nobody)) {
            Ok(()) => {}
            Err(reason) if reason.starts_with("unshare failed") => {
                eprintln!("note: unprivileged user namespaces are disabled here: {reason}");
            }
            Err(reason) => panic!("user namespace protection failed: {reason}"),
        }
    }
}
