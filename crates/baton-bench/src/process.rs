//! Running a child process and measuring it: wall time, exit status, peak RSS.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::machine::field;

pub struct Measured {
    /// From just before `spawn` to the moment the child was reaped.
    pub elapsed: Duration,
    pub started: Instant,
    /// The exit code, or minus the signal number.
    pub code: i32,
    /// Peak resident set of the child (`ru_maxrss` from `wait4`), in KiB.
    pub max_rss_kb: u64,
    pub stdout: String,
    pub stderr: String,
}

impl Measured {
    /// Fails with the child's stderr unless it exited 0.
    pub fn ok(self, what: &str) -> anyhow::Result<Measured> {
        if self.code != 0 {
            bail!(
                "{what} exited with {}: {}{}",
                self.code,
                self.stderr.trim(),
                self.stdout.trim()
            );
        }
        Ok(self)
    }
}

/// Runs `command` to completion (stdin closed, output captured).
pub fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("start {:?}", command.get_program()))?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let (code, max_rss_kb) = wait_with_rusage(child.id())?;
    let elapsed = started.elapsed();
    let collect = |handle: Option<std::thread::JoinHandle<String>>| {
        handle
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    };
    Ok(Measured {
        elapsed,
        started,
        code,
        max_rss_kb,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reaps `pid` with `wait4`, which (unlike `std::process::Child::wait`) also returns the
/// child's own resource usage. The `Child` handle must not be waited on afterwards.
fn wait_with_rusage(pid: u32) -> anyhow::Result<(i32, u64)> {
    let pid = libc::pid_t::try_from(pid).context("a process id out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value for it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait for a child process");
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok((code, u64::try_from(usage.ru_maxrss).unwrap_or(0)))
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/<pid>/status`, in KiB.
pub fn status_kb(pid: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&text, name)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_exit_status_output_and_rss() {
        let measured = run_measured(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .expect("run sh");
        assert_eq!(measured.code, 3);
        assert_eq!(measured.stdout, "out\n");
        assert_eq!(measured.stderr, "err\n");
        assert!(measured.max_rss_kb > 0);
        assert!(measured.ok("sh").is_err());
    }

    #[test]
    fn reads_own_status() {
        assert!(status_kb("self", "VmRSS").is_some_and(|kb| kb > 0));
    }
}
