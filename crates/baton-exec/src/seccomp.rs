//! A small seccomp filter that turns networking off: `socket(2)` is refused for every address
//! family (or every family except `AF_UNIX`, when Unix sockets are allowed), and
//! `io_uring_setup(2)` is refused because io_uring can create sockets without calling
//! `socket(2)`. `socketpair(2)` stays allowed: a connected pair reaches nothing outside the
//! command. A BPF filter cannot read the address given to `connect(2)`, so refusing `socket`
//! for `AF_UNIX` is what keeps a command from Unix sockets outside its sandbox (a Docker
//! socket, an ssh agent).
//!
//! The program is built in the parent; the child only installs it (one `seccomp(2)` call, which
//! is async-signal-safe).

use std::io;

use libc::{sock_filter, sock_fprog};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

/// Offsets into `struct seccomp_data`.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
/// Low 32 bits of the first argument (little-endian).
const OFFSET_ARG0_LOW: u32 = 16;

/// Set on x86_64 syscall numbers of the x32 ABI, which has its own `socket`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32);

/// Whether this architecture has a network filter at all.
pub(crate) const SUPPORTED_ARCH: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// A jump target inside the program being assembled.
#[derive(Clone, Copy)]
enum Target {
    Next,
    Allow,
    Deny,
    CheckDomain,
}

enum Insn {
    LoadWord(u32),
    JumpIfEqual(u32, Target, Target),
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    JumpIfAtLeast(u32, Target, Target),
    Return(u32),
    Label(Target),
}

/// The BPF program described in the module comment (`allow_unix`: `AF_UNIX` sockets may be
/// created), or `None` on an architecture we do not know the syscall numbers of.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn network_filter(allow_unix: bool) -> Option<Vec<sock_filter>> {
    use Insn::*;
    use Target::*;
    let mut program = vec![
        LoadWord(OFFSET_ARCH),
        // A syscall of another ABI (e.g. 32-bit `int 0x80`) could reach `socketcall`: refuse.
        JumpIfEqual(AUDIT_ARCH_NATIVE, Next, Deny),
        LoadWord(OFFSET_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.push(JumpIfAtLeast(X32_SYSCALL_BIT, Deny, Next));
    let on_socket = if allow_unix { CheckDomain } else { Deny };
    program.extend([
        JumpIfEqual(libc::SYS_socket as u32, on_socket, Next),
        JumpIfEqual(libc::SYS_io_uring_setup as u32, Deny, Next),
        Return(RET_ALLOW),
        Label(CheckDomain),
        LoadWord(OFFSET_ARG0_LOW),
        JumpIfEqual(libc::AF_UNIX as u32, Allow, Deny),
        Label(Allow),
        Return(RET_ALLOW),
        Label(Deny),
        Return(RET_EPERM),
    ]);
    Some(assemble(&program))
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn network_filter(_allow_unix: bool) -> Option<Vec<sock_filter>> {
    None
}

fn assemble(program: &[Insn]) -> Vec<sock_filter> {
    // Index each label by the position of the instruction that follows it.
    let mut labels = Vec::new();
    let mut position = 0usize;
    for insn in program {
        match insn {
            Insn::Label(target) => labels.push((*target as u8, position)),
            _ => position += 1,
        }
    }
    let resolve = |from: usize, target: Target| -> u8 {
        let to = match target {
            Target::Next => from + 1,
            other => labels
                .iter()
                .find(|(label, _)| *label == other as u8)
                .map(|(_, at)| *at)
                .unwrap_or(from + 1),
        };
        // BPF jumps are forward offsets from the next instruction; our programs are tiny.
        (to - from - 1) as u8
    };
    let mut out = Vec::new();
    for insn in program {
        let at = out.len();
        let filter = match *insn {
            Insn::Label(_) => continue,
            Insn::LoadWord(offset) => statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset),
            Insn::JumpIfEqual(k, yes, no) => {
                jump(libc::BPF_JEQ, k, resolve(at, yes), resolve(at, no))
            }
            Insn::JumpIfAtLeast(k, yes, no) => {
                jump(libc::BPF_JGE, k, resolve(at, yes), resolve(at, no))
            }
            Insn::Return(value) => statement(libc::BPF_RET | libc::BPF_K, value),
        };
        out.push(filter);
    }
    out
}

fn statement(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(condition: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | condition | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Installs `filter` on the calling thread. Async-signal-safe: called between fork and exec.
/// The caller has set `no_new_privs` already.
pub(crate) fn install(filter: &[sock_filter]) -> io::Result<()> {
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut sock_filter,
    };
    // SAFETY: `program` points at `filter`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &program as *const sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel accepts seccomp filters that return an errno.
pub(crate) fn errno_filters_available() -> bool {
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    rc == 0
}
