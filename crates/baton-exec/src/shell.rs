//! Running one command of the `shell` tool: no implicit shell, its own process group, a
//! timeout, cancellation, a sandbox and bounded output.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use baton_protocol::{SandboxMode, SandboxPolicy};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use crate::child::{self, ChildLimits};
use crate::output::{HeadTailBuffer, OutputCap};
use crate::sandbox;
use crate::spawner;

/// How long we keep reading after the command's process group is gone. Output still in the
/// pipe arrives at once; only a process that left the group (setsid, daemonised) keeps the
/// pipe open longer, and we do not wait for it. (A sandboxed command's escaped processes die
/// with its PID namespace; an unsandboxed one's may outlive it.)
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// One command to run.
#[derive(Debug, Clone)]
pub struct ShellRequest {
    /// Program and arguments, executed directly (no implicit shell).
    pub argv: Vec<String>,
    /// Absolute directory the process starts in: the session cwd joined with the tool's
    /// `workdir`. It grants nothing: the model chooses it, so it may be anywhere.
    pub cwd: PathBuf,
    /// Absolute session cwd: the workspace the sandbox is built around. Under
    /// `workspace-write` it is writable (except its `.git`), and relative `writable_roots` of
    /// the policy are resolved against it. Never derive it from model input.
    pub workspace: PathBuf,
    pub timeout: Duration,
    pub sandbox: SandboxPolicy,
    pub output_cap: OutputCap,
    /// The command's whole environment (see [`crate::command_env`]): nothing of baton's own
    /// environment reaches it otherwise. The sandbox adds its `TMPDIR`.
    pub env: Vec<(OsString, OsString)>,
    /// Directories a `workspace-write` command must neither see nor change when they lie in a
    /// writable root: baton's home (config, tokens, transcripts). Hidden under an empty
    /// read-only mount; the command is refused where that is impossible.
    pub hidden_dirs: Vec<PathBuf>,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// `None` when the process was killed by a signal (see `signal`).
    pub exit_code: Option<i32>,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// stdout and stderr interleaved in arrival order, capped (lossy UTF-8).
    pub output: String,
    /// Bytes cut from the middle of the output by the cap.
    pub truncated_bytes: u64,
    pub duration: Duration,
}

impl ShellOutput {
    /// The text the model receives as the tool's output.
    pub fn to_model_text(&self) -> String {
        let mut text = String::new();
        match (self.exit_code, self.signal) {
            (Some(code), _) => text.push_str(&format!("Exit code: {code}\n")),
            (None, Some(signal)) => text.push_str(&format!(
                "Exit code: none (killed by signal {signal}{})\n",
                signal_name(signal)
                    .map(|name| format!(", {name}"))
                    .unwrap_or_default()
            )),
            (None, None) => text.push_str("Exit code: none\n"),
        }
        if self.timed_out {
            text.push_str(&format!(
                "The command timed out: it and every process it started were killed after {} ms.\n",
                self.duration.as_millis()
            ));
        }
        if self.cancelled {
            text.push_str(
                "The command was cancelled: it and every process it started were killed.\n",
            );
        }
        text.push_str(&format!(
            "Wall time: {:.1} seconds\n",
            self.duration.as_secs_f64()
        ));
        if self.truncated_bytes > 0 {
            text.push_str(&format!(
                "Output ({} bytes cut from the middle; only the start and the end are shown):\n",
                self.truncated_bytes
            ));
        } else {
            text.push_str("Output:\n");
        }
        text.push_str(&self.output);
        text
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return None,
    })
}

