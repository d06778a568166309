//! Keeps the `.git` directories of the writable roots read-only for a `workspace-write` command,
//! as Codex does (so a sandboxed command cannot rewrite history or hooks), and hides baton's
//! home (`BATON_HOME`: config, tokens, transcripts) when it lies inside a writable root, so a
//! command can neither widen its own sandbox through `config.toml`, forge tokens, nor read or
//! change other sessions. Unlike `.git`, a home that cannot be hidden refuses the command.
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
//! `.git` directories are looked for up to [`GIT_WALK_DEPTH`] levels below each writable root
//! (nested repositories included); a `.git` file that points to a git directory elsewhere
//! (worktrees, submodules) is not followed.
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

/// The directories one command must not change, ready to be protected in its child: the
/// `.git` directories of its writable roots (bound read-only) and baton's home when it lies in
/// a writable root (covered by an empty read-only tmpfs, so the command can neither change
/// baton's config and tokens nor read other sessions' transcripts).
#[derive(Debug, Clone)]
pub(crate) struct ProtectedDirs {
    binds: Vec<ReadOnlyBind>,
    /// Covered by an empty read-only tmpfs; a failure there is fatal for the command.
    hidden: Vec<CString>,
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
    /// Covering a hidden directory with a tmpfs.
    Hide,
    /// Probe only: the remounted directory still accepted writes.
    StillWritable,
    /// Test only: dropping to another user before the probe.
    DropPrivileges,
}

