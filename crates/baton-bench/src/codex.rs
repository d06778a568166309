//! Section 4: `codex exec resume` against `baton exec resume` on the same Codex transcript,
//! each timed to its first request at the scripted model server and to its exit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use baton_protocol::ResponseItem;
use serde_json::Value;

use crate::Bench;
use crate::generate::tool_output;
use crate::process::{Measured, run_measured};
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median};

const SECTION: &str = "codex";
const RUNS: usize = 5;
const BIG_RUNS: usize = 3;
const KEY_VAR: &str = "BATON_BENCH_CODEX_KEY";

/// `codex` on PATH, else one a helper installed under /tmp (`/tmp/*/bin/codex`,
/// `/tmp/*/node_modules/.bin/codex`).
fn find_codex() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("codex"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let entries = std::fs::read_dir("/tmp").ok()?;
        entries.flatten().find_map(|entry| {
            ["bin/codex", "node_modules/.bin/codex"]
                .iter()
                .map(|tail| entry.path().join(tail))
                .find(|candidate| candidate.is_file())
        })
    })
}

struct Fixture {
    dir: PathBuf,
    recorded_codex_home: String,
    multi_turn: String,
    compacted: String,
}

fn fixture(bench: &Bench) -> anyhow::Result<Fixture> {
    let dir = bench
        .repo
        .join("crates/baton-cli/tests/fixtures/codex-home");
    let facts: Value = serde_json::from_str(&fs_err::read_to_string(dir.join("fixtures.json"))?)?;
    let text = |pointer: &str| -> anyhow::Result<String> {
        facts
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("fixtures.json has no {pointer}"))
    };
    Ok(Fixture {
        recorded_codex_home: text("/recorded_codex_home")?,
        multi_turn: text("/sessions/multi_turn")?,
        compacted: text("/sessions/compacted")?,
        dir,
    })
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Some(codex) = find_codex() else {
        report.add(
            SECTION,
            "codex exec resume vs baton exec resume",
            "—",
            "faster than codex",
            Verdict::Skipped,
        );
        report.note("No `codex` binary on PATH or under /tmp: the Codex comparison was skipped.");
        return Ok(());
    };
    let version = Command::new(&codex)
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    report.note(format!("Codex: {version} ({})", codex.display()));
    let fixture = fixture(bench)?;
    let work = bench.scratch.join("codex");
    let project = work.join("project");
    fs_err::create_dir_all(&project)?;

    let small = Case {
        label: "Codex fixture `multi_turn` (3 turns, 50 KB)",
        id: fixture.multi_turn.clone(),
        big: None,
        runs: RUNS,
    };
    compare(bench, report, &codex, &fixture, &work, &project, &small)?;

    let big_file = work.join("big-compacted.jsonl");
    let source = session_file(&fixture.dir, &fixture.compacted)?;
    let size = write_big_codex_transcript(&source, &big_file, 100 << 20)?;
    let big = Case {
        label: "Codex transcript of 100 MB ending in a compaction",
        id: fixture.compacted.clone(),
        big: Some(big_file),
        runs: BIG_RUNS,
    };
    report.note(format!(
        "The 100 MB Codex transcript is the `compacted` fixture with {:.0} MB of Codex-shaped turns \
(function calls with large outputs, messages, events, renumbered `ordinal`s) inserted before its `compacted` line.",
        size as f64 / f64::from(1 << 20)
    ));
    compare(bench, report, &codex, &fixture, &work, &project, &big)
}

struct Case {
    label: &'static str,
    id: String,
    /// Replaces the session's file in the copied Codex home.
    big: Option<PathBuf>,
    runs: usize,
}

struct Timing {
    first_request: Vec<Duration>,
    whole: Vec<Duration>,
}

impl Timing {
    fn new() -> Self {
        Self {
            first_request: Vec::new(),
            whole: Vec::new(),
        }
    }

