//! Every command is forked from one thread that lives as long as baton, so that it can die
//! with baton. A child's parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that
//! forked it ends, not the process, and tokio's threads come and go (an idle blocking thread
//! ends after a while; `block_in_place` hands a worker's thread to the blocking pool): forked
//! from one of them, a command could be killed while baton still runs it. Forked from this
//! thread, it is killed when baton dies (kill -9, OOM) and only then, so a turn that another
//! baton resumes never runs beside the command it recorded as aborted.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::sync::oneshot;

struct Job {
    command: tokio::process::Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<tokio::process::Child>>,
}

/// Spawns `command` on the spawner thread. The command is dropped there right after the fork,
/// which closes the parent's copies of its pipes. Must be called inside a tokio runtime.
pub(crate) async fn spawn(command: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    jobs()?.send(job).map_err(|_| spawner_gone())?;
    answer.await.map_err(|_| spawner_gone())?
}

fn jobs() -> io::Result<&'static mpsc::Sender<Job>> {
    static JOBS: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    JOBS.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("baton-spawner".into())
            .spawn(move || {
                for Job {
                    mut command,
                    runtime,
                    reply,
                } in receiver
                {
                    // tokio's child reaping needs its runtime's context to register the child.
                    let _context = runtime.enter();
                    let child = command.spawn();
                    drop(command);
                    let _ = reply.send(child);
                }
            })
            .map(|_| sender)
            .map_err(|error| error.to_string())
    })
    .as_ref()
    .map_err(|error| io::Error::other(format!("cannot start the command spawner thread: {error}")))
}

fn spawner_gone() -> io::Error {
    io::Error::other("the command spawner thread stopped")
}

/// In the forked child, before anything else: SIGKILL when baton (the spawner thread) ends,
/// and end now if it already has (the signal is only armed for a parent still alive).
/// Async-signal-safe.
pub(crate) fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(128 + libc::SIGKILL);
        }
    }
    Ok(())
}
