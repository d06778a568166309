//! Generated transcripts, written directly in the layout and byte format of
//! `FileStore::create_thread` + `RolloutWriter::append`, so a store of 100 000 sessions takes
//! seconds instead of the minutes that going through the store (fsync per file) would.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use baton_protocol::{
    ApprovalPolicy, BaseInstructions, Compacted, EventMsg, ResponseItem, RolloutItem, SandboxMode,
    SandboxPolicy, SessionMeta, SessionSource, ThreadId, TurnContext, format_timestamp,
};
use chrono::{DateTime, Datelike, Duration, Local, TimeZone, Utc};
use serde::Serialize;

use crate::rng::Rng;

/// What baton writes as `base_instructions` by default (baton-core's built-in text).
pub const BASE_INSTRUCTIONS: &str = "You are baton, a coding agent. You work in the user's \
project through two tools: `shell` runs commands, `apply_patch` edits files. Inspect before you \
change, keep changes small and focused, run the project's checks when you can, and finish with \
a short answer that says what you did and what remains.";

pub const MODEL: &str = "scripted-model";
pub const PROVIDER: &str = "scripted";

/// The on-disk shape of a line, as `RolloutWriter` serialises it: `timestamp`, then the
/// adjacently tagged item (`type`, `payload`).
#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    #[serde(flatten)]
    item: &'a RolloutItem,
}

/// A transcript being built in memory.
pub struct Transcript {
    pub bytes: Vec<u8>,
}

impl Transcript {
    pub fn new() -> Self {
        Self { bytes: Vec::new() }
    }

    pub fn push(&mut self, at: DateTime<Utc>, item: &RolloutItem) -> anyhow::Result<()> {
        let line = Line {
            timestamp: format_timestamp(at),
            item,
        };
        serde_json::to_writer(&mut self.bytes, &line).context("serialise a transcript line")?;
        self.bytes.push(b'\n');
        Ok(())
    }
}

/// A UUID v7 whose timestamp is `at`, its random bits from `rng`.
pub fn thread_id_at(at: DateTime<Utc>, rng: &mut Rng) -> anyhow::Result<ThreadId> {
    let millis = u64::try_from(at.timestamp_millis()).context("a time before 1970")?;
    let mut random = [0u8; 10];
    rng.fill(&mut random);
    let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    Ok(ThreadId::parse(&uuid.to_string())?)
}

/// `sessions/YYYY/MM/DD/rollout-YYYY-MM-DDThh-mm-ss-<id>.jsonl` in local time, as
/// `FileStore::create_thread` names it.
pub fn rollout_path(sessions: &Path, started: DateTime<Utc>, id: ThreadId) -> PathBuf {
    let local = started.with_timezone(&Local);
    day_folder(sessions, local.date_naive()).join(format!(
        "rollout-{}-{id}.jsonl",
        local.format("%Y-%m-%dT%H-%M-%S")
    ))
}

pub fn day_folder(sessions: &Path, day: chrono::NaiveDate) -> PathBuf {
    sessions
        .join(format!("{:04}", day.year()))
        .join(format!("{:02}", day.month()))
        .join(format!("{:02}", day.day()))
}

/// Writes `bytes` as a new transcript (folders 0700, file 0600, as the store does; no fsync:
/// generated data).
pub fn write_transcript(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("create {}", folder.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))
}

pub fn session_meta(id: ThreadId, started: DateTime<Utc>, cwd: &Path) -> SessionMeta {
    SessionMeta {
        id,
        timestamp: format_timestamp(started),
        cwd: cwd.to_path_buf(),
        originator: "baton".to_owned(),
        cli_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: SessionSource::Exec,
        model_provider: Some(PROVIDER.to_owned()),
        model: Some(MODEL.to_owned()),
        base_instructions: Some(BaseInstructions {
            text: BASE_INSTRUCTIONS.to_owned(),
        }),
        developer_instructions: None,
        git: None,
        imported_from: None,
        forked_from: None,
        owner: None,
    }
}

pub fn turn_context(cwd: &Path) -> RolloutItem {
    RolloutItem::TurnContext(TurnContext {
        cwd: cwd.to_path_buf(),
        model: MODEL.to_owned(),
        model_provider: Some(PROVIDER.to_owned()),
        approval_policy: ApprovalPolicy::OnRequest,
        sandbox_policy: SandboxPolicy {
            mode: SandboxMode::WorkspaceWrite,
            writable_roots: Vec::new(),
            network_access: false,
            allow_unix_sockets: Vec::new(),
        },
        effort: None,
    })
}

