//! `PgStore` against a real, private PostgreSQL (baton-test-support's `PgCluster`): the same
//! contract checks as the files and memory stores, then what only a database store does.
//! Without PostgreSQL installed (and `CI` not `true`) each test says it was skipped.

use std::path::Path;

use baton_protocol::{Compacted, ResponseItem, RolloutItem, ThreadId};
use baton_store::contract::{self, meta};
use baton_store::{Store, StoreError};
use baton_store_pg::PgStore;
use baton_test_support::PgCluster;

fn user(text: &str) -> RolloutItem {
    RolloutItem::ResponseItem(ResponseItem::user_message(text))
}

#[test]
fn postgres_keeps_every_store_contract() {
    let Some(cluster) = PgCluster::start_or_skip("postgres_keeps_every_store_contract") else {
        return;
    };
    // A fresh database per check: each one counts the threads it made.
    for (i, (name, check)) in contract::ALL.iter().enumerate() {
        eprintln!("contract: {name}");
        let url = cluster.create_database(&format!("contract_{i}"));
        let store = PgStore::open(&url).expect("open store");
        check(&store);
    }
}

#[test]
fn rehydration_reads_nothing_before_the_newest_compaction_and_export_is_every_line() {
    let Some(cluster) = PgCluster::start_or_skip("rehydration_from_compaction") else {
        return;
    };
    let store = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    writer.append(&user("old")).expect("append");
    writer
        .append(&RolloutItem::Compacted(Compacted {
            message: "summary".into(),
            replacement_history: Some(vec![ResponseItem::user_message("summary")]),
        }))
        .expect("append");
    writer.append(&user("new")).expect("append");
    let exported = store.export_thread(id).expect("export");

    // A line before the compaction is never read: spoil it and nothing notices.
    cluster.psql(
        PgCluster::DATABASE,
        &format!("UPDATE lines SET text = 'not json' WHERE thread_id = '{id}' AND seq = 1"),
    );
    let loaded = store.read_thread(id).expect("read");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let texts: Vec<String> = loaded
        .history
        .iter()
        .filter_map(|item| item.message_text().map(|(_, text)| text))
        .collect();
    assert_eq!(texts, ["summary", "new"]);
    assert_eq!(loaded.file_len, exported.len() as u64);

    // Every row is one line, in order, with no gaps.
    let seqs = cluster.psql(
        PgCluster::DATABASE,
        &format!(
            "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM lines WHERE thread_id = '{id}'"
        ),
    );
    assert_eq!(seqs, "0,1,2,3");
    assert_eq!(exported.lines().count(), 4);
}

#[test]
fn a_thread_held_by_another_process_is_busy_naming_its_host_and_pid() {
    let Some(cluster) = PgCluster::start_or_skip("busy_across_processes") else {
        return;
    };
    // Two stores, two sets of connections: as two baton servers on one database.
    let first = PgStore::open(&cluster.url()).expect("open store");
    let second = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let held = first.lock_thread(id).expect("lock");
    let busy = second.lock_thread(id).expect_err("busy");
    let message = busy.to_string();
    assert!(message.contains("busy"), "{message}");
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains(&format!("in process {}", std::process::id())),
        "{message}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(
        message.contains(&format!("on host {}", host.trim())),
        "{message}"
    );
    drop(held);
    second.lock_thread(id).expect("free once the guard is gone");
}

#[test]
fn a_lock_dies_with_the_connection_that_held_it() {
    let Some(mut cluster) = PgCluster::start_or_skip("lock_dies_with_connection") else {
        return;
    };
    let first = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let held = first.lock_thread(id).expect("lock");
    // The database restarts (as after its host died): every session and its locks are gone.
    cluster.kill();
    cluster.restart();
    let second = PgStore::open(&cluster.url()).expect("open store");
    second
        .lock_thread(id)
        .expect("the dead holder's lock is free");
    drop(held);
}

