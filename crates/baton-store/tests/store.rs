mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baton_protocol::{EventMsg, ResponseItem, RolloutItem, ThreadId};
use baton_store::{
    FileStore, ListQuery, LookupMethod, RolloutWriter, StoreError, ThreadOrigin, ThreadSummary,
    read_rollout,
};
use chrono::{DateTime, Utc};
use common::{id_days_ago, meta, write_file};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn new_store() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(&dir.path().join("home")).expect("open store");
    (dir, store)
}

fn create(store: &FileStore, cwd: &str) -> (ThreadId, PathBuf) {
    let id = ThreadId::new();
    let writer = store
        .create_thread(&meta(id, Path::new(cwd)))
        .expect("create thread");
    (id, writer.path().to_path_buf())
}

#[test]
fn create_append_read_round_trip() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let cwd = PathBuf::from("/work/project");
    let mut writer = store.create_thread(&meta(id, &cwd)).expect("create");
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message(
            "hello",
        )))
        .expect("append");
    writer
        .append(&RolloutItem::EventMsg(EventMsg::AgentMessage {
            message: "hi".into(),
        }))
        .expect("append");
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::assistant_message(
            "hi",
        )))
        .expect("append");
    writer.sync().expect("sync");

    let loaded = read_rollout(writer.path()).expect("read");
    assert_eq!(loaded.meta, meta(id, &cwd));
    assert_eq!(
        loaded.history,
        vec![
            ResponseItem::user_message("hello"),
            ResponseItem::assistant_message("hi")
        ]
    );
    assert_eq!(loaded.file_len, writer.len());
    assert_eq!(
        std::fs::metadata(writer.path()).expect("stat").len(),
        writer.len()
    );
}

#[test]
fn file_name_and_folders_follow_codex_layout_in_local_time() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let meta = meta(id, Path::new("/p"));
    let writer = store.create_thread(&meta).expect("create");
    let started: DateTime<chrono::Local> = DateTime::parse_from_rfc3339(&meta.timestamp)
        .expect("timestamp")
        .with_timezone(&chrono::Local);
    let expected = store
        .sessions_dir()
        .join(started.format("%Y/%m/%d").to_string())
        .join(format!(
            "rollout-{}-{id}.jsonl",
            started.format("%Y-%m-%dT%H-%M-%S")
        ));
    assert_eq!(writer.path(), expected);
}

#[test]
fn written_lines_have_exactly_timestamp_type_payload() {
    let (_dir, store) = new_store();
    let (_, path) = create(&store, "/p");
    let mut writer = RolloutWriter::open_append(&path).expect("open");
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message("x")))
        .expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 2);
    for line in text.lines() {
        assert!(line.starts_with(r#"{"timestamp":""#), "{line}");
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        let object = value.as_object().expect("object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{line}");
        for key in ["timestamp", "type", "payload"] {
            assert!(object.contains_key(key), "{line}");
        }
        let timestamp = object["timestamp"].as_str().expect("string");
        // 2026-11-25T14:02:11.123Z: exactly three decimals, UTC.
        assert_eq!(timestamp.len(), 24, "{timestamp}");
        assert!(
            timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
            "{timestamp}"
        );
        assert!(DateTime::parse_from_rfc3339(timestamp).is_ok());
    }
    let type_pos = text
        .lines()
        .nth(1)
        .expect("line")
        .find(r#""type":"#)
        .expect("type");
    let payload_pos = text
        .lines()
        .nth(1)
        .expect("line")
        .find(r#""payload":"#)
        .expect("payload");
    assert!(type_pos < payload_pos);
}

#[test]
fn folders_are_0700_and_files_0600() {
    let (dir, store) = new_store();
    let (id, path) = create(&store, "/p");
    assert_eq!(mode(&dir.path().join("home")), 0o700);
    assert_eq!(mode(&store.sessions_dir()), 0o700);
    let mut folder = path.parent().expect("day");
    while folder != store.sessions_dir() {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
        folder = folder.parent().expect("parent");
    }
    assert_eq!(mode(&path), 0o600);
    let lock = store.lock_thread(id).expect("lock");
    assert_eq!(mode(lock.path()), 0o600);
    assert_eq!(mode(lock.path().parent().expect("locks")), 0o700);
}

#[test]
fn open_append_repairs_a_torn_last_line() {
    let (_dir, store) = new_store();
    let (_, path) = create(&store, "/p");
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(br#"{"timestamp":"2026-01-01T00:00:00.000Z","type":"respo"#)
            .expect("torn write");
    }
    let mut writer = RolloutWriter::open_append(&path).expect("open append");
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message(
            "after crash",
        )))
        .expect("append");
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(lines[1]).is_err());
    assert!(
        serde_json::from_str::<serde_json::Value>(lines[2]).is_ok(),
        "{}",
        lines[2]
    );
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(
        loaded.history,
        vec![ResponseItem::user_message("after crash")]
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("line 2"));

    // A file that already ends in a newline gets nothing extra.
    let before = std::fs::metadata(&path).expect("stat").len();
    let writer = RolloutWriter::open_append(&path).expect("open again");
    assert_eq!(writer.len(), before);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), before);
}

