//! `baton-bench stores`: the files store and PostgreSQL side by side in one run (issue 16):
//! finding one session among 100 000, `exec resume` as a whole process, text search,
//! rehydrating a 100 MB session that ends in a compaction, and the latency of one committed
//! line. PostgreSQL is a private cluster (baton-test-support's `PgCluster`) started with
//! `fsync=on`, so a commit pays for the disk as the files store's `sync` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baton_protocol::{ResponseItem, RolloutItem, ThreadId};
use baton_store::{FileStore, ListQuery, Store, summarize_bytes};
use baton_store_pg::PgStore;
use baton_test_support::PgCluster;
use chrono::{DateTime, Utc};

use crate::Bench;
use crate::generate::{epoch, long_session, rollout_path, session_meta, thread_id_at};
use crate::lookup::{ensure_store, sample, session_spec};
use crate::process::run_measured;
use crate::report::{Report, Verdict};
use crate::rng::Rng;
use crate::stats::{duration, median, percentile};

const SECTION: &str = "stores";
const RESUME_RUNS: usize = 5;
/// `exec resume` is a few milliseconds either way: more runs for a steady ratio.
const EXEC_RESUME_RUNS: usize = 15;
const APPEND_LINES: usize = 500;
const LONG_BYTES: usize = 100 * 1024 * 1024;

/// The two stores under test, opened in this process.
struct Stores {
    files: FileStore,
    pg: PgStore,
    /// `--store` for a `baton` process on PostgreSQL.
    url: String,
}