#[test]
fn a_database_restart_between_calls_is_invisible_and_an_outage_names_host_and_port() {
    let Some(mut cluster) = PgCluster::start_or_skip("restart_between_calls") else {
        return;
    };
    let store = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    writer.append(&user("before the restart")).expect("append");

    cluster.restart();
    store.read_thread(id).expect("read after a restart");
    writer.append(&user("after the restart")).expect("append");

    cluster.stop();
    let error = store.read_thread(id).expect_err("the database is down");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Database { .. }), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    assert!(!message.contains(PgCluster::PASSWORD), "{message}");

    cluster.restart();
    let loaded = store.read_thread(id).expect("recovered by itself");
    let texts: Vec<String> = loaded
        .history
        .iter()
        .filter_map(|item| item.message_text().map(|(_, text)| text))
        .collect();
    assert_eq!(texts, ["before the restart", "after the restart"]);
}

#[test]
fn search_has_a_trigram_index_for_every_column_it_matches() {
    let Some(cluster) = PgCluster::start_or_skip("search_indexes") else {
        return;
    };
    drop(PgStore::open(&cluster.url()).expect("open store"));
    // Forbidding sequential scans shows which indexes can answer the listing's text filter:
    // without one per column, the OR falls back to reading every thread.
    let plan = cluster.psql(
        PgCluster::DATABASE,
        "SET enable_seqscan = off; EXPLAIN SELECT id FROM threads \
         WHERE search_text ILIKE '%needle%' OR first_prompt ILIKE '%needle%' \
            OR last_message ILIKE '%needle%'",
    );
    for index in [
        "threads_search",
        "threads_first_prompt_search",
        "threads_last_message_search",
    ] {
        assert!(
            plan.contains(&format!("Bitmap Index Scan on {index}")),
            "{plan}"
        );
    }
}

#[test]
fn a_schema_newer_than_this_baton_is_refused_and_an_older_one_is_kept() {
    let Some(cluster) = PgCluster::start_or_skip("newer_schema_refused") else {
        return;
    };
    let url = cluster.create_database("schema");
    // Opening twice applies the migrations once.
    drop(PgStore::open(&url).expect("open store"));
    drop(PgStore::open(&url).expect("open again"));
    assert_eq!(
        cluster.psql(
            "schema",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM baton_migrations"
        ),
        "1,2,3"
    );
    cluster.psql(
        "schema",
        "INSERT INTO baton_migrations (version) VALUES (999)",
    );
    let error = PgStore::open(&url).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("version 999"), "{message}");
    assert!(message.contains("newer than this baton knows"), "{message}");
    assert!(!message.contains(PgCluster::PASSWORD), "{message}");
    assert!(
        !message.contains("session database in the session database"),
        "{message}"
    );
    // Opened in the background, the first operation is refused in the same words.
    let store = PgStore::open_in_background(&url).expect("a store to try");
    let message = store
        .export_thread(ThreadId::new())
        .expect_err("refused")
        .to_string();
    assert!(message.contains("newer than this baton knows"), "{message}");
}

#[test]
fn a_store_opened_in_the_background_waits_for_the_one_schema_check_it_started() {
    let Some(cluster) = PgCluster::start_or_skip("open_in_background") else {
        return;
    };
    let url = format!(
        "{}?application_name=opened_in_background",
        cluster.create_database("background")
    );
    let store = PgStore::open_in_background(&url).expect("open store");
    // The first operation runs while the check is still connecting: it must wait for it, not
    // open a connection of its own and check again.
    let id = ThreadId::new();
    store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create on the schema the check made");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'opened_in_background'"
        ),
        "1",
        "connections opened"
    );
    assert_eq!(store.export_thread(id).expect("export").lines().count(), 1);
}

#[test]
fn an_unknown_thread_is_not_found_in_the_words_of_a_database() {
    let Some(cluster) = PgCluster::start_or_skip("unknown_thread_wording") else {
        return;
    };
    let store = PgStore::open(&cluster.create_database("wording")).expect("open store");
    let id = ThreadId::new();
    let message = store.export_thread(id).expect_err("unknown").to_string();
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains("in the session database postgres://"),
        "{message}"
    );
    assert!(!message.contains("rollout-"), "{message}");
    assert!(!message.contains(PgCluster::PASSWORD), "{message}");
}

