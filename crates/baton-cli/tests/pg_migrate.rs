//! `baton sessions migrate --to STORE` through the real binary, files → PostgreSQL and back
//! (a private cluster from baton-test-support): 1 000 sessions, the run killed half-way, run
//! again → every session there once, whole, identical to the source; busy and diverged
//! sessions are reported and left for the next run; a terminal gets a progress bar. Skipped
//! (saying so) without PostgreSQL, unless CI=true.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Output, Stdio};

use baton_protocol::ThreadId;
use baton_store::{FileStore, Store};
use baton_store_pg::PgStore;
use baton_test_support::{PgCluster, ScriptedModelServer, Wire, default_script};
use common::{TestEnv, assert_success, collect_files, stderr, stdout};

const SESSIONS: usize = 1000;

fn assert_no_password(output: &Output) {
    for text in [stdout(output), stderr(output)] {
        assert!(
            !text.contains(PgCluster::PASSWORD),
            "the database password was printed: {text}"
        );
    }
}

/// `env`'s files store with `count` sessions: one real session (a tool call and a second
/// turn), copied under new ids with a distinct prompt each. Returns their ids, oldest first.
fn files_store_with_sessions(env: &TestEnv, count: usize) -> Vec<ThreadId> {
    let (seed, _) = env.exec_ok("shell: echo seed-0000");
    env.resume_ok(&seed, "and then");
    let transcript = std::fs::read_to_string(env.rollout_of(&seed)).expect("transcript");
    let store = FileStore::open(&env.home).expect("files store");
    let mut ids = vec![ThreadId::parse(&seed).expect("id")];
    for i in 1..count {
        let id = uuid::Uuid::now_v7().to_string();
        let copy = transcript
            .replace(&seed, &id)
            .replace("seed-0000", &format!("seed-{i:04}"));
        ids.push(store.import_thread(&copy).expect("import"));
    }
    ids
}

/// Runs `baton [global] sessions migrate --to DEST` printing a line per session, and kills it
/// with SIGKILL once it has reported `after` sessions copied. Returns its stderr so far.
fn migrate_killed_after(env: &TestEnv, global: &[&str], dest: &str, after: usize) -> String {
    let mut child = env
        .baton()
        .args(global)
        .args(["sessions", "migrate", "--to", dest])
        .env("BATON_MIGRATE_PROGRESS_LINES", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton sessions migrate");
    let reader = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let mut copied = 0;
    for line in reader.lines().map_while(Result::ok) {
        copied += usize::from(line.starts_with("copied "));
        seen.push(line);
        if copied == after {
            break;
        }
    }
    child.kill().expect("kill -9");
    let status = child.wait().expect("wait");
    let seen = seen.join("\n");
    assert_eq!(copied, after, "migrate ended early: {status:?}\n{seen}");
    // Killed, not finished: the signal ended it.
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}\n{seen}");
    assert!(!seen.contains(PgCluster::PASSWORD), "{seen}");
    seen
}

/// The numbers in `migrated N sessions to …: C copied, A already there, F failed`.
fn summary_of(output: &Output) -> (usize, usize, usize) {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|line| line.starts_with("migrated "))
        .unwrap_or_else(|| panic!("no summary line: {text}\n{}", stderr(output)));
    let numbers: Vec<usize> = line
        .rsplit(": ")
        .next()
        .unwrap_or_default()
        .split(", ")
        .filter_map(|part| part.split(' ').next()?.parse().ok())
        .collect();
    match numbers.as_slice() {
        [copied, already, failed] => (*copied, *already, *failed),
        _ => panic!("unexpected summary: {line}"),
    }
}