pub fn run(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let count = bench.sessions;
    let generated = ensure_store(bench, count)?;
    let (home, project) = (&generated.home, &generated.project);
    bench.write_config(home, None)?;
    if !home.join("state.sqlite").exists() {
        run_measured(bench.baton(home, project).args(["sessions", "reindex"]))?
            .ok("baton sessions reindex")?;
    }

    eprintln!("  starting PostgreSQL (fsync=on)");
    let cluster = PgCluster::start_with(&["fsync=on", "full_page_writes=on"])
        .map_err(|error| anyhow::anyhow!("could not start PostgreSQL: {error}"))?;
    let url = cluster.url();
    let pg = PgStore::open(&url)?;
    let started = Instant::now();
    load_sessions(bench, &cluster, count, project)?;
    report.info(
        SECTION,
        format!(
            "PostgreSQL: {count} sessions loaded with COPY (threads and lines, then VACUUM \
             ANALYZE and CHECKPOINT)"
        ),
        duration(started.elapsed()),
    );
    let stores = Stores {
        files: FileStore::open(home)?,
        pg,
        url,
    };
    let id_of = |index: usize| session_spec(index, count).map(|(id, _, _)| id);

    // Locate: the trait call that finds a thread by id and reads its `session_meta`.
    let ids: Vec<ThreadId> = sample(count, 1_000, 11)
        .into_iter()
        .map(id_of)
        .collect::<anyhow::Result<_>>()?;
    stores.files.thread_meta(ids[0])?; // opens the index
    for (name, store) in stores.each() {
        let mut times = Vec::with_capacity(ids.len());
        for &id in &ids {
            let started = Instant::now();
            let meta = store.thread_meta(id)?;
            times.push(started.elapsed());
            if meta.id != id {
                bail!("{name}: thread_meta({id}) returned {}", meta.id);
            }
        }
        report.info(
            SECTION,
            format!(
                "{name}: locate among {count} (`Store::thread_meta`), p50 / p99 of {}",
                ids.len()
            ),
            format!(
                "{} / {}",
                duration(percentile(&times, 50.0)),
                duration(percentile(&times, 99.0))
            ),
        );
    }

    // `exec resume`, spawn to exit, on each store: files and PostgreSQL in turn, so both see
    // the same machine (its load changes from minute to minute, and both medians with it).
    // Each session is resumed once: pairs for the comparison, then the rest for the run
    // with `synchronous_commit = off`.
    let resume_ids: Vec<ThreadId> = sample(count, 2 * EXEC_RESUME_RUNS + RESUME_RUNS, 12)
        .into_iter()
        .map(id_of)
        .collect::<anyhow::Result<_>>()?;
    let mut times = [Vec::new(), Vec::new()];
    let (paired_ids, unsynced_ids) = resume_ids.split_at(2 * EXEC_RESUME_RUNS);
    for pair in paired_ids.chunks(2) {
        for (run, (&id, store_arg)) in pair
            .iter()
            .zip([None, Some(stores.url.as_str())])
            .enumerate()
        {
            let mut command = bench.baton(home, project);
            if let Some(url) = store_arg {
                command.args(["--store", url]);
            }
            let measured =
                run_measured(command.args(["exec", "resume", &id.to_string(), "RECALL"]))?
                    .ok("baton exec resume")?;
            if !measured.stdout.starts_with("recall:") {
                bail!("unexpected answer from exec resume: {}", measured.stdout);
            }
            times[run].push(measured.elapsed);
        }
    }
    let resumes = [median(&times[0]), median(&times[1])];
    // Why PostgreSQL is slower: each line is its own commit, waiting for the disk (an
    // unsynced append survives a database crash: baton-store-pg's tests say so), where the
    // files store fsyncs only after tool outputs and at turn end. The same resumes with the
    // server not waiting for the disk show that cost.
    cluster.psql(
        "postgres",
        "ALTER DATABASE baton SET synchronous_commit = off",
    );
    let mut times = Vec::new();
    for &id in unsynced_ids {
        let measured = run_measured(bench.baton(home, project).args([
            "--store",
            &stores.url,
            "exec",
            "resume",
            &id.to_string(),
            "RECALL",
        ]))?
        .ok("baton exec resume")?;
        times.push(measured.elapsed);
    }
    cluster.psql("postgres", "ALTER DATABASE baton RESET synchronous_commit");
    let ratio = resumes[1].as_secs_f64() / resumes[0].as_secs_f64().max(1e-9);
    report.info(
        SECTION,
        format!("files: `exec resume` among {count} (whole process, median of {EXEC_RESUME_RUNS})"),
        duration(resumes[0]),
    );
    report.add(
        SECTION,
        format!(
            "postgres: `exec resume` among {count} (whole process, median of \
             {EXEC_RESUME_RUNS}, run in turn with files), ratio to files"
        ),
        format!("{} ({ratio:.2}×)", duration(resumes[1])),
        "≤ 2× files",
        Verdict::of(ratio <= 2.0),
    );

    report.info(
        SECTION,
        format!(
            "postgres, the database set to `synchronous_commit = off` (commits do not wait \
             for the disk): `exec resume` (whole process, median of {RESUME_RUNS})"
        ),
        format!(
            "{} ({:.2}×)",
            duration(median(&times)),
            median(&times).as_secs_f64() / resumes[0].as_secs_f64().max(1e-9)
        ),
    );

    // What every fresh process pays before its first query, and the running server does not.
    let mut opens = Vec::new();
    for _ in 0..RESUME_RUNS {
        let started = Instant::now();
        drop(PgStore::open(&stores.url)?);
        opens.push(started.elapsed());
    }
    report.info(
        SECTION,
        format!(
            "postgres: `PgStore::open` (TCP, SCRAM authentication, a server process, the \
             schema check), what each `baton` process pays first (median of {RESUME_RUNS})"
        ),
        duration(median(&opens)),
    );
    server_resume(bench, &stores, home, count, report)?;

    // Text search: a word no session holds, so every thread's text is looked at.
    for (name, store) in stores.each() {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let page = store.list(&ListQuery {
                text: Some("zyzzyva-not-there".to_owned()),
                ..ListQuery::default()
            })?;
            times.push(started.elapsed());
            if !page.threads.is_empty() {
                bail!("{name}: the search for a word no session holds found threads");
            }
        }
        let search = median(&times);
        let what = format!("{name}: text search over {count} sessions, no match (median of 5)");
        if name == "postgres" {
            report.add(
                SECTION,
                what,
                duration(search),
                "< 100 ms",
                Verdict::of(search < Duration::from_millis(100)),
            );
        } else {
            report.info(SECTION, what, duration(search));
        }
    }

    rehydrate(bench, &stores, report)?;
    append_latency(bench, &stores, report)?;
    two_servers(bench, &stores, report)?;
    drop(stores);
    drop(cluster);
    Ok(())
}