impl Step {
    const ALL: [Step; 10] = [
        Step::Unshare,
        Step::SetGroups,
        Step::UidMap,
        Step::GidMap,
        Step::MakePrivate,
        Step::Bind,
        Step::Remount,
        Step::Hide,
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
            Step::Hide => "hiding baton's home",
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

/// How deep below a writable root `.git` directories are looked for (a root's own `.git` is
/// depth 1, `sub/.git` depth 2, ...), how many directories the walk may read and how many `.git`
/// it protects: bounds that keep the walk to milliseconds per command even in a home directory.
/// A repository nested deeper, or past the bounds, keeps a writable `.git` (the sandbox report
/// says so).
pub(crate) const GIT_WALK_DEPTH: usize = 4;
const GIT_WALK_MAX_DIRS: usize = 4000;
const GIT_WALK_MAX_FOUND: usize = 200;
/// Directories not descended into: big trees of generated files that hold no repositories.
const GIT_WALK_SKIP: [&str; 4] = ["node_modules", "target", ".cache", ".venv"];
/// Kernel trees with thousands of entries and no repositories (a writable root of `/`).
const GIT_WALK_SKIP_ABSOLUTE: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The `.git` directories inside `roots`, up to [`GIT_WALK_DEPTH`] (symlinks resolved and not
/// followed in the walk, duplicates removed).
pub(crate) fn git_dirs(roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut read = 0;
    for root in roots {
        let Ok(root) = root.canonicalize() else {
            continue;
        };
        let mut pending = vec![(root, 1)];
        while let Some((dir, depth)) = pending.pop() {
            if read >= GIT_WALK_MAX_DIRS || dirs.len() >= GIT_WALK_MAX_FOUND {
                tracing::debug!("stopped looking for .git directories at the walk's bounds");
                return dirs;
            }
            read += 1;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // `file_type` does not follow symlinks: a link to a directory is not walked.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name();
                let path = entry.path();
                if name == ".git" {
                    // A `.git` symlink to a directory is protected at its target.
                    if let Ok(git) = path.canonicalize()
                        && git.is_dir()
                        && !dirs.contains(&git)
                    {
                        dirs.push(git);
                    }
                } else if kind.is_dir()
                    && depth < GIT_WALK_DEPTH
                    && !GIT_WALK_SKIP_ABSOLUTE
                        .iter()
                        .any(|skip| path == Path::new(skip))
                    && !GIT_WALK_SKIP.iter().any(|skip| name == *skip)
                {
                    pending.push((path, depth + 1));
                }
            }
        }
    }
    dirs
}

/// The directories of `hide` that lie inside one of `roots` (both resolved).
pub(crate) fn hidden_dirs(roots: &[PathBuf], hide: &[PathBuf]) -> Vec<PathBuf> {
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| root.canonicalize().ok())
        .collect();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in hide {
        let Ok(dir) = dir.canonicalize() else {
            continue;
        };
        if dir.is_dir() && roots.iter().any(|root| dir.starts_with(root)) && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

impl ProtectedDirs {
    /// Protection for the `.git` directories of `roots` and the directories of `hide` inside
    /// them: `None` when there is nothing to protect, or when this machine cannot set up the
    /// namespace and only `.git` needed it (the sandbox report says why). When a directory of
    /// `hide` lies in a root and the namespace is unavailable, the command must not run: the
    /// error says why.
    pub(crate) fn for_roots(roots: &[PathBuf], hide: &[PathBuf]) -> Result<Option<Self>, String> {
        Self::for_roots_with(roots, hide, availability())
    }

    fn for_roots_with(
        roots: &[PathBuf],
        hide: &[PathBuf],
        availability: &Result<Mechanism, String>,
    ) -> Result<Option<Self>, String> {
        let hidden = hidden_dirs(roots, hide);
        let mechanism = match availability {
            Ok(mechanism) => *mechanism,
            Err(reason) if hidden.is_empty() => {
                // No walk for `.git` either: nothing could be done with what it finds.
                tracing::debug!("not protecting .git ({reason})");
                return Ok(None);
            }
            Err(reason) => {
                return Err(format!(
                    "baton's home {} lies inside a writable root, and hiding it from the command \
                     needs a private mount namespace, which this machine refuses ({reason}); set \
                     BATON_HOME to a directory outside the workspace",
                    hidden[0].display()
                ));
            }
        };
        let dirs = git_dirs(roots);
        if dirs.is_empty() && hidden.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            Self::new(mechanism, &dirs, current_ids()).hiding(&hidden),
        ))
    }

    fn hiding(mut self, dirs: &[PathBuf]) -> Self {
        self.hidden = dirs
            .iter()
            .filter_map(|dir| CString::new(dir.as_os_str().as_bytes()).ok())
            .collect();
        self
    }

    /// Whether a failure in the child must stop the command (a hidden directory would be open).
    pub(crate) fn is_required(&self) -> bool {
        !self.hidden.is_empty()
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
        Self {
            binds,
            hidden: Vec::new(),
            id_maps,
        }
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
        // After the binds, so a `.git` inside a hidden directory ends up hidden too. A fresh
        // tmpfs carries no locked flags, so this works in a user namespace as well.
        for dir in &self.hidden {
            mount_empty_tmpfs(dir)?;
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

fn mount_empty_tmpfs(target: &CStr) -> Result<(), ChildFailure> {
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            c"size=4k,mode=0555".as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(ChildFailure::last_os_error(Step::Hide))
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
    // Hiding baton's home needs a tmpfs mount as well: probe it too, so a machine that allows
    // binds but not tmpfs refuses commands up front with the reason, not at spawn.
    let home = scratch.path().join("home");
    fs_err::create_dir(&home).map_err(|error| error.to_string())?;
    let home = home.canonicalize().unwrap_or(home);
    let mut reasons = Vec::new();
    for mechanism in [Mechanism::MountNamespace, Mechanism::UserNamespace] {
        let protection = ProtectedDirs::new(mechanism, std::slice::from_ref(&git), current_ids())
            .hiding(std::slice::from_ref(&home));
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
    protection: &ProtectedDirs,
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

    #[test]
    fn git_dirs_include_nested_repositories_up_to_the_depth_bound() {
        let root = tempfile::tempdir().expect("tempdir");
        let root_path = root.path().canonicalize().expect("canonical");
        for dir in [
            "a/.git",
            "a/b/c/.git",
            "a/b/c/d/.git",
            "node_modules/x/.git",
        ] {
            std::fs::create_dir_all(root_path.join(dir)).expect("mkdir");
        }
        let mut found = git_dirs(std::slice::from_ref(&root_path));
        found.sort();
        // `a/b/c/d/.git` is 5 levels down; node_modules is skipped.
        assert_eq!(
            found,
            vec![root_path.join("a/.git"), root_path.join("a/b/c/.git")]
        );
    }

    #[test]
    fn a_home_inside_a_root_refuses_the_command_without_a_namespace() {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join(".baton");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::create_dir(root.path().join(".git")).expect("mkdir");
        let roots = [root.path().to_path_buf()];
        let unavailable = Err("unshare failed".to_owned());
        let refused =
            ProtectedDirs::for_roots_with(&roots, std::slice::from_ref(&home), &unavailable)
                .expect_err("must refuse");
        assert!(
            refused.contains("set BATON_HOME to a directory outside"),
            "{refused}"
        );
        // `.git` alone only loses its protection (Landlock still confines the command).
        let git_only = ProtectedDirs::for_roots_with(&roots, &[], &unavailable).expect("runs");
        assert!(git_only.is_none());
        // A home outside every root needs nothing.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let outside = ProtectedDirs::for_roots_with(
            &[elsewhere.path().to_path_buf()],
            std::slice::from_ref(&home),
            &unavailable,
        )
        .expect("runs");
        assert!(outside.is_none());
        let available = ProtectedDirs::for_roots_with(
            &roots,
            std::slice::from_ref(&home),
            &Ok(Mechanism::MountNamespace),
        )
        .expect("runs")
        .expect("protection");
        assert!(available.is_required());
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

        let plain = ProtectedDirs::new(
            Mechanism::MountNamespace,
            std::slice::from_ref(&git),
            nobody,
        );
        let refused = check_in_forked_child(&plain, &git, Some(nobody))
            .expect_err("nobody has no CAP_SYS_ADMIN");
        assert!(refused.starts_with("unshare failed"), "{refused}");

        let home = scratch.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        std::os::unix::fs::chown(&home, Some(nobody.0), Some(nobody.1)).expect("chown");
        let home = home.canonicalize().expect("canonical");
        let user = ProtectedDirs::new(Mechanism::UserNamespace, std::slice::from_ref(&git), nobody)
            .hiding(std::slice::from_ref(&home));
        match check_in_forked_child(&user, &git, Some(nobody)) {
            Ok(()) => {
                // The tmpfs over the home is read-only in the user namespace too.
                check_in_forked_child(&user, &home, Some(nobody)).expect("home hidden");
            }
            Err(reason) if reason.starts_with("unshare failed") => {
                eprintln!("note: unprivileged user namespaces are disabled here: {reason}");
            }
            Err(reason) => panic!("user namespace protection failed: {reason}"),
        }
    }
}