/// `sessions show`'s text without its `file:` line, which names where each store keeps it.
fn conversation_of(output: &Output) -> String {
    assert_success(output);
    assert_no_password(output);
    stdout(output)
        .lines()
        .filter(|line| !line.starts_with("file: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sessions show` of `id` in both stores prints the same conversation.
fn assert_same_show(env: &TestEnv, a: &[&str], b: &[&str], id: ThreadId) {
    let id = id.to_string();
    let show = |global: &[&str]| {
        let output = env
            .baton()
            .args(global)
            .args(["sessions", "show", &id])
            .output()
            .expect("run baton");
        conversation_of(&output)
    };
    let (left, right) = (show(a), show(b));
    assert!(left.contains("seed-"), "{left}");
    assert_eq!(left, right, "sessions show of {id} differs");
}

#[test]
fn migrate_of_1000_sessions_killed_half_way_and_run_again_copies_each_once_both_ways() {
    let Some(cluster) = PgCluster::start_or_skip("migrate_1000_sessions") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let ids = files_store_with_sessions(&env, SESSIONS);
    let files = FileStore::open(&env.home).expect("files store");
    let lines_per_session = files.export_thread(ids[0]).expect("export").lines().count();
    let url = cluster.url();

    // files → PostgreSQL, killed after half the sessions were reported copied.
    migrate_killed_after(&env, &[], &url, SESSIONS / 2);
    let count = |sql: &str| -> usize {
        cluster
            .psql(PgCluster::DATABASE, sql)
            .parse()
            .unwrap_or_else(|_| panic!("not a count: {sql}"))
    };
    let there = count("SELECT count(*) FROM threads");
    eprintln!("after kill -9: {there} of {SESSIONS} sessions in PostgreSQL");
    assert!(there >= SESSIONS / 2, "{there}");
    // Whatever is there is whole: every thread has all its lines, and only those.
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM threads t WHERE next_seq <> {lines_per_session} \
             OR (SELECT count(*) FROM lines l WHERE l.thread_id = t.id) <> {lines_per_session}"
        )),
        0
    );

    // Run again: the rest is copied, nothing twice.
    let timer = std::time::Instant::now();
    let again = env.run(&["sessions", "migrate", "--to", &url]);
    eprintln!(
        "FIGURE: files → PostgreSQL, {} sessions copied and {there} skipped in {} ms",
        SESSIONS - there,
        timer.elapsed().as_millis()
    );
    assert_success(&again);
    assert_no_password(&again);
    assert_eq!(summary_of(&again), (SESSIONS - there, there, 0));
    // Not a terminal and no per-session lines asked for: the summary line only.
    assert_eq!(stderr(&again), "", "stderr must stay quiet");
    assert_eq!(count("SELECT count(DISTINCT id) FROM threads"), SESSIONS);
    assert_eq!(count("SELECT count(*) FROM threads"), SESSIONS);
    assert_eq!(
        count("SELECT count(*) FROM lines"),
        SESSIONS * lines_per_session
    );

    // Every session is byte for byte the source's; `sessions show` agrees on a sample.
    let pg = PgStore::open(&url).expect("PostgreSQL store");
    assert_eq!(
        pg.try_thread_ids().expect("ids"),
        ids.iter().copied().collect::<HashSet<_>>()
    );
    for id in &ids {
        assert_eq!(
            pg.export_thread(*id).expect("export from PostgreSQL"),
            files.export_thread(*id).expect("export from files"),
            "session {id} differs"
        );
    }
    for id in [
        ids[0],
        ids[there - 1],
        ids[there.min(SESSIONS - 1)],
        ids[SESSIONS - 1],
    ] {
        assert_same_show(&env, &[], &["--store", &url], id);
    }

    // A third run finds everything there.
    let third = env.run(&["sessions", "migrate", "--to", &url]);
    assert_success(&third);
    assert_eq!(summary_of(&third), (0, SESSIONS, 0));

    // PostgreSQL → files in another BATON_HOME, killed half-way too, then run again.
    let other = TestEnv::new(&server, Wire::Responses);
    let to_files = format!("files:{}", other.home.display());
    let global = ["--store", url.as_str()];
    migrate_killed_after(&env, &global, &to_files, SESSIONS / 2);
    let copied_before = other.rollout_files().len();
    assert!(copied_before >= SESSIONS / 2, "{copied_before}");
    let timer = std::time::Instant::now();
    let back = env.run(&["--store", &url, "sessions", "migrate", "--to", &to_files]);
    eprintln!(
        "FIGURE: PostgreSQL → files, {} sessions copied and {copied_before} skipped in {} ms",
        SESSIONS - copied_before,
        timer.elapsed().as_millis()
    );
    assert_success(&back);
    assert_no_password(&back);
    assert_eq!(
        summary_of(&back),
        (SESSIONS - copied_before, copied_before, 0)
    );
    let rollouts = other.rollout_files();
    assert_eq!(rollouts.len(), SESSIONS, "one file per session");
    let mut leftovers = Vec::new();
    collect_files(&other.home.join("sessions"), &mut leftovers);
    leftovers.retain(|path| path.to_string_lossy().ends_with(".tmp"));
    assert!(
        leftovers.is_empty(),
        "half-written copies left: {leftovers:?}"
    );
    let copy = FileStore::open(&other.home).expect("files store");
    for id in &ids {
        assert_eq!(
            copy.export_thread(*id).expect("export from the copy"),
            files.export_thread(*id).expect("export from files"),
            "session {id} differs"
        );
    }
    let listed = other.run(&["sessions", "list", "--json", "--limit", "5000"]);
    assert_success(&listed);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(SESSIONS));
    for id in [ids[1], ids[SESSIONS / 2], ids[SESSIONS - 2]] {
        let id = id.to_string();
        let show = |env: &TestEnv| conversation_of(&env.run(&["sessions", "show", &id]));
        assert_eq!(show(&other), show(&env), "sessions show of {id} differs");
    }
}

