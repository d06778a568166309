//! Nothing lost, ever: kill -9 at random moments, concurrent writers, write failures,
//! reindexing (issue 5).

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_test_support::{
    Gate, PgCluster, RecordedRequest, Reply, ScriptedModelServer, Wire, default_script,
};
use common::*;
use serde_json::Value;

/// A tiny deterministic generator, seeded from the clock and printed, so a failing run can be
/// replayed with `BATON_CRASH_SEED`.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store a test body runs against: the files store under the test's `BATON_HOME`, or a
/// private PostgreSQL cluster selected by `store =` in the home's config.toml (so every
/// `baton` the test starts, each a fresh process, uses it).
enum StoreUnderTest {
    Files,
    Postgres(PgCluster),
}

impl StoreUnderTest {
    /// PostgreSQL for `test`, or `None` (after saying why) when it is not installed and CI is
    /// not `true`.
    fn postgres_or_skip(test: &str) -> Option<StoreUnderTest> {
        PgCluster::start_or_skip(test).map(StoreUnderTest::Postgres)
    }

    fn name(&self) -> &'static str {
        match self {
            StoreUnderTest::Files => "files",
            StoreUnderTest::Postgres(_) => "postgres",
        }
    }

    /// A test home on this store.
    fn env(&self, server: &ScriptedModelServer, wire: Wire) -> TestEnv {
        let env = TestEnv::new(server, wire);
        if let StoreUnderTest::Postgres(cluster) = self {
            let config_path = env.home.join("config.toml");
            let config = std::fs::read_to_string(&config_path).expect("config");
            std::fs::write(
                &config_path,
                format!("store = \"{}\"\n{config}", cluster.url()),
            )
            .expect("config");
        }
        env
    }

    /// The thread's transcript as the store holds it: the file's bytes (a torn tail
    /// included), or `baton sessions export` of the database's lines.
    fn transcript(&self, env: &TestEnv, thread_id: &str) -> Vec<u8> {
        match self {
            StoreUnderTest::Files => std::fs::read(env.rollout_of(thread_id)).expect("read"),
            StoreUnderTest::Postgres(_) => {
                let output = env.run(&["sessions", "export", thread_id]);
                assert_success(&output);
                output.stdout
            }
        }
    }

    /// Waits until no killed `baton` still holds `thread_id`'s lock: the kill can land between
    /// a tool's fork and its exec, when the forked child still shares the files store's
    /// `flock`ed descriptor for a moment; and PostgreSQL ends a killed client's backend (and
    /// its advisory lock) a moment after the kernel closed the connection. Polls, bounded.
    fn wait_for_killed_holders(&self, env: &TestEnv, thread_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let free = || match self {
            StoreUnderTest::Files => {
                let Ok(file) =
                    std::fs::File::open(env.home.join("locks").join(format!("{thread_id}.lock")))
                else {
                    return true; // never locked
                };
                use std::os::fd::AsRawFd;
                // SAFETY: flock only reads the descriptor number, which `file` keeps open;
                // closing `file` drops the lock taken here.
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
            }
            StoreUnderTest::Postgres(cluster) => {
                let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'";
                cluster.psql(PgCluster::DATABASE, sql) == "0"
            }
        };
        while !free() {
            assert!(
                Instant::now() < deadline,
                "a killed process's lock on {thread_id} was never released"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn prompts_in(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["type"] == "event_msg" && r["payload"]["type"] == "user_message")
        .filter_map(|r| r["payload"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// Parses a transcript's complete lines: each must be one record, except the torn fragments
/// that kills left (known by the byte offset where each starts), which readers skip and the
/// next writer fences off with a newline.
fn parse_allowing_torn(bytes: &[u8], thread_id: &str, torn: &HashSet<usize>) -> Vec<Value> {
    let mut records = Vec::new();
    let mut start = 0;
    while let Some(length) = bytes[start..].iter().position(|b| *b == b'\n') {
        let line = &bytes[start..start + length];
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(_) if line.is_empty() || torn.contains(&start) => {}
            Err(err) => panic!(
                "the line at byte {start} of {thread_id}'s transcript is not one JSON record \
                 ({err}): {}",
                String::from_utf8_lossy(line)
            ),
        }
        start += length + 1;
    }
    records
}

/// Whether `records` hold a `function_call` without its output: the turn was inside a tool.
fn has_unanswered_call(records: &[Value]) -> bool {
    let ids = |kind: &str| -> HashSet<String> {
        records
            .iter()
            .filter(|r| r["type"] == "response_item" && r["payload"]["type"] == kind)
            .filter_map(|r| r["payload"]["call_id"].as_str().map(str::to_owned))
            .collect()
    };
    !ids("function_call").is_subset(&ids("function_call_output"))
}

/// What the crash test saw; written to `target/tmp/crash-report-STORE.txt` for `.ci/run`.
#[derive(Default)]
struct CrashCounts {
    /// Children killed by SIGKILL (the rest had finished their turn first).
    kills: u64,
    /// Kills that left part of a line: the file did not end with a newline when the child died.
    kills_mid_write: u64,
    /// Kills while a command ran: a `function_call` of the turn had no output yet.
    kills_during_tool: u64,
    /// Distinct transcript lines checked, each counted once however often it was re-read.
    lines_checked: u64,
    resumed: u64,
    /// Resumes on a fresh process that failed.
    unresumable: u64,
    lost: u64,
}

#[test]
fn crash_test_kill_9_at_random_moments_loses_nothing() {
    crash_test(StoreUnderTest::Files);
}

#[test]
fn crash_test_kill_9_at_random_moments_loses_nothing_on_postgres() {
    if let Some(store) = StoreUnderTest::postgres_or_skip("crash_test_on_postgres") {
        crash_test(store);
    }
}

fn crash_test(store: StoreUnderTest) {
    let name = store.name();
    let iterations = env_number("BATON_CRASH_ITERATIONS", 50);
    let seed = env_number(
        "BATON_CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7),
    );
    println!("crash test ({name}): {iterations} iterations, seed {seed}");
    let mut rng = Lcg(seed);
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = store.env(&server, Wire::Responses);

    // A few multi-turn sessions with tool calls, killed in turn.
    let sessions: Vec<String> = (0..3)
        .map(|i| env.exec_ok(&format!("shell: echo session-{i}")).0)
        .collect();
    let mut counts = CrashCounts::default();
    // Per session: the torn fragments kills left (where each starts).
    let mut torn: HashMap<&str, HashSet<usize>> = HashMap::new();
    for iteration in 0..iterations {
        let thread_id = sessions[(iteration % sessions.len() as u64) as usize].as_str();
        let before = store.transcript(&env, thread_id);
        let torn_here = torn.entry(thread_id).or_default();
        let records_before = parse_allowing_torn(&before, thread_id, torn_here).len();

        let prompt = format!(
            "shell: echo turn-{iteration} && sleep 0.{}",
            1 + rng.below(3)
        );
        let mut child = env
            .baton()
            .args(["exec", "resume", thread_id, &prompt])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // The random moment of the kill (this sleep picks when, it waits for nothing).
        std::thread::sleep(Duration::from_millis(rng.below(250)));
        let _ = child.kill();
        let status = child.wait().expect("wait for the child");
        let killed = status.signal() == Some(libc::SIGKILL);
        store.wait_for_killed_holders(&env, thread_id);

        // The transcript as the child left it. Everything written before this turn is still
        // there, byte for byte.
        let after = store.transcript(&env, thread_id);
        if !after.starts_with(&before) {
            counts.lost += 1;
        }
        if !after.is_empty() && !after.ends_with(b"\n") {
            assert!(killed, "a turn that ran to its end left a torn line");
            counts.kills_mid_write += 1;
            let start = after.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            torn_here.insert(start);
        }
        let records = parse_allowing_torn(&after, thread_id, torn_here);
        if killed {
            counts.kills += 1;
            if has_unanswered_call(&records[records_before..]) {
                counts.kills_during_tool += 1;
            }
        }

        // The session resumes, on a fresh process, with its whole history.
        let prompts = prompts_in(&records);
        let output = env.run(&["exec", "resume", thread_id, "RECALL"]);
        if !output.status.success() {
            counts.unresumable += 1;
            eprintln!(
                "iteration {iteration}: {thread_id} did not resume: {}",
                stderr(&output)
            );
            continue;
        }
        let answer = stdout(&output);
        let recalled = answer.trim().strip_prefix("recall: ").unwrap_or_default();
        let recalled = recalled
            .rsplit_once(" (")
            .map_or(recalled, |(list, _)| list);
        let recalled: Vec<&str> = recalled.split(" | ").collect();
        if recalled != prompts {
            counts.lost += 1;
            eprintln!("iteration {iteration}: recalled {recalled:?}, transcript has {prompts:?}");
        }
        counts.resumed += 1;
    }
    // Every line of every session (the last RECALL turns' included) was checked above or is
    // now; each is counted once, not once per re-read.
    for thread_id in &sessions {
        let torn_here = torn.entry(thread_id.as_str()).or_default();
        let transcript = store.transcript(&env, thread_id);
        counts.lines_checked += parse_allowing_torn(&transcript, thread_id, torn_here).len() as u64;
    }
    let CrashCounts {
        kills,
        kills_mid_write,
        kills_during_tool,
        lines_checked,
        resumed,
        unresumable,
        lost,
    } = counts;
    let report = format!(
        "crash test ({name}): iterations={iterations} seed={seed} kills={kills} \
         kills_mid_write={kills_mid_write} kills_during_tool={kills_during_tool} \
         lines_checked={lines_checked} sessions_resumed={resumed} \
         sessions_unresumable={unresumable} items_lost={lost}"
    );
    println!("{report}");
    // cargo captures a passing test's output; .ci/run prints these files so the counts show.
    let _ = std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-report-{name}.txt")),
        format!("{report}\n"),
    );
    assert_eq!(lost, 0, "items were lost (seed {seed})");
    assert_eq!(unresumable, 0, "sessions did not resume (seed {seed})");
    assert_eq!(resumed, iterations);
    assert!(kills > 0, "no process was killed mid-turn (seed {seed})");
}

#[test]
fn concurrent_writers_on_one_thread_are_refused_with_busy_not_interleaved() {
    concurrent_writers(StoreUnderTest::Files);
}

#[test]
fn concurrent_writers_on_one_thread_are_refused_with_busy_not_interleaved_on_postgres() {
    if let Some(store) = StoreUnderTest::postgres_or_skip("concurrent_writers_on_postgres") {
        concurrent_writers(store);
    }
}

fn concurrent_writers(store: StoreUnderTest) {
    const ROUNDS: usize = 4;
    // Writer A's model request is held at its round's gate, so A holds the thread while B
    // tries: the overlap is certain, not a matter of timing.
    let gates: Vec<Gate> = (0..ROUNDS).map(|_| Gate::new()).collect();
    let script_gates = gates.clone();
    let server = ScriptedModelServer::start_blocking(move |request: &RecordedRequest| {
        let prompt = request.last_user_text().unwrap_or_default();
        let round = prompt
            .strip_prefix("held-")
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok());
        match round.and_then(|round| script_gates.get(round)) {
            Some(gate) if request.last_tool_output().is_none() => Reply::Hold {
                gate: gate.clone(),
                then: Box::new(Reply::text(format!("done: {prompt}"))),
            },
            _ => default_script(request),
        }
    })
    .expect("server");
    let env = store.env(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("start");

    let mut accepted = Vec::new();
    for (round, gate) in gates.iter().enumerate() {
        let held = format!("held-{round}: writer A");
        let writer_a = env
            .baton()
            .args(["exec", "resume", &thread_id, &held])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server
            .requests()
            .iter()
            .any(|request| request.last_user_text().as_deref() == Some(held.as_str()))
        {
            assert!(Instant::now() < deadline, "writer A never asked the model");
            std::thread::sleep(Duration::from_millis(10));
        }

        // A is inside its turn: B is refused, naming the thread and A's process.
        let writer_b = env.run(&[
            "exec",
            "resume",
            &thread_id,
            &format!("round-{round}-writer-B"),
        ]);
        assert!(!writer_b.status.success(), "B ran while A held the thread");
        let err = stderr(&writer_b);
        assert!(err.contains("busy"), "refused without `busy`: {err}");
        assert!(err.contains(&thread_id), "{err}");
        assert!(
            err.contains(&format!("process {}", writer_a.id())),
            "the holder's pid is named: {err}"
        );

        gate.open();
        let output = writer_a.wait_with_output().expect("wait");
        assert_success(&output);
        accepted.push(held);
    }
    println!(
        "concurrency ({}): accepted={} busy={ROUNDS}",
        store.name(),
        accepted.len()
    );
    // Every line must be one whole record, and only the accepted turns are there: B wrote
    // nothing, not even its prompt.
    let transcript = store.transcript(&env, &thread_id);
    let mut prompts = prompts_in(&parse_allowing_torn(
        &transcript,
        &thread_id,
        &HashSet::new(),
    ));
    assert_eq!(prompts.remove(0), "start");
    assert_eq!(
        prompts, accepted,
        "the transcript holds exactly the accepted turns"
    );
}

#[test]
fn a_failing_write_fails_the_turn_cleanly_and_the_next_turn_works() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let (thread_id, _) = env.exec_ok("before the disk filled up");
    let path = env.rollout_of(&thread_id);
    let size = std::fs::metadata(&path).expect("meta").len();
    let before = std::fs::read(&path).expect("read");

    // A file-size limit just above the current size stands in for a full disk: the next
    // lines of the turn fail with EFBIG.
    let limit = size + 200;
    let mut command = env.baton();
    command.args(["exec", "resume", &thread_id, "this turn cannot be written"]);
    // SAFETY: setrlimit and signal are async-signal-safe and only touch the child.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Without this the kernel kills the writer with SIGXFSZ instead of failing write().
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let output = command.output().expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        std::fs::read(&path).expect("read").starts_with(&before),
        "earlier history is intact"
    );

    let answer = env.resume_ok(&thread_id, "RECALL");
    assert!(
        answer.starts_with("recall: before the disk filled up"),
        "{answer}"
    );
}

#[test]
fn reindex_rebuilds_the_index_and_names_unreadable_files() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Responses);
    let (first, _) = env.exec_ok("one");
    let (second, _) = env.exec_ok("two");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}/state.sqlite{suffix}", env.home.display()));
    }
    let day_dir = env
        .rollout_of(&first)
        .parent()
        .expect("day folder")
        .to_path_buf();
    let junk =
        day_dir.join("rollout-2026-01-01T00-00-00-019c7616-b3e9-7782-9ea8-b53e6bb09329.jsonl");
    std::fs::write(&junk, "not a transcript\n").expect("write junk");

    let output = env.run(&["sessions", "reindex"]);
    assert_success(&output);
    let out = stdout(&output);
    assert!(out.contains("indexed 2 sessions"), "{out}");
    let err = stderr(&output);
    assert!(err.contains(&junk.display().to_string()), "{err}");

    assert_eq!(env.listed_ids(), [second, first]);
}

#[test]
fn sessions_survive_a_busy_loop_of_short_processes() {
    // Many short-lived processes in a row on one thread: each sees all earlier turns.
    let server = ScriptedModelServer::start_blocking(default_script).expect("server");
    let env = TestEnv::new(&server, Wire::Chat);
    let (thread_id, _) = env.exec_ok("turn-0");
    let started = Instant::now();
    for turn in 1..6 {
        env.resume_ok(&thread_id, &format!("turn-{turn}"));
    }
    let answer = env.resume_ok(&thread_id, "RECALL");
    assert_eq!(
        answer.trim(),
        "recall: turn-0 | turn-1 | turn-2 | turn-3 | turn-4 | turn-5 (0 tool outputs)"
    );
    println!("7 processes in {:?}", started.elapsed());
}