/// Why a command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the command is empty: there is no program to run")]
    EmptyCommand,
    #[error("the working directory {} must be an absolute path", cwd.display())]
    CwdNotAbsolute { cwd: PathBuf },
    #[error("the sandbox workspace {} must be an absolute path", workspace.display())]
    WorkspaceNotAbsolute { workspace: PathBuf },
    #[error("the working directory {} does not exist", cwd.display())]
    CwdMissing { cwd: PathBuf },
    #[error("the working directory {} is not a directory", cwd.display())]
    CwdNotADirectory { cwd: PathBuf },
    #[error(
        "program `{program}` not found (searched PATH unless it contains a `/`; working directory {})",
        cwd.display()
    )]
    ProgramNotFound { program: String, cwd: PathBuf },
    #[error("permission denied running `{program}` in {}", cwd.display())]
    PermissionDenied { program: String, cwd: PathBuf },
    #[error("could not start `{program}` in {}: {source}", cwd.display())]
    Spawn {
        program: String,
        cwd: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot enforce the {mode} sandbox on this machine: {reason}; \
         the command was not run (baton never runs it unconfined)"
    )]
    SandboxUnavailable { mode: SandboxMode, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Runs `req` to completion, timeout or cancellation. The command, and every process it starts
/// in its process group, is killed on timeout, on cancel, and if this future is dropped.
pub async fn run_shell(
    req: ShellRequest,
    cancel: CancellationToken,
) -> Result<ShellOutput, ExecError> {
    let (program, args) = req.argv.split_first().ok_or(ExecError::EmptyCommand)?;
    check_cwd(&req.cwd)?;
    if !req.workspace.is_absolute() {
        return Err(ExecError::WorkspaceNotAbsolute {
            workspace: req.workspace.clone(),
        });
    }
    // The workspace, never the cwd: the cwd comes from the model's `workdir`, and making it
    // writable would let `"workdir": "/"` open the whole filesystem.
    let sandbox = sandbox::prepare(&req.sandbox, &req.workspace, &req.hidden_dirs)?;

    // One pipe for stdout and stderr keeps their interleaving exactly as the command wrote it.
    let io_error = |context: &str| {
        let context = context.to_owned();
        move |source| ExecError::Io { context, source }
    };
    let (reader, writer) = io::pipe().map_err(io_error("creating the output pipe"))?;
    let stderr_writer = writer
        .try_clone()
        .map_err(io_error("duplicating the output pipe"))?;

    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(&req.cwd)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr_writer)
        .kill_on_drop(true)
        .env_clear()
        .envs(req.env.iter().map(|(name, value)| (name, value)));
    for (name, value) in sandbox.env() {
        command.env(name, value);
    }
    let restrictions = sandbox.child_restrictions();
    let limits = ChildLimits::probe();
    // SAFETY: getpid cannot fail.
    let baton = unsafe { libc::getpid() };
    // SAFETY: the closure only makes async-signal-safe syscalls (setsid, unshare, mount, open,
    // write, prctl, capset, landlock, seccomp, close_range, fcntl) on data prepared before
    // fork; it does not allocate.
    unsafe {
        command.pre_exec(move || {
            // Killed with baton, so a resumed turn never runs beside it (see `spawner`).
            spawner::die_with_parent(baton)?;
            // A new session (and so a new process group whose id is the child's pid) lets us
            // kill everything the command starts with one killpg, and detaches it from any tty.
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            restrictions.apply_in_child()?;
            // Whatever baton inherited or opened without close-on-exec (fds 10 and 251 were
            // seen) must not reach the command: only stdin, stdout and stderr do.
            child::close_inherited_fds(limits)
        });
    }

    let started = Instant::now();
    // The spawner drops `command` after the fork: that closes the parent's copies of the
    // pipe's write end, so the pipe reaches end-of-file once the command's processes are gone.
    let mut child = spawner::spawn(command)
        .await
        .map_err(|source| spawn_error(source, program, &req))?;
    let group = ProcessGroupGuard {
        pgid: child.id().map(|pid| pid as libc::pid_t),
    };
    let mut pipe = pipe::Receiver::from_owned_fd(reader.into())
        .map_err(io_error("reading the command's output pipe"))?;

    let mut buffer = HeadTailBuffer::new(req.output_cap);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut eof = false;
    let mut timed_out = false;
    let mut cancelled = false;
    let mut deadline = pin!(tokio::time::sleep(req.timeout));
    let status = loop {
        tokio::select! {
            read = pipe.read(&mut chunk), if !eof => match read {
                Ok(0) => eof = true,
                Ok(n) => buffer.push(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!("reading the output of `{program}` failed: {error}");
                    eof = true;
                }
            },
            status = child.wait() => {
                break status.map_err(io_error("waiting for the command"))?;
            }
            () = &mut deadline, if !timed_out && !cancelled => {
                timed_out = true;
                group.kill();
            }
            () = cancel.cancelled(), if !timed_out && !cancelled => {
                cancelled = true;
                group.kill();
            }
        }
    };
    // Background jobs of the command would otherwise outlive it and keep the pipe open.
    group.kill();
    if !eof {
        let mut drain_deadline = pin!(tokio::time::sleep(DRAIN_AFTER_EXIT));
        loop {
            tokio::select! {
                read = pipe.read(&mut chunk) => match read {
                    Ok(0) => break,
                    Ok(n) => buffer.push(&chunk[..n]),
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                },
                () = &mut drain_deadline => break,
            }
        }
    }
    let duration = started.elapsed();
    drop(sandbox);

    Ok(ShellOutput {
        exit_code: status.code(),
        signal: status.signal(),
        timed_out,
        cancelled,
        output: buffer.render(),
        truncated_bytes: buffer.cut_bytes(),
        duration,
    })
}

