//! Section 3: `baton mcp-server` start, idle memory, memory after 1 000 threads with a short
//! idle TTL, and exit after stdin closes; driven by raw JSON-RPC lines.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_protocol::ThreadId;
use baton_store::FileStore;
use serde_json::{Value, json};

use crate::Bench;
use crate::generate::{epoch, rollout_path, small_session, thread_id_at, write_transcript};
use crate::process::status_kb;
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median, memory_kb, percentile};

const SECTION: &str = "server";
const START_RUNS: usize = 30;
const THREADS: usize = 1_000;
/// Replies in flight at once while touching the threads.
const WINDOW: usize = 8;
const IDLE_TTL: &str = "200ms";
/// A guard against a hung server, never reached in a normal run.
const PATIENCE: Duration = Duration::from_secs(60);

/// A running `baton mcp-server` and its output lines.
pub(crate) struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    spawned: Instant,
}

impl Server {
    pub(crate) fn spawn(bench: &Bench, home: &Path, config: &[&str]) -> anyhow::Result<Server> {
        let args: Vec<&str> = config.iter().flat_map(|value| ["-c", *value]).collect();
        Self::spawn_with(bench, home, &args, "mcp-server.stderr")
    }

    /// `baton GLOBAL_ARGS… mcp-server`, its stderr in `stderr_name` under the scratch folder.
    pub(crate) fn spawn_with(
        bench: &Bench,
        home: &Path,
        global_args: &[&str],
        stderr_name: &str,
    ) -> anyhow::Result<Server> {
        let stderr = fs_err::File::create(bench.scratch.join(stderr_name))?;
        let mut command = bench.baton(home, home);
        command.args(global_args);
        command
            .arg("mcp-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.into_parts().0));
        let spawned = Instant::now();
        let mut child = command.spawn().context("start baton mcp-server")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let stdin = child.stdin.take();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Server {
            child,
            stdin,
            lines,
            spawned,
        })
    }

    /// When the process was started.
    pub(crate) fn spawned(&self) -> Instant {
        self.spawned
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub(crate) fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{message}").context("write to the server")?;
        stdin.flush().context("write to the server")
    }