/// A resume in a running server, where a fleet resumes sessions: `baton-reply` on a thread
/// this `baton mcp-server` has not seen (located, locked, rehydrated from the store, one turn,
/// recorded), one call at a time. Unlike `exec resume`, the process and its database
/// connections already exist, as they do for a team's servers.
fn server_resume(
    bench: &Bench,
    stores: &Stores,
    home: &Path,
    count: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    const CALLS: usize = 20;
    let ids: Vec<ThreadId> = sample(count, 2 * CALLS, 13)
        .into_iter()
        .map(|index| session_spec(index, count).map(|(id, _, _)| id))
        .collect::<anyhow::Result<_>>()?;
    let mut medians = Vec::new();
    for (run, global) in [vec![], vec!["--store", stores.url.as_str()]]
        .into_iter()
        .enumerate()
    {
        let stderr = format!("server-resume-{run}.stderr");
        let mut server = crate::mcp::Server::spawn_with(bench, home, &global, &stderr)?;
        server.initialize()?;
        let mut times = Vec::with_capacity(CALLS);
        for (n, id) in ids[run * CALLS..(run + 1) * CALLS].iter().enumerate() {
            let started = Instant::now();
            server.send(&serde_json::json!({
                "jsonrpc": "2.0", "id": n as u64 + 1, "method": "tools/call",
                "params": {"name": "baton-reply", "arguments": {
                    "threadId": id.to_string(), "prompt": "RECALL"
                }}
            }))?;
            let (_, answer) = server.next_response()?;
            times.push(started.elapsed());
            let text = answer
                .pointer("/result/structuredContent/content")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if !text.starts_with("recall:") {
                bail!("unexpected answer from baton-reply in a running server: {answer}");
            }
        }
        server.close_and_wait()?;
        medians.push(median(&times));
    }
    let what = |name: &str| {
        format!(
            "{name}: `baton-reply` on a session not yet in memory, in a running server, among \
             {count} (median of {CALLS})"
        )
    };
    report.info(SECTION, what("files"), duration(medians[0]));
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64().max(1e-9);
    report.add(
        SECTION,
        format!("{}, ratio to files", what("postgres")),
        format!("{} ({ratio:.2}×)", duration(medians[1])),
        "≤ 2× files",
        Verdict::of(ratio <= 2.0),
    );
    Ok(())
}