fn check_cwd(cwd: &std::path::Path) -> Result<(), ExecError> {
    if !cwd.is_absolute() {
        return Err(ExecError::CwdNotAbsolute {
            cwd: cwd.to_path_buf(),
        });
    }
    match std::fs::metadata(cwd) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(ExecError::CwdNotADirectory {
            cwd: cwd.to_path_buf(),
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(ExecError::CwdMissing {
            cwd: cwd.to_path_buf(),
        }),
        Err(source) => Err(ExecError::Io {
            context: format!("checking the working directory {}", cwd.display()),
            source,
        }),
    }
}

fn spawn_error(source: io::Error, program: &str, req: &ShellRequest) -> ExecError {
    let program = program.to_owned();
    let cwd = req.cwd.clone();
    match source.kind() {
        io::ErrorKind::NotFound => ExecError::ProgramNotFound { program, cwd },
        io::ErrorKind::PermissionDenied => ExecError::PermissionDenied { program, cwd },
        _ => ExecError::Spawn {
            program,
            cwd,
            source,
        },
    }
}

/// Kills the command's whole process group with SIGKILL, also when the future running the
/// command is dropped half-way.
struct ProcessGroupGuard {
    pgid: Option<libc::pid_t>,
}

impl ProcessGroupGuard {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: plain syscall; ESRCH (group already gone) is fine to ignore.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_refusal_names_the_mode_and_the_reason() {
        let error = ExecError::SandboxUnavailable {
            mode: SandboxMode::WorkspaceWrite,
            reason: "the kernel has no Landlock support".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "cannot enforce the workspace-write sandbox on this machine: the kernel has no \
             Landlock support; the command was not run (baton never runs it unconfined)"
        );
    }

    #[test]
    fn model_text_for_a_timeout() {
        let output = ShellOutput {
            exit_code: None,
            signal: Some(libc::SIGKILL),
            timed_out: true,
            cancelled: false,
            output: "partial\n".to_owned(),
            truncated_bytes: 0,
            duration: Duration::from_millis(1500),
        };
        assert_eq!(
            output.to_model_text(),
            "Exit code: none (killed by signal 9, SIGKILL)\n\
             The command timed out: it and every process it started were killed after 1500 ms.\n\
             Wall time: 1.5 seconds\n\
             Output:\n\
             partial\n"
        );
    }
}
