//! What every command's child does between fork and exec besides the sandbox proper: shed the
//! descriptors it inherited and, when sandboxed, every capability (the rule: "a sandboxed
//! command has no capabilities and no descriptor above 2 that baton did not open for it").
//!
//! The numbers these need (the last capability, the descriptor limit) are read in the parent
//! ([`ChildLimits::probe`]); the child only makes raw syscalls.

use std::io;
use std::sync::OnceLock;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `CLOSE_RANGE_CLOEXEC` (Linux 5.11): mark instead of close.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
/// The descriptor loop of the fallback never runs further than this.
const MAX_FD_LOOP: i32 = 1 << 20;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Numbers the child needs, read once per process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildLimits {
    /// `/proc/sys/kernel/cap_last_cap`.
    pub last_cap: u32,
    /// Descriptors above this are never open (the soft `RLIMIT_NOFILE`, bounded).
    pub max_fd: i32,
}

impl ChildLimits {
    pub(crate) fn probe() -> ChildLimits {
        static LIMITS: OnceLock<ChildLimits> = OnceLock::new();
        *LIMITS.get_or_init(|| {
            let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|text| text.trim().parse().ok())
                // Every capability number fits in the two words of version 3.
                .unwrap_or(63);
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct we pass.
            let max_fd = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
                i32::try_from(limit.rlim_cur).unwrap_or(MAX_FD_LOOP)
            } else {
                MAX_FD_LOOP
            };
            ChildLimits {
                last_cap,
                max_fd: max_fd.min(MAX_FD_LOOP),
            }
        })
    }
}

/// Marks every descriptor above 2 close-on-exec, so the command starts with only stdin,
/// stdout and stderr. Marking rather than closing keeps the descriptors the child still needs
/// until exec (the Landlock ruleset, the pipe that reports a failed exec to the parent).
/// Async-signal-safe.
pub(crate) fn close_inherited_fds(limits: ChildLimits) -> io::Result<()> {
    // SAFETY: close_range with integer arguments only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: one fcntl per possible descriptor (EBADF for the unused ones).
    for fd in 3..limits.max_fd {
        // SAFETY: fcntl on an integer; a descriptor that is not open gives EBADF.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Whether this kernel has `close_range` with `CLOSE_RANGE_CLOEXEC` (Linux 5.11+).
pub(crate) fn close_range_cloexec_available() -> bool {
    // A range holding only the largest descriptor number, which is never open: changes nothing.
    // SAFETY: close_range with integer arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::MAX,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    rc == 0
}

/// Drops every capability: the bounding set (so that exec cannot give root its capabilities
/// back), the ambient set, then the effective, permitted and inheritable sets. Runs after
/// everything that needs a capability (mounts, namespaces). Async-signal-safe.
pub(crate) fn drop_capabilities(limits: ChildLimits) -> io::Result<()> {
    for cap in 0..=limits.last_cap {
        // SAFETY: plain prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                // A capability this kernel does not know.
                Some(libc::EINVAL) => break,
                // No CAP_SETPCAP: an unprivileged process, which has no capabilities to lose
                // and, with no_new_privs set, cannot gain any through exec.
                Some(libc::EPERM) if !has_effective_capabilities() => break,
                _ => return Err(error),
            }
        }
    }
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set.
        if error.raw_os_error() != Some(libc::EINVAL) {
            return Err(error);
        }
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data words from live stack values.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the calling thread has any effective capability. Async-signal-safe.
fn has_effective_capabilities() -> bool {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two data words into the stack array.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    rc != 0 || data.iter().any(|word| word.effective != 0)
}
