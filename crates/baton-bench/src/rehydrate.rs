//! Section 2: rehydrating long transcripts (`read_rollout`) against the bare `serde_json`
//! parse of the same lines, each in a child process so its peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_protocol::ThreadId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Bench;
use crate::generate::{epoch, long_session, rollout_path, thread_id_at, write_transcript};
use crate::process::{peak_rss_kb, run_measured, status_kb};
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median, memory_kb};

const SECTION: &str = "rehydration";
/// The hidden subcommand a child runs: `__rehydrate MODE PATH ITERATIONS`.
pub const CHILD_COMMAND: &str = "__rehydrate";
const TRANSCRIPTS_VERSION: &str = "bench-transcripts v3";
const MB: usize = 1 << 20;
const RESUME_RUNS: usize = 3;

struct Case {
    label: &'static str,
    bytes: usize,
    compacted: bool,
    turn_contexts: bool,
    iterations: usize,
}

const CASES: [Case; 5] = [
    Case {
        label: "1 MB",
        bytes: MB,
        compacted: false,
        turn_contexts: true,
        iterations: 15,
    },
    Case {
        label: "10 MB",
        bytes: 10 * MB,
        compacted: false,
        turn_contexts: true,
        iterations: 5,
    },
    Case {
        label: "100 MB",
        bytes: 100 * MB,
        compacted: false,
        turn_contexts: true,
        iterations: 3,
    },
    Case {
        label: "100 MB ending in a compaction",
        bytes: 100 * MB,
        compacted: true,
        turn_contexts: true,
        iterations: 3,
    },
    // Settings then come from `session_meta`: the reader must still read only what follows
    // the compaction (plus a byte search for a `turn_context` that is not there).
    Case {
        label: "100 MB ending in a compaction, no turn_context",
        bytes: 100 * MB,
        compacted: true,
        turn_contexts: false,
        iterations: 3,
    },
];

#[derive(Debug, Serialize, Deserialize)]
struct ChildResult {
    median_ns: u64,
    hwm_kb: u64,
    items: usize,
}

#[derive(Clone, Copy)]
enum Mode {
    ReadRollout,
    /// The whole file read at once, then `parse_rollout`: `read_rollout` without its
    /// tail-first reading, to tell the two costs apart.
    ParseRollout,
    SerdeValue,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::ReadRollout => "read_rollout",
            Self::ParseRollout => "parse_rollout",
            Self::SerdeValue => "serde_value",
        }
    }

    fn parse(text: &str) -> Option<Mode> {
        match text {
            "read_rollout" => Some(Self::ReadRollout),
            "parse_rollout" => Some(Self::ParseRollout),
            "serde_value" => Some(Self::SerdeValue),
            _ => None,
        }
    }
}

