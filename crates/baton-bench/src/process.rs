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
    // Its `ru_maxrss` is not the child's own (see `peak_rss_kb`), so it is not kept.
    let (code, _) = wait_with_rusage(child.id())?;
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

/// The hidden subcommand of the small intermediate process used by [`peak_rss_kb`].
pub const PEAK_RSS_COMMAND: &str = "__peak-rss";

/// The peak RSS of `command` (run once more, to completion), measured through a small
/// intermediate process.
///
/// `ru_maxrss` of a child started straight from this process is useless: Linux carries the
/// high-water mark of the memory the child was spawned from across `exec` (with vfork, this
/// process's own peak, which the generators and the model server make large). The
/// intermediate process is a fresh `baton-bench` of a few MB, so the figure is the child's own
/// peak, floored at the intermediate's size (reported by `peak_rss_floor_kb`).
pub fn peak_rss_kb(command: &Command) -> anyhow::Result<u64> {
    let exe = std::env::current_exe().context("find the baton-bench executable")?;
    let mut wrapper = Command::new(exe);
    wrapper
        .arg(PEAK_RSS_COMMAND)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapper.current_dir(dir);
    }
    let measured = run_measured(&mut wrapper)?.ok("the peak RSS wrapper")?;
    measured
        .stdout
        .trim()
        .parse()
        .with_context(|| format!("the peak RSS wrapper said `{}`", measured.stdout.trim()))
}

/// The smallest figure [`peak_rss_kb`] can report: that of a trivial child.
pub fn peak_rss_floor_kb() -> anyhow::Result<u64> {
    peak_rss_kb(&Command::new("true"))
}

/// The intermediate process: runs `PROGRAM ARGS…` (output discarded), prints its peak RSS
/// in KiB, and fails if it failed.
pub fn peak_rss_main(args: &[String]) -> anyhow::Result<()> {
    let [program, rest @ ..] = args else {
        bail!("usage: {PEAK_RSS_COMMAND} PROGRAM [ARGS…]");
    };
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let (code, max_rss_kb) = wait_with_rusage(child.id())?;
    if code != 0 {
        bail!("{program} exited with {code}");
    }
    println!("{max_rss_kb}");
    Ok(())
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
    fn measures_exit_status_and_output() {
        let measured =
            run_measured(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
                .expect("run sh");
        assert_eq!(measured.code, 3);
        assert_eq!(measured.stdout, "out\n");
        assert_eq!(measured.stderr, "err\n");
        assert!(measured.ok("sh").is_err());
    }

    #[test]
    fn peak_rss_child_fails_when_its_command_fails() {
        // The test binary is not baton-bench, so exercise the intermediate's side directly.
        assert!(peak_rss_main(&["sh".into(), "-c".into(), "exit 3".into()]).is_err());
        assert!(peak_rss_main(&["sh".into(), "-c".into(), "exit 0".into()]).is_ok());
    }

    #[test]
    fn reads_own_status() {
        assert!(status_kb("self", "VmRSS").is_some_and(|kb| kb > 0));
    }
}