#[test]
fn a_password_with_an_unencoded_at_is_refused_without_showing_any_of_it() {
    let error = PgStore::open("postgres://u:hunter@2xyz@127.0.0.1:1/db")
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.contains("%40"), "{message}");
    assert!(!message.contains("hunter"), "{message}");
    assert!(!message.contains("2xyz"), "{message}");
}

#[test]
fn an_unreachable_database_names_host_and_port_never_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    // Nothing listens there now.
    let error = PgStore::open(&format!("postgres://u:hunter2@127.0.0.1:{port}/db"))
        .err()
        .expect("unreachable");
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    // Opened in the background, the first operation says the same.
    let store = PgStore::open_in_background(&format!("postgres://u:hunter2@127.0.0.1:{port}/db"))
        .expect("nothing to connect to yet");
    let message = store
        .export_thread(ThreadId::new())
        .expect_err("unreachable")
        .to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn an_append_that_fails_while_the_database_is_down_leaves_no_row_and_no_gap() {
    let Some(mut cluster) = PgCluster::start_or_skip("failed_append_leaves_no_gap") else {
        return;
    };
    let store = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    writer.append(&user("committed")).expect("append");
    let len_before = writer.len();

    cluster.kill();
    let error = writer
        .append(&user("lost"))
        .expect_err("the database is gone");
    assert!(!error.to_string().contains(PgCluster::PASSWORD), "{error}");
    assert_eq!(writer.len(), len_before);
    cluster.restart();

    writer
        .append(&user("after"))
        .expect("append once it is back");
    let seqs = cluster.psql(
        PgCluster::DATABASE,
        &format!(
            "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM lines WHERE thread_id = '{id}'"
        ),
    );
    assert_eq!(seqs, "0,1,2");
    let exported = store.export_thread(id).expect("export");
    assert!(!exported.contains("\"lost\""), "{exported}");
    assert_eq!(writer.len(), exported.len() as u64);
}

#[test]
fn an_append_after_the_database_restarted_under_a_held_lock_fails_and_writes_nothing() {
    let Some(mut cluster) = PgCluster::start_or_skip("lock_lost_in_restart") else {
        return;
    };
    let store = PgStore::open(&cluster.url()).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    let held = store.lock_thread(id).expect("lock");
    writer.append(&user("under the lock")).expect("append");

    // The restart ends the session that held the lock: another server takes the thread.
    cluster.restart();
    let other = PgStore::open(&cluster.url()).expect("open store");
    let other_lock = other
        .lock_thread(id)
        .expect("the lock died with its connection");
    other
        .append_to(id)
        .expect("open")
        .append(&user("the other server's turn"))
        .expect("append");

    // This turn no longer holds the thread: its next line is refused, not interleaved.
    let error = writer
        .append(&user("too late"))
        .expect_err("the lock is gone");
    let message = error.to_string();
    assert!(message.contains("lock was lost"), "{message}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{message}"
    );
    assert!(!message.contains(PgCluster::PASSWORD), "{message}");
    drop(held);
    let exported = store.export_thread(id).expect("export");
    assert!(exported.contains("the other server's turn"), "{exported}");
    assert!(!exported.contains("too late"), "{exported}");

    // Once the other server is done, this one continues normally.
    drop(other_lock);
    let _lock = store.lock_thread(id).expect("lock again");
    let mut writer = store.append_to(id).expect("open");
    writer.append(&user("next turn")).expect("append");
    assert!(
        store
            .export_thread(id)
            .expect("export")
            .contains("next turn")
    );
}