    fn add(&mut self, bench: &Bench, measured: &Measured) -> anyhow::Result<()> {
        let first = bench
            .server
            .first_request_after(measured.started)
            .context("no model request arrived")?;
        self.first_request.push(first - measured.started);
        self.whole.push(measured.elapsed);
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn compare(
    bench: &Bench,
    report: &mut Report,
    codex: &Path,
    fixture: &Fixture,
    work: &Path,
    project: &Path,
    case: &Case,
) -> anyhow::Result<()> {
    let mut codex_timing = Timing::new();
    let mut baton_import = Timing::new();
    let mut baton_again = Timing::new();
    for run in 0..case.runs {
        // Fresh copies each run: both tools append to what they resume.
        let codex_home = work.join(format!("codex-home-{run}"));
        copy_codex_home(fixture, &codex_home, case, &bench.server.inner.base_url())?;
        let measured = run_measured(
            Command::new(codex)
                .args([
                    "exec",
                    "--skip-git-repo-check",
                    "resume",
                    &case.id,
                    "RECALL",
                ])
                .env("CODEX_HOME", &codex_home)
                .env(KEY_VAR, "dummy-key-not-a-secret")
                .env_remove("OPENAI_BASE_URL")
                .env_remove("RUST_LOG")
                .current_dir(project),
        )?
        .ok("codex exec resume")?;
        codex_timing.add(bench, &measured)?;

        let codex_home = work.join(format!("codex-home-for-baton-{run}"));
        copy_codex_home(fixture, &codex_home, case, &bench.server.inner.base_url())?;
        let baton_home = work.join(format!("baton-home-{run}"));
        bench.write_config(&baton_home, Some(&codex_home))?;
        let resume = || -> anyhow::Result<Measured> {
            let measured = run_measured(
                bench
                    .baton(&baton_home, project)
                    .env("CODEX_HOME", &codex_home)
                    .args(["exec", "resume", &case.id, "RECALL", "--cd"])
                    .arg(project),
            )?
            .ok("baton exec resume")?;
            if !measured.stdout.starts_with("recall:") {
                bail!("unexpected answer from baton: {}", measured.stdout);
            }
            Ok(measured)
        };
        baton_import.add(bench, &resume()?)?;
        baton_again.add(bench, &resume()?)?;
        let _ = fs_err::remove_dir_all(&baton_home);
    }
    let codex_first = median(&codex_timing.first_request);
    let baton_first = median(&baton_import.first_request);
    let runs = case.runs;
    report.info(
        SECTION,
        format!(
            "{}: `codex exec resume` to first request (median of {runs})",
            case.label
        ),
        duration(codex_first),
    );
    report.add(
        SECTION,
        format!(
            "{}: `baton exec resume` (first, imports it) to first request",
            case.label
        ),
        duration(baton_first),
        "faster than codex",
        Verdict::of(baton_first < codex_first),
    );
    report.info(
        SECTION,
        format!("{}: ratio codex / baton, to first request", case.label),
        format!(
            "{:.1}×",
            codex_first.as_secs_f64() / baton_first.as_secs_f64().max(1e-9)
        ),
    );
    report.info(
        SECTION,
        format!(
            "{}: `baton exec resume` again (already in its store) to first request",
            case.label
        ),
        duration(median(&baton_again.first_request)),
    );
    let codex_whole = median(&codex_timing.whole);
    let baton_whole = median(&baton_import.whole);
    report.add(
        SECTION,
        format!("{}: whole process, codex vs baton (first)", case.label),
        format!("{} vs {}", duration(codex_whole), duration(baton_whole)),
        "faster than codex",
        Verdict::of(baton_whole < codex_whole),
    );
    Ok(())
}

fn session_file(dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let mut found = None;
    visit_files(&dir.join("sessions"), &mut |path| {
        if path.to_string_lossy().ends_with(&format!("-{id}.jsonl")) {
            found = Some(path.to_path_buf());
        }
    })?;
    found.with_context(|| format!("no fixture transcript for {id}"))
}

fn visit_files(dir: &Path, visit: &mut dyn FnMut(&Path)) -> anyhow::Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            visit_files(&path, visit)?;
        } else {
            visit(&path);
        }
    }
    Ok(())
}

/// Copies the fixture's `sessions/` and `state_5.sqlite` (its paths rewritten to the copy,
/// so Codex finds the sessions through its index), and writes a config pointing Codex at the
/// scripted server.
fn copy_codex_home(
    fixture: &Fixture,
    codex_home: &Path,
    case: &Case,
    base_url: &str,
) -> anyhow::Result<()> {
    if codex_home.exists() {
        fs_err::remove_dir_all(codex_home)?;
    }
    let sessions = fixture.dir.join("sessions");
    visit_files(&sessions, &mut |path| {
        if let Ok(relative) = path.strip_prefix(&fixture.dir) {
            let to = codex_home.join(relative);
            if let Some(parent) = to.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::fs::copy(path, &to);
        }
    })?;
    if let Some(big) = &case.big {
        let from_fixture = session_file(&fixture.dir, &case.id)?;
        let relative = from_fixture.strip_prefix(&fixture.dir)?;
        fs_err::copy(big, codex_home.join(relative))?;
    }
    let state = codex_home.join("state_5.sqlite");
    fs_err::copy(fixture.dir.join("state_5.sqlite"), &state)?;
    let connection = rusqlite::Connection::open(&state)?;
    connection.execute(
        "UPDATE threads SET rollout_path = replace(rollout_path, ?1, ?2)",
        [
            fixture.recorded_codex_home.as_str(),
            &codex_home.to_string_lossy(),
        ],
    )?;
    drop(connection);
    fs_err::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"scripted-model\"\nmodel_provider = \"scripted\"\napproval_policy = \"never\"\n\
sandbox_mode = \"danger-full-access\"\n\n[model_providers.scripted]\nname = \"scripted\"\n\
base_url = \"{}\"\nwire_api = \"responses\"\nenv_key = \"{KEY_VAR}\"\n",
            base_url
        ),
    )?;
    Ok(())
}

