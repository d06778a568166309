//! A PID namespace per sandboxed command, so that nothing it starts outlives it: a process
//! that leaves the command's process group (`setsid -f`, a daemon's double fork) is still
//! inside the namespace, and the kernel kills every process of a namespace when its first
//! process (PID 1) ends.
//!
//! Between fork and exec the child builds this chain (each step async-signal-safe):
//!
//! ```text
//! baton ─ spawned child (outside: waits, then exits as the command did)
//!           └─ reaper, PID 1 of the new namespace (reaps orphans, exits with the command)
//!                └─ the command (exec)
//! ```
//!
//! The spawned child is what baton waits for and what it kills (with the whole process group,
//! the reaper and the command included) on timeout or cancel. The reaper, not the command, is
//! PID 1, so the command keeps the usual signal semantics (PID 1 ignores signals it has no
//! handler for). The reaper reports the command's raw wait status through a pipe, so the
//! spawned child can end the same way (same exit code, or the same signal).
//!
//! Entering the namespace needs `CAP_SYS_ADMIN` (baton run as root) or an unprivileged user
//! namespace (identity uid/gid maps, as for `.git`); [`availability`] probes which, once.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// How the namespace is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mechanism {
    /// `unshare(CLONE_NEWPID)`: needs `CAP_SYS_ADMIN`.
    PidNamespace,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWPID)` with identity id maps.
    UserAndPidNamespace,
}

impl Mechanism {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Mechanism::PidNamespace => "a PID namespace per sandboxed command",
            Mechanism::UserAndPidNamespace => "a user and PID namespace per sandboxed command",
        }
    }
}

/// Whether, and how, this process can give a command its own PID namespace.
pub(crate) fn availability() -> &'static Result<Mechanism, String> {
    static AVAILABILITY: OnceLock<Result<Mechanism, String>> = OnceLock::new();
    AVAILABILITY.get_or_init(probe)
}

/// The namespace of one command, ready to be entered in its child.
#[derive(Debug, Clone)]
pub(crate) struct PidNamespace {
    /// Present for [`Mechanism::UserAndPidNamespace`]: `/proc/self/uid_map` and `gid_map`.
    id_maps: Option<(Vec<u8>, Vec<u8>)>,
}

impl PidNamespace {
    /// `None` where this machine has no PID namespaces for us (the report says why).
    pub(crate) fn for_command() -> Option<Self> {
        match availability() {
            Ok(mechanism) => Some(Self::new(*mechanism)),
            Err(reason) => {
                tracing::debug!("no PID namespace for commands ({reason})");
                None
            }
        }
    }

    fn new(mechanism: Mechanism) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        Self::with_ids(mechanism, unsafe { (libc::getuid(), libc::getgid()) })
    }

    fn with_ids(mechanism: Mechanism, (uid, gid): (u32, u32)) -> Self {
        let id_maps = (mechanism == Mechanism::UserAndPidNamespace).then(|| {
            (
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            )
        });
        Self { id_maps }
    }

    /// Runs between fork and exec. Returns `Ok` only in the process that goes on to exec the
    /// command; the spawned child and the reaper never return (they `_exit` as the command
    /// did). Only raw syscalls on data prepared by the parent.
    pub(crate) fn enter_in_child(&self) -> io::Result<()> {
        let flags = match self.id_maps {
            Some(_) => libc::CLONE_NEWUSER | libc::CLONE_NEWPID,
            None => libc::CLONE_NEWPID,
        };
        // SAFETY: plain syscall with integer flags.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some((uid_map, gid_map)) = &self.id_maps {
            write_proc_file(c"/proc/self/setgroups", b"deny")?;
            write_proc_file(c"/proc/self/uid_map", uid_map)?;
            write_proc_file(c"/proc/self/gid_map", gid_map)?;
        }
        let mut status_pipe = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(status_pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let [read_end, write_end] = status_pipe;
        // SAFETY: fork in a child that only makes raw syscalls afterwards.
        let reaper = unsafe { libc::fork() };
        if reaper < 0 {
            return Err(io::Error::last_os_error());
        }
        if reaper > 0 {
            outer_wait(reaper, read_end);
        }
        // The reaper: PID 1 of the namespace. If the spawned child is killed (baton drops the
        // command), the namespace goes with it.
        // SAFETY: plain syscalls with integer arguments.
        unsafe {
            libc::close(read_end);
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
        }
        // SAFETY: as above.
        let command = unsafe { libc::fork() };
        if command < 0 {
            return Err(io::Error::last_os_error());
        }
        if command > 0 {
            reap(command, write_end);
        }
        // SAFETY: the command does not need the status pipe.
        unsafe { libc::close(write_end) };
        Ok(())
    }
}

/// The spawned child: holds nothing open (so baton's output pipe and exec-error pipe see only
/// the command), waits for the reaper's report and ends the same way as the command.
fn outer_wait(reaper: libc::pid_t, read_end: libc::c_int) -> ! {
    let mut status: libc::c_int = 0;
    let mut report = [0u8; 4];
    // SAFETY: raw syscalls on stack buffers; the loop retries reads interrupted by a signal.
    unsafe {
        close_all_except(read_end);
        let mut got = 0usize;
        while got < report.len() {
            let n = libc::read(
                read_end,
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            );
            if n > 0 {
                got += n as usize;
            } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        while libc::waitpid(reaper, &mut status, 0) < 0 && *libc::__errno_location() == libc::EINTR
        {
        }
        if got == report.len() {
            status = libc::c_int::from_ne_bytes(report);
        }
        exit_like(status)
    }
}

/// PID 1: reaps every orphan until the command ends, reports its status, and exits (which
/// makes the kernel kill whatever is left in the namespace).
fn reap(command: libc::pid_t, write_end: libc::c_int) -> ! {
    // SAFETY: raw syscalls on stack values.
    unsafe {
        close_all_except(write_end);
        let mut status: libc::c_int = 0;
        loop {
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                break;
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                status = 127 << 8;
                break;
            }
        }
        let bytes = status.to_ne_bytes();
        libc::write(write_end, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        })
    }
}

/// Closes every descriptor but `keep`. Async-signal-safe.
unsafe fn close_all_except(keep: libc::c_int) {
    // SAFETY: close_range on integer ranges; errors (old kernels) fall back to close(2).
    unsafe {
        let keep = keep as libc::c_uint;
        for (first, last) in [(0, keep.wrapping_sub(1)), (keep + 1, libc::c_uint::MAX)] {
            if first > last {
                continue;
            }
            if libc::syscall(libc::SYS_close_range, first, last, 0) != 0 {
                for fd in first..last.min(first.saturating_add(65_536)) {
                    libc::close(fd as libc::c_int);
                }
            }
        }
    }
}

/// Ends the calling process as `status` says the command ended: the same exit code, or the
/// same signal (without a core dump). Async-signal-safe.
fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: raw syscalls with integer arguments.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut unblock: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblock);
            libc::sigaddset(&mut unblock, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal)
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

fn write_proc_file(path: &std::ffi::CStr, contents: &[u8]) -> io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, contents.as_ptr().cast(), contents.len());
        let result = if written == contents.len() as isize {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        libc::close(fd);
        result
    }
}

/// Tries each mechanism in a forked child: the namespace counts only if the command-to-be
/// really is inside it (its PID there is 2, after the reaper).
fn probe() -> Result<Mechanism, String> {
    let mut reasons = Vec::new();
    for mechanism in [Mechanism::PidNamespace, Mechanism::UserAndPidNamespace] {
        match check_in_forked_child(&PidNamespace::new(mechanism), None) {
            Ok(()) => return Ok(mechanism),
            Err(reason) => reasons.push(format!("{}: {reason}", mechanism.describe())),
        }
    }
    Err(reasons.join("; "))
}

/// Forks; the child (optionally after becoming `become_user` = (uid, gid)) enters `namespace`
/// and the process that would exec the command reports its PID there.
fn check_in_forked_child(
    namespace: &PidNamespace,
    become_user: Option<(u32, u32)>,
) -> Result<(), String> {
    let (reader, writer) =
        io::pipe().map_err(|error| format!("creating the probe's pipe: {error}"))?;
    let report_fd = writer.as_raw_fd();
    // SAFETY: the child only makes raw syscalls and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // The pipe would be closed by the chain's close_all_except: keep a copy on fd 3.
        // SAFETY: raw syscalls; the command process reports 4 bytes and exits.
        unsafe {
            if libc::dup2(report_fd, 3) < 0 {
                libc::_exit(2);
            }
            if let Some(user) = become_user
                && crate::git_protection::drop_privileges(user).is_err()
            {
                libc::_exit(2);
            }
            let code = match namespace.enter_in_child() {
                Ok(()) => {
                    let pid = libc::getpid().to_ne_bytes();
                    libc::write(3, pid.as_ptr().cast(), pid.len());
                    0
                }
                Err(error) => {
                    let errno = error.raw_os_error().unwrap_or(0).to_ne_bytes();
                    libc::write(3, errno.as_ptr().cast(), errno.len());
                    1
                }
            };
            libc::_exit(code)
        }
    }
    let (message, status) = crate::git_protection::collect_probe_report(pid, reader, writer)?;
    let value = <[u8; 4]>::try_from(message.as_slice()).map(i32::from_ne_bytes);
    let exited_with = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    match (exited_with, value) {
        (Some(0), Ok(2)) => Ok(()),
        (Some(0), Ok(other)) => Err(format!(
            "the command got PID {other} instead of 2 in the namespace"
        )),
        (Some(1), Ok(errno)) => Err(format!(
            "unshare failed: {}",
            io::Error::from_raw_os_error(errno)
        )),
        _ => Err(format!("the probe ended abnormally (status {status})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the tests run as root, the probe picks the plain PID namespace and the user
    /// namespace path would go untested: try both here as `nobody`.
    #[test]
    fn an_unprivileged_user_gets_a_pid_namespace_through_a_user_namespace() {
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("note: not root; the probe exercises the unprivileged path directly");
            return;
        }
        let nobody = (65534, 65534);
        let plain = PidNamespace::with_ids(Mechanism::PidNamespace, nobody);
        let refused =
            check_in_forked_child(&plain, Some(nobody)).expect_err("nobody has no CAP_SYS_ADMIN");
        assert!(refused.starts_with("unshare failed"), "{refused}");

        let user = PidNamespace::with_ids(Mechanism::UserAndPidNamespace, nobody);
        match check_in_forked_child(&user, Some(nobody)) {
            Ok(()) => {}
            Err(reason) if reason.starts_with("unshare failed") => {
                eprintln!("note: unprivileged user namespaces are disabled here: {reason}");
            }
            Err(reason) => panic!("user and PID namespace failed: {reason}"),
        }
    }

    #[test]
    fn root_gets_a_plain_pid_namespace() {
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            return;
        }
        assert_eq!(availability(), &Ok(Mechanism::PidNamespace));
    }
}