#[test]
fn a_recorded_turn_grows_the_search_text_exactly_as_baton_store_does_up_to_its_limit() {
    let Some(cluster) = PgCluster::start_or_skip("record_turn_search_text") else {
        return;
    };
    let url = cluster.create_database("search_text");
    let store = PgStore::open(&url).expect("open store");
    let id = ThreadId::new();
    store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    let limit = baton_store::SEARCH_TEXT_LIMIT;
    // Whole texts (one turn without a prompt, one with an empty one), then a prompt that
    // passes the limit inside a 3-byte '€', an answer left one byte (a newline and an empty
    // cut), then turns that find the text full.
    let turns: Vec<(Option<String>, Option<String>)> = vec![
        (Some("first prompt".into()), Some("first answer".into())),
        (None, Some("an answer without a prompt".into())),
        (Some("a".repeat(limit / 2)), None),
        (Some(String::new()), Some("b".repeat(limit / 4 + 1))),
        (Some("€".repeat(limit / 3)), Some("€".into())),
        (Some("€".into()), Some("x".into())),
        (Some("y".into()), Some("z".into())),
    ];
    let mut expected = String::new();
    for (prompt, answer) in turns {
        for text in [&prompt, &answer].into_iter().flatten() {
            baton_store::push_search_text(&mut expected, text);
        }
        store
            .record_turn(&baton_store::TurnRecord {
                id,
                path: Path::new("unused").to_path_buf(),
                cwd: Path::new("/w").to_path_buf(),
                created_at: chrono::Utc::now(),
                model: None,
                source: baton_store::ThreadOrigin::Baton,
                user_message: prompt,
                agent_message: answer,
            })
            .expect("record");
        // The bar keeps a trailing newline from psql's trimming.
        let stored = cluster.psql(
            "search_text",
            &format!("SELECT search_text || '|' FROM threads WHERE id = '{id}'"),
        );
        let stored = stored.strip_suffix('|').unwrap_or(&stored);
        assert_eq!(stored.len(), expected.len());
        assert!(
            stored == expected,
            "the search texts differ at {} bytes",
            expected.len()
        );
    }
    assert_eq!(
        expected.len(),
        limit - 1,
        "the limit was reached, a '€' cut at its start"
    );
}

#[test]
fn reindex_moves_updated_at_to_the_newest_line_as_appends_do_not() {
    let Some(cluster) = PgCluster::start_or_skip("reindex_updated_at") else {
        return;
    };
    let url = cluster.create_database("reindex_updated_at");
    let store = PgStore::open(&url).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/w")))
        .expect("create");
    let updated_at = |cluster: &PgCluster| {
        cluster.psql(
            "reindex_updated_at",
            &format!("SELECT updated_at < now() - interval '1 day' FROM threads WHERE id = '{id}'"),
        )
    };
    // A turn that died before it was recorded: its lines are there, the listing is older.
    cluster.psql(
        "reindex_updated_at",
        "UPDATE threads SET updated_at = now() - interval '1 year'",
    );
    writer
        .append_all(&[user("a prompt never answered")])
        .expect("append");
    assert_eq!(updated_at(&cluster), "t", "appends leave updated_at alone");
    store.reindex().expect("reindex");
    assert_eq!(
        updated_at(&cluster),
        "f",
        "reindex takes the newest line's time"
    );
    // A listing newer than the newest line (a turn is recorded just after its last line)
    // stays as it is.
    cluster.psql(
        "reindex_updated_at",
        "UPDATE threads SET updated_at = now() + interval '1 day'",
    );
    store.reindex().expect("reindex");
    assert_eq!(
        cluster.psql(
            "reindex_updated_at",
            &format!("SELECT updated_at > now() FROM threads WHERE id = '{id}'"),
        ),
        "t",
        "reindex never moves updated_at back"
    );
}

#[test]
fn a_server_that_accepts_and_never_answers_is_an_error_within_the_connect_timeout() {
    // Accepts connections and keeps them open without a word, as a hung server would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = format!("postgres://u:hunter2@127.0.0.1:{port}/db?connect_timeout=1");
    // Without the bound, `open` waits for good: fail instead of hanging the test run.
    let (sender, receiver) = std::sync::mpsc::channel();
    let opening = url.clone();
    std::thread::spawn(move || {
        let _ = sender.send(PgStore::open(&opening).err().map(|error| error.to_string()));
    });
    let message = receiver
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("open still waiting after 60 s")
        .expect("no answer is an error");
    assert!(message.contains("did not answer within 1 s"), "{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    // Opened in the background, the first operation says the same.
    let store = PgStore::open_in_background(&url).expect("nothing asked yet");
    let message = store
        .export_thread(ThreadId::new())
        .expect_err("no answer")
        .to_string();
    assert!(message.contains("did not answer within 1 s"), "{message}");
}