/// Inserts Codex-shaped turns before the `compacted` line of `source` until the file is
/// about `target` bytes, renumbering `ordinal`s. Lines are handled as text, so every line
/// keeps Codex's own key order. Returns the size written.
fn write_big_codex_transcript(source: &Path, out: &Path, target: usize) -> anyhow::Result<usize> {
    let text = fs_err::read_to_string(source)?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let kind = |line: &str| -> Option<String> {
        serde_json::from_str::<Value>(line)
            .ok()?
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let compacted_at = lines
        .iter()
        .position(|line| kind(line).as_deref() == Some("compacted"))
        .context("the compacted fixture has no compacted line")?;
    // Templates: the fixture's own response items from before the compaction.
    let templates: Vec<&str> = lines[1..compacted_at]
        .iter()
        .copied()
        .filter(|line| kind(line).as_deref() == Some("response_item"))
        .collect();
    let stamp = serde_json::from_str::<Value>(lines[compacted_at])?
        .get("timestamp")
        .cloned()
        .unwrap_or(Value::Null);
    let mut rng = Rng::new(0xC0DE);
    let mut out_lines: Vec<String> = lines[..compacted_at]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    let mut size: usize = text.len();
    let mut call = 0u64;
    while size < target {
        call += 1;
        let call_id = format!("call_bench_{call}");
        let output_len = [2_000, 8_000, 32_000][rng.below(3)];
        let items = [
            ResponseItem::FunctionCall {
                name: "exec_command".to_owned(),
                arguments: serde_json::json!({"cmd": "cargo test"}).to_string(),
                call_id: call_id.clone(),
            },
            ResponseItem::FunctionCallOutput {
                call_id,
                output: tool_output(&mut rng, output_len),
            },
        ];
        for item in &items {
            let line = format!(
                "{{\"timestamp\":{stamp},\"ordinal\":0,\"type\":\"response_item\",\"payload\":{}}}",
                serde_json::to_string(item)?
            );
            size += line.len() + 1;
            out_lines.push(line);
        }
        for template in &templates {
            size += template.len() + 1;
            out_lines.push((*template).to_owned());
        }
    }
    out_lines.extend(lines[compacted_at..].iter().map(|l| (*l).to_owned()));
    let mut bytes = Vec::with_capacity(size + 1024);
    for (ordinal, line) in out_lines.iter().enumerate() {
        bytes.extend_from_slice(renumber(line, ordinal).as_bytes());
        bytes.push(b'\n');
    }
    fs_err::write(out, &bytes)?;
    Ok(bytes.len())
}

/// `line` with its top-level `"ordinal":N` set to `ordinal` (Codex writes it right after
/// the timestamp); lines without one are unchanged.
fn renumber(line: &str, ordinal: usize) -> String {
    const KEY: &str = ",\"ordinal\":";
    let head_len = (0..=line.len().min(80))
        .rev()
        .find(|&end| line.is_char_boundary(end))
        .unwrap_or(0);
    let Some(start) = line[..head_len].find(KEY) else {
        return line.to_owned();
    };
    let digits_start = start + KEY.len();
    let digits = line[digits_start..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    format!(
        "{}{ordinal}{}",
        &line[..digits_start],
        &line[digits_start + digits..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbers_the_top_level_ordinal_only() {
        let line = r#"{"timestamp":"t","ordinal":12,"type":"x","payload":{"ordinal":3}}"#;
        assert_eq!(
            renumber(line, 7),
            r#"{"timestamp":"t","ordinal":7,"type":"x","payload":{"ordinal":3}}"#
        );
        let plain = r#"{"timestamp":"t","type":"x"}"#;
        assert_eq!(renumber(plain, 7), plain);
    }

    #[test]
    fn big_transcript_keeps_the_compaction_last_and_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../baton-cli/tests/fixtures/codex-home");
        let facts: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join("fixtures.json")).expect("fixtures.json"),
        )
        .expect("json");
        let id = facts["sessions"]["compacted"].as_str().expect("id");
        let source = session_file(&fixtures, id).expect("fixture file");
        let out = dir.path().join(format!("rollout-x-{id}.jsonl"));
        let size = write_big_codex_transcript(&source, &out, 3 << 20).expect("write");
        assert!(size >= 3 << 20);
        let big = baton_store::read_rollout(&out).expect("read big");
        let small = baton_store::read_rollout(&source).expect("read fixture");
        assert_eq!(
            big.history, small.history,
            "the compaction still replaces everything before it"
        );
        let text = std::fs::read_to_string(&out).expect("read");
        for (index, line) in text.lines().enumerate() {
            let value: Value = serde_json::from_str(line).expect("each line is JSON");
            assert_eq!(value["ordinal"].as_u64(), Some(index as u64));
        }
    }
}
