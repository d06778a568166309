//! Section 5: durable tasks. A task whose process died, among 100 000 sessions: the time from
//! `tasks/get` on a fresh `baton mcp-server` to the first model request of the resumed turn.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_protocol::{EventMsg, ResponseItem, RolloutItem, TaskEvent, TaskState};
use chrono::Utc;
use serde_json::{Value, json};

use crate::Bench;
use crate::generate::{
    Transcript, rollout_path, session_meta, thread_id_at, turn_context, write_transcript,
};
use crate::mcp::Server;
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median};

const SECTION: &str = "tasks";
const RUNS: usize = 10;
/// A guard against a hung server, never reached in a normal run.
const PATIENCE: Duration = Duration::from_secs(60);

/// The `_meta` of a 2026-07-28 request from a client that declares the tasks extension.
fn task_client_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "baton-bench", "version": env!("CARGO_PKG_VERSION")},
        "io.modelcontextprotocol/clientCapabilities": {
            "extensions": {"io.modelcontextprotocol/tasks": {}}
        }
    })
}

/// Writes a session whose turn ran for a task when its process died (the user message and the
/// task are on disk, nothing after): what a kill -9 leaves. Returns the task id and the file.
fn write_orphaned_task(home: &Path, cwd: &Path, seed: u64) -> anyhow::Result<(String, PathBuf)> {
    let mut rng = Rng::new(seed);
    let started = Utc::now();
    let id = thread_id_at(started, &mut rng)?;
    let task_id = format!(
        "{:032x}{:016x}{:016x}",
        id.as_uuid().as_u128(),
        rng.next_u64(),
        rng.next_u64()
    );
    let mut transcript = Transcript::new();
    transcript.push(
        started,
        &RolloutItem::SessionMeta(Box::new(session_meta(id, started, cwd))),
    )?;
    let mut created = TaskEvent::new(task_id.clone(), TaskState::Working);
    created.tool = Some("baton".to_owned());
    created.ttl_ms = Some(24 * 3600 * 1000);
    transcript.push(
        started,
        &RolloutItem::EventMsg(EventMsg::BatonTask(Box::new(created))),
    )?;
    transcript.push(started, &turn_context(cwd))?;
    transcript.push(
        started,
        &RolloutItem::ResponseItem(ResponseItem::user_message("the interrupted task")),
    )?;
    let path = rollout_path(&home.join("sessions"), started, id);
    write_transcript(&path, &transcript.bytes)?;
    Ok((task_id, path))
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let store = crate::lookup::ensure_store(bench, bench.sessions)?;
    bench.write_config(&store.home, None)?;
    let mut from_get = Vec::new();
    let mut from_spawn = Vec::new();
    let mut written = Vec::new();
    for run in 0..RUNS {
        let (task_id, path) =
            write_orphaned_task(&store.home, &store.project, 0x7A5C + run as u64)?;
        written.push(path);
        let mut server = Server::spawn(bench, &store.home, &[])?;
        server.send(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": {"_meta": task_client_meta()}
        }))?;
        server.next_response()?;
        let sent = Instant::now();
        server.send(&json!({
            "jsonrpc": "2.0", "id": 2, "method": "tasks/get",
            "params": {"taskId": task_id, "_meta": task_client_meta()}
        }))?;
        let (_, answer) = server.next_response()?;
        let status = answer["result"]["status"].as_str().unwrap_or_default();
        if status != "working" {
            bail!("tasks/get of the orphaned task answered {answer}");
        }
        let deadline = sent + PATIENCE;
        let requested = loop {
            if let Some(at) = bench.server.first_request_after(sent) {
                break at;
            }
            if Instant::now() > deadline {
                bail!("no model request within {PATIENCE:?} of tasks/get");
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        from_get.push(requested - sent);
        from_spawn.push(requested - server.spawned());
        // The turn ends at once (the scripted model answers); the server exits on EOF.
        server.close_and_wait()?;
    }
    // Keep the cached store as it was generated.
    for path in written {
        fs_err::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    }
    let p50 = median(&from_get);
    let worst = from_get.iter().copied().max().unwrap_or_default();
    report.add(
        SECTION,
        format!(
            "`tasks/get` on a fresh server → first model request of the resumed turn, among {} sessions (p50 / worst of {RUNS})",
            bench.sessions
        ),
        format!("{} / {}", duration(p50), duration(worst)),
        "< 100 ms",
        Verdict::of(p50 < Duration::from_millis(100)),
    );
    let spawn_p50 = median(&from_spawn);
    report.add(
        SECTION,
        "the same from the server's spawn (start, `server/discover`, `tasks/get`, resumption)",
        duration(spawn_p50),
        "—",
        Verdict::Info,
    );
    Ok(())
}