#[test]
fn migrate_reports_busy_and_diverged_sessions_and_copies_them_on_a_later_run() {
    let Some(cluster) = PgCluster::start_or_skip("migrate_busy_and_diverged") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let ids = files_store_with_sessions(&env, 3);
    let url = cluster.url();
    let files = FileStore::open(&env.home).expect("files store");

    // A session in a turn (its lock held) is not copied half-way: reported busy, the rest go.
    let held = files.lock_thread(ids[1]).expect("lock");
    let busy = env.run(&["sessions", "migrate", "--to", &url]);
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert_no_password(&busy);
    assert_eq!(summary_of(&busy), (2, 0, 1));
    let err = stderr(&busy);
    assert!(
        err.contains(&format!("failed {}: ", ids[1])) && err.contains("busy"),
        "{err}"
    );
    assert!(err.contains("run migrate again"), "{err}");
    drop(held);
    let done = env.run(&["sessions", "migrate", "--to", &url]);
    assert_success(&done);
    assert_eq!(summary_of(&done), (1, 2, 0));

    // Continued in the source after the copy: the copy there differs, said and left alone.
    env.resume_ok(&ids[0].to_string(), "one more");
    let diverged = env.run(&["sessions", "migrate", "--to", &url]);
    assert_eq!(diverged.status.code(), Some(1), "{}", stderr(&diverged));
    assert_eq!(summary_of(&diverged), (0, 2, 1));
    let err = stderr(&diverged);
    assert!(
        err.contains(&format!(
            "failed {}: the destination has a different copy",
            ids[0]
        )),
        "{err}"
    );

    // Bad destinations: a usage error that shows no password; the current store itself.
    let bogus = env.run(&[
        "sessions",
        "migrate",
        "--to",
        &format!("mysql://u:{}@h/db", PgCluster::PASSWORD),
    ]);
    assert_eq!(bogus.status.code(), Some(2), "{}", stderr(&bogus));
    assert_no_password(&bogus);
    assert!(stderr(&bogus).contains("files:PATH"), "{}", stderr(&bogus));
    let itself = env.run(&["--store", &url, "sessions", "migrate", "--to", &url]);
    assert_eq!(itself.status.code(), Some(2), "{}", stderr(&itself));
    assert_no_password(&itself);
    assert!(stderr(&itself).contains("is the store baton is using now"));
    let home_itself = env.run(&["sessions", "migrate", "--to", "files"]);
    assert_eq!(
        home_itself.status.code(),
        Some(2),
        "{}",
        stderr(&home_itself)
    );

    // An unreachable destination: one clear line naming host and port, nothing copied.
    let mut cluster = cluster;
    cluster.stop();
    let down = env.run(&["sessions", "migrate", "--to", &url]);
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));
    assert_no_password(&down);
    assert!(
        stderr(&down).contains(&format!("127.0.0.1:{}", cluster.port())),
        "{}",
        stderr(&down)
    );
}

#[test]
fn migrate_on_a_terminal_draws_one_updating_progress_line() {
    let Some(cluster) = PgCluster::start_or_skip("migrate_progress_bar") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    files_store_with_sessions(&env, 5);
    let url = cluster.url();

    // stderr on a pseudo-terminal, as when a person runs it.
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors; the optional arguments may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    let (mut master_file, slave_file) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let output = env
        .baton()
        .args(["sessions", "migrate", "--to", &url])
        .stdin(Stdio::null())
        .stderr(Stdio::from(slave_file))
        .output()
        .expect("run baton");
    assert_success(&output);
    assert_eq!(summary_of(&output), (5, 0, 0));
    // The child has exited and our copy of the slave is closed: read until the pty says EIO.
    let mut text = Vec::new();
    let _ = std::io::Read::read_to_end(&mut master_file, &mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("\r\x1b[2Kmigrating ["), "{text:?}");
    assert!(
        text.contains("5/5: 5 copied, 0 already there, 0 failed"),
        "{text:?}"
    );
    assert!(!text.contains(PgCluster::PASSWORD));
    assert_eq!(text.matches('\n').count(), 1, "one line, updated: {text:?}");
}