    /// The next response (a message with an `id` and a `result` or `error`); notifications
    /// and other lines are skipped.
    pub(crate) fn next_response(&self) -> anyhow::Result<(u64, Value)> {
        loop {
            let line = match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    bail!("the server did not answer within {PATIENCE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the server closed its stdout"),
            };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = message.get("id").and_then(Value::as_u64);
            if let Some(id) = id
                && (message.get("result").is_some() || message.get("error").is_some())
            {
                return Ok((id, message));
            }
        }
    }

    /// `initialize`, answered; returns the time from spawn to the answer. Then sends the
    /// `initialized` notification.
    pub(crate) fn initialize(&mut self) -> anyhow::Result<Duration> {
        self.send(&json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "baton-bench", "version": env!("CARGO_PKG_VERSION")}
            }
        }))?;
        let (id, answer) = self.next_response()?;
        let elapsed = self.spawned.elapsed();
        if id != 0 || answer.get("result").is_none() {
            bail!("unexpected answer to initialize: {answer}");
        }
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(elapsed)
    }

    /// Closes stdin and returns the time until the process exited.
    pub(crate) fn close_and_wait(mut self) -> anyhow::Result<Duration> {
        let closed = Instant::now();
        drop(self.stdin.take());
        let deadline = closed + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().context("wait for the server")? {
                if !status.success() {
                    bail!("baton mcp-server exited with {status}");
                }
                return Ok(closed.elapsed());
            }
            if Instant::now() > deadline {
                bail!("baton mcp-server did not exit within {PATIENCE:?} of stdin closing");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only after a failure is the child still running here.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let home = bench.scratch.join("mcp-home");
    bench.write_config(&home, None)?;

    let mut starts = Vec::new();
    let mut exits = Vec::new();
    for _ in 0..START_RUNS {
        let mut server = Server::spawn(bench, &home, &[])?;
        starts.push(server.initialize()?);
        exits.push(server.close_and_wait()?);
    }
    let p50 = median(&starts);
    report.add(
        SECTION,
        format!("spawn → `initialize` answered, p50 of {START_RUNS}"),
        duration(p50),
        "≤ 20 ms",
        Verdict::of(p50 <= Duration::from_millis(20)),
    );
    report.info(
        SECTION,
        "spawn → `initialize` answered, p90",
        duration(percentile(&starts, 90.0)),
    );
    report.info(
        SECTION,
        format!("stdin closed → exit (idle), p50 of {START_RUNS}"),
        duration(median(&exits)),
    );

    let mut server = Server::spawn(bench, &home, &[])?;
    server.initialize()?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = status_kb(&server.pid(), "VmRSS").context("read the server's VmRSS")?;
    server.close_and_wait()?;
    report.add(
        SECTION,
        "idle RSS after `initialize`",
        memory_kb(idle),
        "≤ 15 MB",
        Verdict::of(idle <= 15 * 1024),
    );

    touch_threads(bench, report)
}

/// 1 000 tiny threads, each continued once over MCP with a 200 ms idle TTL.
fn touch_threads(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let home = bench.scratch.join("mcp-threads-home");
    bench.write_config(&home, None)?;
    let project = bench.scratch.join("mcp-project");
    fs_err::create_dir_all(&project)?;
    let ids = write_threads(&home, &project, THREADS)?;
    FileStore::open(&home)?.reindex()?;

    let ttl = format!("idle_thread_ttl=\"{IDLE_TTL}\"");
    let mut server = Server::spawn(bench, &home, &[&ttl])?;
    server.initialize()?;
    let started = Instant::now();
    let mut next = 0;
    let mut in_flight = 0;
    let mut failures = Vec::new();
    while next < ids.len() || in_flight > 0 {
        while in_flight < WINDOW && next < ids.len() {
            server.send(&json!({
                "jsonrpc": "2.0", "id": next as u64 + 1, "method": "tools/call",
                "params": {"name": "baton-reply", "arguments": {"threadId": ids[next].to_string(), "prompt": "hi"}}
            }))?;
            next += 1;
            in_flight += 1;
        }
        let (_, answer) = server.next_response()?;
        in_flight -= 1;
        let failed = answer.get("error").is_some()
            || answer.pointer("/result/isError").and_then(Value::as_bool) == Some(true);
        if failed && failures.len() < 3 {
            failures.push(answer.to_string());
        }
    }
    let took = started.elapsed();
    if !failures.is_empty() {
        bail!("baton-reply failed: {}", failures.join("; "));
    }
    let pid = server.pid();
    let after_touch = status_kb(&pid, "VmRSS").context("read the server's VmRSS")?;
    let peak = status_kb(&pid, "VmHWM").unwrap_or(0);
    std::thread::sleep(Duration::from_millis(1_000));
    let after_ttl = status_kb(&pid, "VmRSS").context("read the server's VmRSS")?;
    let exit = server.close_and_wait()?;
    report.info(
        SECTION,
        format!("{THREADS} `baton-reply` calls ({WINDOW} in flight), total"),
        format!(
            "{} ({:.0}/s)",
            duration(took),
            THREADS as f64 / took.as_secs_f64()
        ),
    );
    report.info(
        SECTION,
        format!("RSS right after {THREADS} threads touched (TTL {IDLE_TTL})"),
        memory_kb(after_touch),
    );
    report.info(
        SECTION,
        "RSS 1 s later (idle threads dropped)",
        memory_kb(after_ttl),
    );
    report.info(
        SECTION,
        "peak RSS during the 1 000 calls (VmHWM)",
        memory_kb(peak),
    );
    report.info(
        SECTION,
        "stdin closed → exit, after the 1 000 calls",
        duration(exit),
    );
    Ok(())
}

fn write_threads(home: &Path, project: &Path, count: usize) -> anyhow::Result<Vec<ThreadId>> {
    let mut rng = Rng::new(0x3C9);
    let sessions = home.join("sessions");
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let started = epoch() + chrono::Duration::minutes(index as i64 * 7);
        let id = thread_id_at(started, &mut rng)?;
        let bytes = small_session(id, started, project, &mut rng)?;
        write_transcript(&rollout_path(&sessions, started, id), &bytes)?;
        ids.push(id);
    }
    Ok(ids)
}