const PROMPTS: [&str; 8] = [
    "fix the failing test in the parser module",
    "why does `cargo build` warn about an unused import?",
    "add a --verbose flag to the CLI and document it",
    "rename `Config::load_all` to `Config::load` everywhere",
    "shell: cargo test -p store",
    "explain what the retry loop in client.rs does",
    "update the README with the new install steps",
    "find where the timeout is configured and raise it to 30 s",
];

const SHELL_COMMANDS: [&str; 6] = [
    "cargo test -p store",
    "rg -n \"load_all\" src",
    "git status --short",
    "cargo build 2>&1 | tail -20",
    "ls -la crates",
    "sed -n '1,80p' src/client.rs",
];

/// One small session like `baton exec "…"` leaves: one turn with a shell call (about 2.5 KB).
pub fn small_session(
    id: ThreadId,
    started: DateTime<Utc>,
    cwd: &Path,
    rng: &mut Rng,
) -> anyhow::Result<Vec<u8>> {
    let mut transcript = Transcript::new();
    let mut at = started;
    transcript.push(
        at,
        &RolloutItem::SessionMeta(Box::new(session_meta(id, started, cwd))),
    )?;
    at += Duration::milliseconds(9);
    let prompt = format!(
        "{} (#{})",
        PROMPTS[rng.below(PROMPTS.len())],
        rng.below(10_000)
    );
    let command = SHELL_COMMANDS[rng.below(SHELL_COMMANDS.len())];
    let output_len = 300 + rng.below(900);
    let output = tool_output(rng, output_len);
    let call_id = format!("call_{:016x}_0", rng.next_u64());
    let answer = format!(
        "I ran `{command}`. {} The change is in place and the tests pass.",
        output
            .chars()
            .take(160)
            .collect::<String>()
            .replace('\n', " ")
    );
    let mut items = turn_items(&prompt, &call_id, command, &output, &answer, rng);
    items.insert(0, turn_context(cwd));
    for item in &items {
        transcript.push(at, item)?;
        at += Duration::milliseconds(rng.range(5, 900) as i64);
    }
    Ok(transcript.bytes)
}

/// The items of one turn with a single shell call, in the order baton writes them.
fn turn_items(
    prompt: &str,
    call_id: &str,
    command: &str,
    output: &str,
    answer: &str,
    rng: &mut Rng,
) -> Vec<RolloutItem> {
    let input_tokens = 400 + rng.below(4000) as u64;
    vec![
        RolloutItem::ResponseItem(ResponseItem::user_message(prompt)),
        RolloutItem::EventMsg(EventMsg::UserMessage {
            message: prompt.to_owned(),
        }),
        token_count(input_tokens, 12),
        RolloutItem::ResponseItem(ResponseItem::FunctionCall {
            name: "shell".to_owned(),
            arguments: serde_json::json!({"command": ["bash", "-lc", command]}).to_string(),
            call_id: call_id.to_owned(),
        }),
        RolloutItem::EventMsg(EventMsg::ExecCommandEnd {
            call_id: call_id.to_owned(),
            command: vec!["bash".into(), "-lc".into(), command.to_owned()],
            exit_code: 0,
            duration_ms: rng.range(20, 4000) as u64,
        }),
        RolloutItem::ResponseItem(ResponseItem::FunctionCallOutput {
            call_id: call_id.to_owned(),
            output: format!("Exit code: 0\nWall time: 0.4 seconds\nOutput:\n{output}"),
        }),
        token_count(input_tokens + output.len() as u64 / 4, 60),
        RolloutItem::ResponseItem(ResponseItem::assistant_message(answer)),
        RolloutItem::EventMsg(EventMsg::AgentMessage {
            message: answer.to_owned(),
        }),
    ]
}

fn token_count(input_tokens: u64, output_tokens: u64) -> RolloutItem {
    RolloutItem::EventMsg(EventMsg::TokenCount {
        input_tokens,
        cached_input_tokens: 0,
        output_tokens,
        total_tokens: input_tokens + output_tokens,
    })
}