#[test]
fn lookup_via_index() {
    let (_dir, store) = new_store();
    let (id, path) = create(&store, "/p");
    let located = store.locate(id).expect("locate");
    assert_eq!(located.path, path);
    assert_eq!(located.via, LookupMethod::Index);
}

#[test]
fn lookup_via_day_folder_with_the_index_deleted_then_index_again() {
    let (_dir, store) = new_store();
    let (id, path) = create(&store, "/p");
    drop(store);
    let home = path.ancestors().nth(5).expect("home").to_path_buf();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    let store = FileStore::open(&home).expect("reopen");
    let located = store.locate(id).expect("locate");
    assert_eq!(located.path, path);
    assert_eq!(located.via, LookupMethod::DayFolder);
    assert_eq!(store.locate(id).expect("again").via, LookupMethod::Index);
}

#[test]
fn lookup_via_full_scan_for_a_file_in_a_wrong_day_folder() {
    let (_dir, store) = new_store();
    let id = id_days_ago(40);
    let wrong = store
        .sessions_dir()
        .join("2001/02/03")
        .join(format!("rollout-2001-02-03T00-00-00-{id}.jsonl"));
    write_file(&wrong, common::meta_line(id, "/old").as_bytes());
    let located = store.locate(id).expect("locate");
    assert_eq!(located.via, LookupMethod::FullScan);
    assert_eq!(located.path, wrong);
    assert_eq!(store.locate(id).expect("again").via, LookupMethod::Index);
}

#[test]
fn unknown_id_names_the_id_and_the_folder() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let error = store.locate(id).expect_err("unknown");
    let message = error.to_string();
    assert!(matches!(error, StoreError::NotFound { .. }));
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains(&store.sessions_dir().display().to_string()),
        "{message}"
    );
}

#[test]
fn garbage_index_is_replaced_and_the_thread_still_found() {
    let (_dir, store) = new_store();
    let (id, path) = create(&store, "/p");
    let home = store.home().to_path_buf();
    drop(store);
    std::fs::write(home.join("state.sqlite"), vec![0x42u8; 8192]).expect("garbage");
    let store = FileStore::open(&home).expect("reopen");
    let located = store.locate(id).expect("locate");
    assert_eq!(located.path, path);
    assert_eq!(located.via, LookupMethod::DayFolder);
    assert_eq!(store.locate(id).expect("again").via, LookupMethod::Index);
    let page = store.list(&ListQuery::default()).expect("list");
    assert_eq!(page.threads.len(), 1);
}

#[test]
fn an_index_with_a_foreign_schema_is_replaced() {
    let (_dir, store) = new_store();
    let (id, _) = create(&store, "/p");
    let home = store.home().to_path_buf();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    let connection = rusqlite::Connection::open(home.join("state.sqlite")).expect("sqlite");
    connection
        .execute_batch("CREATE TABLE threads (id TEXT, something_else TEXT);")
        .expect("foreign schema");
    drop(connection);
    let store = FileStore::open(&home).expect("reopen");
    assert_eq!(
        store.locate(id).expect("locate").via,
        LookupMethod::DayFolder
    );
    assert_eq!(store.locate(id).expect("again").via, LookupMethod::Index);
}

fn point_index_at(store: &FileStore, id: ThreadId, path: &Path) {
    store
        .record_thread(&ThreadSummary {
            id,
            path: path.to_path_buf(),
            cwd: "/p".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            first_user_message: None,
            last_agent_message: None,
            model: None,
            turns: 0,
            source: ThreadOrigin::Baton,
            search_text: String::new(),
            owner: None,
        })
        .expect("record");
}

#[test]
fn index_paths_outside_the_sessions_folder_are_ignored() {
    let (dir, store) = new_store();
    let (id, path) = create(&store, "/p");
    let outside = dir
        .path()
        .join(format!("rollout-2026-01-01T00-00-00-{id}.jsonl"));
    std::fs::copy(&path, &outside).expect("copy outside");
    point_index_at(&store, id, &outside);
    let located = store.locate(id).expect("locate");
    assert_eq!(located.path, path);
    assert_eq!(located.via, LookupMethod::DayFolder);
}