/// The child: runs one mode `iterations` times and prints a [`ChildResult`] as JSON.
pub fn child_main(args: &[String]) -> anyhow::Result<()> {
    let [mode, path, iterations] = args else {
        bail!("usage: {CHILD_COMMAND} read_rollout|serde_value PATH ITERATIONS");
    };
    let mode = Mode::parse(mode).with_context(|| format!("unknown mode {mode}"))?;
    let path = Path::new(path);
    let iterations: usize = iterations.parse().context("ITERATIONS")?;
    let mut times = Vec::new();
    let mut items = 0;
    for _ in 0..iterations.max(1) {
        let (elapsed, count) = match mode {
            Mode::ReadRollout => {
                let started = Instant::now();
                let loaded = baton_store::read_rollout(path)?;
                let elapsed = started.elapsed();
                (elapsed, loaded.history.len())
            }
            Mode::ParseRollout => {
                let started = Instant::now();
                let bytes = fs_err::read(path)?;
                let loaded = baton_store::parse_rollout(path, &bytes)?;
                let elapsed = started.elapsed();
                (elapsed, loaded.history.len())
            }
            Mode::SerdeValue => {
                let started = Instant::now();
                let values = parse_values(path)?;
                let elapsed = started.elapsed();
                (elapsed, values.len())
            }
        };
        times.push(elapsed);
        items = count;
    }
    let result = ChildResult {
        median_ns: u64::try_from(median(&times).as_nanos()).unwrap_or(u64::MAX),
        hwm_kb: status_kb("self", "VmHWM").unwrap_or(0),
        items,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// The baseline: read the file and parse every line into a `serde_json::Value`, kept.
fn parse_values(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let bytes = fs_err::read(path)?;
    let mut values = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        values.push(serde_json::from_slice(line).context("a line that is not JSON")?);
    }
    Ok(values)
}

fn run_child(mode: Mode, path: &Path, iterations: usize) -> anyhow::Result<ChildResult> {
    let exe = std::env::current_exe().context("find the baton-bench executable")?;
    let measured = run_measured(Command::new(exe).args([
        CHILD_COMMAND,
        mode.name(),
        &path.to_string_lossy(),
        &iterations.to_string(),
    ]))?
    .ok("the rehydration child")?;
    serde_json::from_str(measured.stdout.trim())
        .with_context(|| format!("the child's answer: {}", measured.stdout))
}

fn case_spec(index: usize) -> anyhow::Result<(ThreadId, DateTime<Utc>, Rng)> {
    let mut rng = Rng::new(0x4E4D_0000 + index as u64);
    let started = epoch() + chrono::Duration::days(500 + index as i64);
    let id = thread_id_at(started, &mut rng)?;
    Ok((id, started, rng))
}

/// The cached transcripts, in a baton home (so they can also be resumed).
struct Transcripts {
    home: PathBuf,
    project: PathBuf,
    /// One per case, in order.
    files: Vec<(ThreadId, PathBuf)>,
}

fn ensure_transcripts(bench: &Bench) -> anyhow::Result<Transcripts> {
    let root = bench.target.join("bench-rehydrate");
    let home = root.join("home");
    let project = root.join("project");
    let version_file = root.join("VERSION");
    let version = format!("{TRANSCRIPTS_VERSION} project={}", project.display());
    let mut files = Vec::new();
    for index in 0..CASES.len() {
        let (id, started, _) = case_spec(index)?;
        files.push((id, rollout_path(&home.join("sessions"), started, id)));
    }
    if std::fs::read_to_string(&version_file).ok().as_deref() == Some(version.as_str()) {
        return Ok(Transcripts {
            home,
            project,
            files,
        });
    }
    if root.exists() {
        fs_err::remove_dir_all(&root)?;
    }
    fs_err::create_dir_all(&project)?;
    let started = Instant::now();
    for (index, case) in CASES.iter().enumerate() {
        let (id, at, mut rng) = case_spec(index)?;
        let bytes = long_session(
            id,
            at,
            &project,
            case.bytes,
            case.compacted,
            case.turn_contexts,
            &mut rng,
        )?;
        write_transcript(&files[index].1, &bytes)?;
    }
    eprintln!(
        "  generated the transcripts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs_err::write(&version_file, version)?;
    Ok(Transcripts {
        home,
        project,
        files,
    })
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Transcripts {
        home,
        project,
        files,
    } = ensure_transcripts(bench)?;
    for (case, (_, path)) in CASES.iter().zip(&files) {
        let size = fs_err::metadata(path)?.len();
        let ours = run_child(Mode::ReadRollout, path, case.iterations)?;
        let bare = run_child(Mode::SerdeValue, path, case.iterations)?;
        let whole = run_child(Mode::ParseRollout, path, case.iterations)?;
        let ours_time = Duration::from_nanos(ours.median_ns);
        let bare_time = Duration::from_nanos(bare.median_ns);
        let ratio = ours_time.as_secs_f64() / bare_time.as_secs_f64().max(1e-9);
        let label = format!(
            "{} ({:.1} MB, {} history items)",
            case.label,
            size as f64 / MB as f64,
            ours.items
        );
        report.info(
            SECTION,
            format!("{label}: `read_rollout`"),
            duration(ours_time),
        );
        report.info(
            SECTION,
            format!("{}: bare `serde_json` to `Value`", case.label),
            duration(bare_time),
        );
        report.info(
            SECTION,
            format!(
                "{}: breakdown, file read at once + `parse_rollout` (peak RSS)",
                case.label
            ),
            format!(
                "{} ({})",
                duration(Duration::from_nanos(whole.median_ns)),
                memory_kb(whole.hwm_kb)
            ),
        );
        report.add(
            SECTION,
            format!("{}: ratio `read_rollout` / `serde_json`", case.label),
            format!("{ratio:.2}×"),
            "≤ 1.5×",
            Verdict::of(ratio <= 1.5),
        );
        report.info(
            SECTION,
            format!("{}: peak RSS, `read_rollout` vs `serde_json`", case.label),
            format!("{} vs {}", memory_kb(ours.hwm_kb), memory_kb(bare.hwm_kb)),
        );
    }

    // The whole process on the 100 MB transcripts, without an index (as Codex's figure).
    bench.write_config(&home, None)?;
    for (case, (id, path)) in CASES.iter().zip(&files).skip(2) {
        // Each resume appends a turn (with a `turn_context`): cut it off again, so every run
        // (and the next benchmark run, which reuses the files) reads the shape it names.
        let generated_len = fs_err::metadata(path)?.len();
        let restore = || -> anyhow::Result<()> {
            fs_err::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(generated_len)?;
            Ok(())
        };
        let mut times = Vec::new();
        let mut first_requests = Vec::new();
        for _ in 0..RESUME_RUNS {
            for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
                let _ = std::fs::remove_file(home.join(name));
            }
            let measured = run_measured(bench.baton(&home, &project).args([
                "exec",
                "resume",
                &id.to_string(),
                "RECALL",
            ]))?
            .ok("baton exec resume")?;
            if let Some(at) = bench.server.first_request_after(measured.started) {
                first_requests.push(at - measured.started);
            }
            times.push(measured.elapsed);
            restore()?;
        }
        report.info(
            SECTION,
            format!(
                "`exec resume`, {}, no index, to its first model request (median)",
                case.label
            ),
            duration(median(&first_requests)),
        );
        report.info(
            SECTION,
            format!(
                "`exec resume`, {}, no index (whole process, median of {RESUME_RUNS})",
                case.label
            ),
            duration(median(&times)),
        );
        for name in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
            let _ = std::fs::remove_file(home.join(name));
        }
        report.info(
            SECTION,
            format!("max RSS of that `exec resume` ({})", case.label),
            memory_kb(peak_rss_kb(bench.baton(&home, &project).args([
                "exec",
                "resume",
                &id.to_string(),
                "RECALL",
            ]))?),
        );
        restore()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_parses_every_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lines.jsonl");
        std::fs::write(&path, "{\"a\":1}\n\n{\"b\":[2]}\n").expect("write");
        assert_eq!(parse_values(&path).expect("parse").len(), 2);
        std::fs::write(&path, "{\"a\":1}\nnot json\n").expect("write");
        assert!(parse_values(&path).is_err());
    }

    #[test]
    fn modes_round_trip_their_names() {
        for mode in [Mode::ReadRollout, Mode::ParseRollout, Mode::SerdeValue] {
            assert_eq!(Mode::parse(mode.name()).map(Mode::name), Some(mode.name()));
        }
        assert!(Mode::parse("other").is_none());
    }
}