/// Command output of about `len` bytes: compiler and test lines with quotes, tabs, paths
/// and some non-ASCII, so JSON escaping costs what it costs on real transcripts.
pub fn tool_output(rng: &mut Rng, len: usize) -> String {
    const LINES: [&str; 10] = [
        "   Compiling baton-store v0.1.0 (/work/project/crates/baton-store)",
        "warning: unused variable: `index`\n  --> crates/baton-store/src/find.rs:42:9\n   |\n42 |     let index = 0;\n   |         ^^^^^ help: if this is intentional, prefix it with an underscore: `_index`",
        "test reader::tests::torn_last_line_is_ignored ... ok",
        "test store::tests::locate_falls_back_to_the_day_folder ... ok",
        "{\"level\":\"info\",\"msg\":\"request done\",\"status\":200,\"path\":\"/v1/responses\"}",
        "src/client.rs:118:\tlet timeout = Duration::from_secs(config.timeout_secs);",
        "    Finished `test` profile [unoptimized + debuginfo] target(s) in 4.21s",
        "error[E0308]: mismatched types — expected `u64`, found `i64` ✗",
        "drwx------  5 user user  4096 Nov 25 16:40 baton-store",
        "Résumé: 14 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.31s",
    ];
    let mut text = String::with_capacity(len + 200);
    while text.len() < len {
        text.push_str(LINES[rng.below(LINES.len())]);
        text.push('\n');
    }
    text
}

/// A long session of about `target_bytes`: many turns with reasoning, several shell calls
/// with outputs from 500 B to 64 KB, messages and events. With `compact_at_end`, a
/// `compacted` line (20 items of replacement history) and two short turns end the file.
/// Without `turn_contexts`, no `turn_context` line is written at all (as in files from
/// tools that keep the settings in `session_meta` only).
pub fn long_session(
    id: ThreadId,
    started: DateTime<Utc>,
    cwd: &Path,
    target_bytes: usize,
    compact_at_end: bool,
    turn_contexts: bool,
    rng: &mut Rng,
) -> anyhow::Result<Vec<u8>> {
    const OUTPUT_SIZES: [usize; 6] = [500, 2_000, 4_000, 8_000, 16_000, 64_000];
    let mut transcript = Transcript::new();
    transcript.bytes.reserve(target_bytes + (1 << 20));
    let mut at = started;
    transcript.push(
        at,
        &RolloutItem::SessionMeta(Box::new(session_meta(id, started, cwd))),
    )?;
    let mut turn = 0usize;
    let body_bytes = if compact_at_end {
        target_bytes.saturating_sub(40_000)
    } else {
        target_bytes
    };
    let mut prompts = Vec::new();
    while transcript.bytes.len() < body_bytes {
        turn += 1;
        at += Duration::seconds(rng.range(20, 600) as i64);
        let prompt = format!("{} (turn {turn})", PROMPTS[rng.below(PROMPTS.len())]);
        if turn_contexts {
            transcript.push(at, &turn_context(cwd))?;
        }
        transcript.push(
            at,
            &RolloutItem::ResponseItem(ResponseItem::user_message(&prompt)),
        )?;
        transcript.push(
            at,
            &RolloutItem::EventMsg(EventMsg::UserMessage {
                message: prompt.clone(),
            }),
        )?;
        prompts.push(prompt);
        for call in 0..1 + rng.below(3) {
            at += Duration::milliseconds(rng.range(300, 9000) as i64);
            transcript.push(at, &reasoning(rng))?;
            let command = SHELL_COMMANDS[rng.below(SHELL_COMMANDS.len())];
            let call_id = format!("call_{:016x}_{call}", rng.next_u64());
            let output_len = OUTPUT_SIZES[rng.below(OUTPUT_SIZES.len())];
            let output = tool_output(rng, output_len);
            let items = turn_items("", &call_id, command, &output, "", rng);
            // Only the call, its end event and its output (items 3..6) of a turn's items.
            for item in &items[3..6] {
                transcript.push(at, item)?;
            }
        }
        let answer = tool_output(rng, 600);
        transcript.push(
            at,
            &RolloutItem::ResponseItem(ResponseItem::assistant_message(&answer)),
        )?;
        transcript.push(
            at,
            &RolloutItem::EventMsg(EventMsg::AgentMessage { message: answer }),
        )?;
        transcript.push(at, &token_count(20_000 + turn as u64 * 900, 700))?;
    }
    if compact_at_end {
        let summary = format!(
            "Summary of the work so far: {}",
            prompts
                .iter()
                .rev()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let mut replacement: Vec<ResponseItem> = prompts
            .iter()
            .rev()
            .take(19)
            .rev()
            .map(ResponseItem::user_message)
            .collect();
        replacement.push(ResponseItem::user_message(&summary));
        at += Duration::seconds(5);
        transcript.push(
            at,
            &RolloutItem::Compacted(Compacted {
                message: summary,
                replacement_history: Some(replacement),
            }),
        )?;
        for extra in 0..2 {
            at += Duration::seconds(30);
            let prompt = format!("after compaction {extra}");
            let call_id = format!("call_{:016x}_0", rng.next_u64());
            let output = tool_output(rng, 2_000);
            if turn_contexts {
                transcript.push(at, &turn_context(cwd))?;
            }
            for item in turn_items(
                &prompt,
                &call_id,
                "git status --short",
                &output,
                "done",
                rng,
            ) {
                transcript.push(at, &item)?;
            }
        }
    }
    Ok(transcript.bytes)
}

fn reasoning(rng: &mut Rng) -> RolloutItem {
    // Encrypted reasoning is an opaque base64 blob of a few KB.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let blob: String = (0..1_500 + rng.below(2_000))
        .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())]))
        .collect();
    RolloutItem::ResponseItem(ResponseItem::Reasoning {
        id: Some(format!("rs_{:016x}", rng.next_u64())),
        summary: vec![serde_json::json!({
            "type": "summary_text",
            "text": "**Checking the build**\n\nLooking at the failing test output first."
        })],
        content: None,
        encrypted_content: Some(blob),
    })
}