impl Stores {
    fn each(&self) -> [(&'static str, &dyn Store); 2] {
        [("files", &self.files), ("postgres", &self.pg)]
    }
}

/// Writes the `count` generated sessions (the same bytes as the files store's) as CSV and
/// loads them with `COPY`: one `threads` row each, summarised by baton-store's own code as
/// the store does, and one `lines` row per transcript line.
fn load_sessions(
    bench: &Bench,
    cluster: &PgCluster,
    count: usize,
    project: &Path,
) -> anyhow::Result<()> {
    let dir = bench.scratch.join("pg-copy");
    fs_err::create_dir_all(&dir)?;
    let threads_path = dir.join("threads.csv");
    let lines_path = dir.join("lines.csv");
    let mut threads = std::io::BufWriter::new(fs_err::File::create(&threads_path)?);
    let mut lines = std::io::BufWriter::new(fs_err::File::create(&lines_path)?);
    for index in 0..count {
        let (id, started, mut rng) = session_spec(index, count)?;
        let bytes = crate::generate::small_session(id, started, project, &mut rng)?;
        let path = PathBuf::from(format!("generated/{id}"));
        let summary = summarize_bytes(&path, &bytes, None)?;
        let text = std::str::from_utf8(&bytes).context("a generated transcript is UTF-8")?;
        let mut compaction_seq = None;
        let mut turn_context_seq = None;
        let mut next_seq = 0usize;
        for (seq, line) in text.lines().enumerate() {
            if line.contains(r#""type":"compacted""#) {
                compaction_seq = Some(seq);
            } else if line.contains(r#""type":"turn_context""#) {
                turn_context_seq = Some(seq);
            }
            writeln!(lines, "{id},{seq},{}", csv_text(line))?;
            next_seq = seq + 1;
        }
        let optional = |value: Option<&str>| value.map(|v| csv_text(clip(v))).unwrap_or_default();
        let number = |value: Option<usize>| value.map(|v| v.to_string()).unwrap_or_default();
        writeln!(
            threads,
            "{id},{},{},{},{},{},{},{},{},{},{},{},{next_seq},{},{}",
            optional(summary.owner.as_deref()),
            csv_text(&summary.cwd.to_string_lossy()),
            timestamp(summary.created_at),
            timestamp(summary.updated_at),
            optional(summary.first_user_message.as_deref()),
            optional(summary.last_agent_message.as_deref()),
            summary.turns,
            optional(summary.model.as_deref()),
            csv_text(summary.source.as_str()),
            number(compaction_seq),
            number(turn_context_seq),
            bytes.len(),
            csv_text(&summary.search_text),
        )?;
    }
    threads.flush()?;
    lines.flush()?;
    drop((threads, lines));
    let database = PgCluster::DATABASE;
    cluster
        .copy_csv(
            database,
            "threads (id, owner, cwd, created_at, updated_at, first_prompt, last_message, turns, \
             model, source, compaction_seq, turn_context_seq, next_seq, bytes, search_text)",
            &threads_path,
        )
        .map_err(anyhow::Error::msg)?;
    cluster
        .copy_csv(database, "lines (thread_id, seq, text)", &lines_path)
        .map_err(anyhow::Error::msg)?;
    cluster.psql(database, "VACUUM ANALYZE");
    // The load's dirty pages go to disk now, not during the measurements that follow: a
    // database in service is not in the middle of taking 100 000 sessions at once.
    cluster.psql(database, "CHECKPOINT");
    let loaded = cluster.psql(database, "SELECT count(*) FROM threads");
    if loaded != count.to_string() {
        bail!("PostgreSQL holds {loaded} threads after the load, expected {count}");
    }
    fs_err::remove_dir_all(&dir)?;
    Ok(())
}

/// A 100 MB session ending in a compaction, in both stores: `read_thread` (what a resume
/// reads) reads only from the compaction on.
fn rehydrate(bench: &Bench, stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    let home = bench.scratch.join("long-home");
    let project = bench.scratch.join("long-project");
    fs_err::create_dir_all(&project)?;
    let mut rng = Rng::new(0x0005_70E5);
    let started = epoch() + chrono::Duration::days(900);
    let id = thread_id_at(started, &mut rng)?;
    let bytes = long_session(id, started, &project, LONG_BYTES, true, true, &mut rng)?;
    let path = rollout_path(&home.join("sessions"), started, id);
    crate::generate::write_transcript(&path, &bytes)?;
    let files = FileStore::open(&home)?;
    let text = std::str::from_utf8(&bytes).context("the long transcript is UTF-8")?;
    let imported = Instant::now();
    stores.pg.import_thread(text)?;
    report.info(
        SECTION,
        format!(
            "postgres: import of the {:.0} MB session (one transaction)",
            bytes.len() as f64 / 1e6
        ),
        duration(imported.elapsed()),
    );
    stores.pg.read_thread(id)?; // warm, as the files store's page cache is
    for (name, store) in [("files", &files as &dyn Store), ("postgres", &stores.pg)] {
        let mut times = Vec::new();
        let mut items = 0;
        for _ in 0..9 {
            let started = Instant::now();
            let loaded = store.read_thread(id)?;
            times.push(started.elapsed());
            items = loaded.history.len();
        }
        let time = median(&times);
        let what = format!(
            "{name}: rehydrate a 100 MB session ending in a compaction (`read_thread`, {items} \
             history items, median of 9)"
        );
        if name == "postgres" {
            report.add(
                SECTION,
                what,
                duration(time),
                "< 20 ms",
                Verdict::of(time < Duration::from_millis(20)),
            );
        } else {
            report.info(SECTION, what, duration(time));
        }
    }
    Ok(())
}

/// One committed line: `append` then `sync` of a ~500 B assistant message on a fresh thread.
fn append_latency(bench: &Bench, stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    let project = bench.scratch.join("append-project");
    fs_err::create_dir_all(&project)?;
    let mut rng = Rng::new(0x00A9_9E0D);
    for (name, store) in stores.each() {
        let started: DateTime<Utc> = Utc::now();
        let id = thread_id_at(started, &mut rng)?;
        let mut writer = store.create_thread(&session_meta(id, started, &project))?;
        let mut times = Vec::with_capacity(APPEND_LINES);
        for n in 0..APPEND_LINES {
            let text = format!("{n}: {}", crate::generate::tool_output(&mut rng, 480));
            let item = RolloutItem::ResponseItem(ResponseItem::assistant_message(&text));
            let started = Instant::now();
            writer.append(&item)?;
            writer.sync()?;
            times.push(started.elapsed());
        }
        report.info(
            SECTION,
            format!("{name}: append one ~500 B line, committed (append + sync), p50 / p99 of {APPEND_LINES}"),
            format!(
                "{} / {}",
                duration(percentile(&times, 50.0)),
                duration(percentile(&times, 99.0))
            ),
        );
    }
    Ok(())
}

/// Two `baton mcp-server` processes on one store, each sending one `baton-reply` to every
/// one of 50 threads at once, for a few rounds: both servers contend for every thread, so
/// each turn runs or is refused as busy. Then every transcript must hold exactly the
/// accepted turns (none lost), each turn's lines together (none interleaved).
fn two_servers(bench: &Bench, stores: &Stores, report: &mut Report) -> anyhow::Result<()> {
    const THREADS: usize = 50;
    const ROUNDS: usize = 4;
    let project = bench.scratch.join("fleet-project");
    fs_err::create_dir_all(&project)?;
    for (name, store) in stores.each() {
        let home = bench.scratch.join(format!("fleet-{name}"));
        bench.write_config(&home, None)?;
        let files;
        let store: &dyn Store = if name == "files" {
            files = FileStore::open(&home)?;
            &files
        } else {
            store
        };
        let mut rng = Rng::new(0x00F1_EE70);
        let mut ids = Vec::with_capacity(THREADS);
        for _ in 0..THREADS {
            let started = Utc::now();
            let id = thread_id_at(started, &mut rng)?;
            let bytes = crate::generate::small_session(id, started, &project, &mut rng)?;
            store.import_thread(std::str::from_utf8(&bytes).context("UTF-8")?)?;
            ids.push(id);
        }
        let global: Vec<&str> = match name {
            "files" => Vec::new(),
            _ => vec!["--store", stores.url.as_str()],
        };
        let mut servers = [
            crate::mcp::Server::spawn_with(bench, &home, &global, "fleet-a.stderr")?,
            crate::mcp::Server::spawn_with(bench, &home, &global, "fleet-b.stderr")?,
        ];
        for server in &mut servers {
            server.initialize()?;
        }
        let mut accepted: Vec<Vec<String>> = vec![Vec::new(); THREADS];
        let (mut busy, mut other_errors) = (0usize, Vec::new());
        let started = Instant::now();
        for round in 0..ROUNDS {
            for (s, server) in servers.iter_mut().enumerate() {
                for (t, id) in ids.iter().enumerate() {
                    server.send(&serde_json::json!({
                        "jsonrpc": "2.0", "id": t as u64 + 1, "method": "tools/call",
                        "params": {"name": "baton-reply", "arguments": {
                            "threadId": id.to_string(),
                            "prompt": format!("round {round} server {s}"),
                        }}
                    }))?;
                }
            }
            for (s, server) in servers.iter().enumerate() {
                for _ in 0..THREADS {
                    let (reply_id, answer) = server.next_response()?;
                    let thread = (reply_id as usize)
                        .checked_sub(1)
                        .filter(|t| *t < THREADS)
                        .context("an answer to a request never sent")?;
                    let failed = answer.get("error").is_some()
                        || answer.pointer("/result/isError").and_then(|v| v.as_bool())
                            == Some(true);
                    if !failed {
                        accepted[thread].push(format!("round {round} server {s}"));
                    } else if answer.to_string().contains("busy") {
                        busy += 1;
                    } else if other_errors.len() < 3 {
                        other_errors.push(answer.to_string());
                    }
                }
            }
        }
        let took = started.elapsed();
        for server in servers {
            server.close_and_wait()?;
        }
        if !other_errors.is_empty() {
            bail!("{name}: baton-reply failed: {}", other_errors.join("; "));
        }
        let (mut lost, mut interleaved) = (0usize, 0usize);
        for (thread, id) in ids.iter().enumerate() {
            let transcript = store.export_thread(*id)?;
            let (prompts, whole) = turns_in(&transcript)?;
            let mut expected = accepted[thread].clone();
            expected.sort();
            let mut found: Vec<String> = prompts.into_iter().skip(1).collect();
            found.sort();
            if found != expected {
                lost += 1;
            }
            if !whole {
                interleaved += 1;
            }
        }
        let turns: usize = accepted.iter().map(Vec::len).sum();
        report.add(
            SECTION,
            format!(
                "{name}: 2 servers × {THREADS} concurrent `baton-reply` on {THREADS} threads \
                 (both servers on every thread), {ROUNDS} rounds: turns/s, turns run, busy, \
                 threads with a lost or extra turn, threads with interleaved turns"
            ),
            format!(
                "{:.0}/s, {turns} run, {busy} busy, {lost} lost, {interleaved} interleaved",
                turns as f64 / took.as_secs_f64()
            ),
            "0 lost, 0 interleaved",
            Verdict::of(lost == 0 && interleaved == 0),
        );
    }
    Ok(())
}

/// The user prompts of a transcript in order, and whether every turn's lines are together:
/// after a `user_message` event, its `agent_message` comes before the next `user_message`.
fn turns_in(transcript: &str) -> anyhow::Result<(Vec<String>, bool)> {
    let mut prompts = Vec::new();
    let mut open_turn = false;
    let mut whole = true;
    for line in transcript.lines() {
        let record: serde_json::Value = serde_json::from_str(line).context("a transcript line")?;
        if record["type"] != "event_msg" {
            continue;
        }
        match record["payload"]["type"].as_str() {
            Some("user_message") => {
                if open_turn {
                    whole = false;
                }
                open_turn = true;
                prompts.push(
                    record["payload"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
            Some("agent_message") => open_turn = false,
            _ => {}
        }
    }
    Ok((prompts, whole && !open_turn))
}

/// `text` as one quoted CSV field (a quoted empty string is '', not NULL).
fn csv_text(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn clip(text: &str) -> &str {
    let mut cut = text.len().min(baton_store::SUMMARY_TEXT_LIMIT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_quote_and_double_quotes() {
        assert_eq!(csv_text(r#"a "b", c"#), r#""a ""b"", c""#);
        assert_eq!(csv_text(""), r#""""#);
    }
}