#[test]
fn a_symlink_escaping_the_sessions_folder_is_ignored() {
    let (dir, store) = new_store();
    let id = ThreadId::new();
    let outside = write_file(
        &dir.path()
            .join("elsewhere")
            .join(format!("rollout-x-{id}.jsonl")),
        common::meta_line(id, "/p").as_bytes(),
    );
    let day = store.sessions_dir().join("2026/01/01");
    std::fs::create_dir_all(&day).expect("day");
    let link = day.join(format!("rollout-2026-01-01T00-00-00-{id}.jsonl"));
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    // A symlinked folder escaping the tree is not walked either.
    std::os::unix::fs::symlink(
        outside.parent().expect("dir"),
        store.sessions_dir().join("2025"),
    )
    .expect("dir symlink");

    point_index_at(&store, id, &link);
    let error = store
        .locate(id)
        .expect_err("escaping symlink must not be used");
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
}

#[test]
fn lock_is_exclusive_even_within_one_process_and_names_the_pid() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let first = store.lock_thread(id).expect("first lock");
    let error = store.lock_thread(id).expect_err("second lock must fail");
    let message = error.to_string();
    match &error {
        StoreError::Busy {
            id: busy_id,
            pid,
            since,
            ..
        } => {
            assert_eq!(*busy_id, id);
            assert_eq!(*pid, Some(std::process::id()));
            assert!(since.is_some());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(message.contains("busy"), "{message}");
    assert!(message.contains(&id.to_string()), "{message}");
    assert!(
        message.contains(&std::process::id().to_string()),
        "{message}"
    );
    drop(first);
    let again = store.lock_thread(id).expect("free after drop");
    assert_eq!(again.id(), id);
    // Another thread is unaffected.
    store.lock_thread(ThreadId::new()).expect("other thread");
}

fn summary_at(store: &FileStore, id: ThreadId, cwd: &str, minutes: i64, first: &str, last: &str) {
    let path = store.locate(id).expect("locate").path;
    store
        .record_thread(&ThreadSummary {
            id,
            path,
            cwd: cwd.into(),
            created_at: Utc::now(),
            updated_at: DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("time"),
            first_user_message: Some(first.into()),
            last_agent_message: Some(last.into()),
            model: Some("m".into()),
            turns: 1,
            source: ThreadOrigin::Baton,
            search_text: format!("{first}\nmiddle answer of {cwd} {minutes}\n{last}"),
            owner: None,
        })
        .expect("record");
}

#[test]
fn list_orders_filters_and_pages_exactly_once() {
    let (_dir, store) = new_store();
    store.reindex().expect("mark the index complete");
    let mut ids = Vec::new();
    for n in 0..7 {
        let cwd = if n % 2 == 0 { "/even" } else { "/odd/" };
        let (id, _) = create(&store, cwd);
        // Two threads share an update time, so paging must break ties.
        let minutes = if n == 3 { 2 } else { n };
        summary_at(
            &store,
            id,
            cwd,
            minutes,
            &format!("Prompt {n}"),
            &format!("answer {n}"),
        );
        ids.push(id);
    }

    let all = store
        .list(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .expect("list");
    assert_eq!(all.threads.len(), 7);
    assert!(all.next_cursor.is_none());
    let times: Vec<_> = all.threads.iter().map(|t| t.updated_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(all.threads[0].id, ids[6]);

    // A time range: minutes 4 and 5 (inclusive start, exclusive end).
    let at =
        |minutes: i64| DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("time");
    let range = store
        .list(&ListQuery {
            updated_after: Some(at(4)),
            updated_before: Some(at(6)),
            ..ListQuery::default()
        })
        .expect("list");
    let range_ids: Vec<_> = range.threads.iter().map(|t| t.id).collect();
    assert_eq!(range_ids, [ids[5], ids[4]]);

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&ListQuery {
                limit: 2,
                cursor: cursor.clone(),
                ..ListQuery::default()
            })
            .expect("page");
        assert!(page.threads.len() <= 2);
        seen.extend(page.threads.iter().map(|t| t.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<ThreadId> = all.threads.iter().map(|t| t.id).collect();
    assert_eq!(seen, expected);

    let odd = store
        .list(&ListQuery {
            cwd: Some("/odd".into()),
            ..ListQuery::default()
        })
        .expect("cwd filter");
    assert_eq!(odd.threads.len(), 3);
    assert!(odd.threads.iter().all(|t| t.cwd == Path::new("/odd")));

    let text = store
        .list(&ListQuery {
            text: Some("prompt 4".into()),
            ..ListQuery::default()
        })
        .expect("text filter");
    assert_eq!(
        text.threads.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[4]]
    );
    let answer = store
        .list(&ListQuery {
            text: Some("ANSWER 5".into()),
            ..ListQuery::default()
        })
        .expect("text filter on answers");
    assert_eq!(
        answer.threads.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[5]]
    );

    let error = store
        .list(&ListQuery {
            cursor: Some("../../etc".into()),
            ..ListQuery::default()
        })
        .expect_err("bad cursor");
    assert!(matches!(error, StoreError::InvalidCursor { .. }));
}

#[test]
fn reindex_counts_files_and_reports_unreadable_ones() {
    let (_dir, store) = new_store();
    let (a, path_a) = create(&store, "/a");
    let (b, _) = create(&store, "/b");
    let mut writer = RolloutWriter::open_append(&path_a).expect("open");
    writer
        .append(&RolloutItem::EventMsg(EventMsg::UserMessage {
            message: "the prompt".into(),
        }))
        .expect("append");
    writer
        .append(&RolloutItem::EventMsg(EventMsg::AgentMessage {
            message: "the answer".into(),
        }))
        .expect("append");
    let junk = write_file(
        &store
            .sessions_dir()
            .join("2026/01/01/rollout-2026-01-01T00-00-00-junk.jsonl"),
        b"this is not json\n",
    );

    let report = store.reindex().expect("reindex");
    assert_eq!(report.found, 2);
    assert_eq!(report.unreadable.len(), 1);
    assert_eq!(report.unreadable[0].0, junk);
    assert!(report.unreadable[0].1.contains("not a session transcript"));

    let page = store.list(&ListQuery::default()).expect("list");
    let mut listed: Vec<ThreadId> = page.threads.iter().map(|t| t.id).collect();
    listed.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(listed, expected);
    let row_a = page.threads.iter().find(|t| t.id == a).expect("a");
    assert_eq!(row_a.first_user_message.as_deref(), Some("the prompt"));
    assert_eq!(row_a.last_agent_message.as_deref(), Some("the answer"));
    assert_eq!(row_a.turns, 1);
}

#[test]
fn listing_after_the_index_was_lost_rebuilds_it_from_the_files() {
    let (_dir, store) = new_store();
    let (a, _) = create(&store, "/a");
    let (b, _) = create(&store, "/b");
    let home = store.home().to_path_buf();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    let store = FileStore::open(&home).expect("reopen");
    let page = store.list(&ListQuery::default()).expect("list");
    let mut listed: Vec<ThreadId> = page.threads.iter().map(|t| t.id).collect();
    listed.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FileStore>();
    assert_send_sync::<RolloutWriter>();
}

#[test]
fn text_search_finds_a_word_that_only_an_earlier_answer_holds() {
    let (_dir, store) = new_store();
    let (wanted, path) = create(&store, "/p");
    let mut writer = RolloutWriter::open_append(&path).expect("open");
    for (kind, text) in [
        ("user", "first prompt"),
        ("agent", "an answer about the zanzibar parser"),
        ("user", "second prompt"),
        ("agent", "the last answer"),
    ] {
        let event = match kind {
            "user" => EventMsg::UserMessage {
                message: text.into(),
            },
            _ => EventMsg::AgentMessage {
                message: text.into(),
            },
        };
        writer
            .append(&RolloutItem::EventMsg(event))
            .expect("append");
    }
    writer.sync().expect("sync");
    let (_other, _) = create(&store, "/p");
    store.reindex().expect("reindex");

    let page = store
        .list(&ListQuery {
            text: Some("ZANZIBAR".into()),
            ..Default::default()
        })
        .expect("list");
    let ids: Vec<ThreadId> = page.threads.iter().map(|t| t.id).collect();
    assert_eq!(ids, [wanted]);
    assert_eq!(
        page.threads[0].last_agent_message.as_deref(),
        Some("the last answer")
    );
}

#[test]
fn a_released_lock_is_free_even_while_a_forked_child_holds_the_descriptor() {
    let (_dir, store) = new_store();
    let (id, _) = create(&store, "/p");
    let lock = store.lock_thread(id).expect("lock");
    // A child forked while the lock is held keeps a copy of its descriptor (as a command's
    // child does until it execs); `sleep` inherits nothing across exec, so use a raw fork.
    // SAFETY: the child only waits for its SIGKILL, with async-signal-safe calls.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            // Holds the descriptor until killed below, however long the relock takes.
            loop {
                libc::pause();
            }
        }
    }
    assert!(child > 0, "fork failed");
    drop(lock);
    let relocked = store.lock_thread(id);
    // SAFETY: reaping our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    relocked.expect("the lock is free once released, whatever children inherited");
}