/// A fixed instant, so generated stores are the same on every run.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0)
        .single()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::{FileStore, LookupMethod, read_rollout, summarize_rollout};

    #[test]
    fn session_meta_line_is_byte_for_byte_what_the_store_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileStore::open(&dir.path().join("home")).expect("store");
        let mut rng = Rng::new(1);
        let started = epoch();
        let id = thread_id_at(started, &mut rng).expect("id");
        let meta = session_meta(id, started, dir.path());
        let writer = store.create_thread(&meta).expect("create");
        let written = std::fs::read_to_string(writer.path()).expect("read");
        let mut generated = Transcript::new();
        generated
            .push(started, &RolloutItem::SessionMeta(Box::new(meta)))
            .expect("push");
        let generated = String::from_utf8(generated.bytes).expect("utf8");
        // The store stamps the line with the current time; everything after it must match.
        let after_stamp = |line: &str| {
            line.split_once(",\"type\"")
                .map(|(_, rest)| rest.to_owned())
        };
        assert_eq!(after_stamp(&written), after_stamp(&generated));
        assert_eq!(
            writer.path(),
            rollout_path(&store.sessions_dir(), started, id),
            "file name and day folder"
        );
    }

    #[test]
    fn small_session_is_found_by_its_day_folder_and_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileStore::open(&dir.path().join("home")).expect("store");
        let mut rng = Rng::new(7);
        let started = epoch() + Duration::days(40);
        let id = thread_id_at(started, &mut rng).expect("id");
        assert_eq!(
            id.created_at().map(|t| t.timestamp_millis()),
            Some(started.timestamp_millis())
        );
        let path = rollout_path(&store.sessions_dir(), started, id);
        let bytes = small_session(id, started, dir.path(), &mut rng).expect("session");
        write_transcript(&path, &bytes).expect("write");

        let located = store.locate(id).expect("locate");
        assert_eq!(located.via, LookupMethod::DayFolder);
        let loaded = read_rollout(&path).expect("read");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.history.len(), 4, "user, call, output, answer");
        assert!(loaded.last_turn_context.is_some());
        let summary = summarize_rollout(&path).expect("summary");
        assert_eq!(summary.turns, 1);
    }

    #[test]
    fn long_session_reaches_its_size_and_compaction_replaces_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut rng = Rng::new(3);
        let started = epoch();
        let id = thread_id_at(started, &mut rng).expect("id");
        for (compact, turn_contexts) in [(false, true), (true, true), (true, false)] {
            let bytes = long_session(
                id,
                started,
                dir.path(),
                2_000_000,
                compact,
                turn_contexts,
                &mut rng,
            )
            .expect("session");
            assert!(bytes.len() >= 1_950_000, "{}", bytes.len());
            let path = dir
                .path()
                .join(format!("rollout-x-{id}-{compact}-{turn_contexts}.jsonl"));
            write_transcript(&path, &bytes).expect("write");
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(text.contains("\"turn_context\""), turn_contexts);
            let loaded = read_rollout(&path).expect("read");
            assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
            assert_eq!(loaded.last_turn_context.is_some(), turn_contexts);
            if compact {
                // 20 replacement items, then two turns of 4 items each.
                assert_eq!(loaded.history.len(), 28);
            } else {
                assert!(loaded.history.len() > 100);
            }
        }
    }
}
