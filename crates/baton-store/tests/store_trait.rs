//! What every `Store` promises, checked on the files store and on the in-memory double alike,
//! so a test that runs on the double says something about baton on real files.

mod common;

use std::path::Path;

use baton_protocol::{Compacted, EventMsg, ResponseItem, RolloutItem, ThreadId};
use baton_store::{FileStore, ListQuery, MemoryStore, Store, StoreError};
use common::meta;

fn both(check: impl Fn(&dyn Store)) {
    let dir = tempfile::tempdir().expect("tempdir");
    check(&FileStore::open(&dir.path().join("home")).expect("open store"));
    check(&MemoryStore::new());
}

fn user(text: &str) -> RolloutItem {
    RolloutItem::ResponseItem(ResponseItem::user_message(text))
}

#[test]
fn a_thread_is_created_appended_to_and_read_back_from_its_newest_compaction() {
    both(|store| {
        let id = ThreadId::new();
        let mut writer = store
            .create_thread(&meta(id, Path::new("/work/p")))
            .expect("create");
        writer.append(&user("before")).expect("append");
        writer
            .append(&RolloutItem::Compacted(Compacted {
                message: "summary".into(),
                replacement_history: Some(vec![ResponseItem::user_message("summary")]),
            }))
            .expect("append");
        writer.append(&user("after")).expect("append");
        writer.sync().expect("sync");

        let loaded = store.read_thread(id).expect("read");
        assert_eq!(loaded.meta.id, id);
        let texts: Vec<String> = loaded
            .history
            .iter()
            .filter_map(|item| item.message_text().map(|(_, text)| text))
            .collect();
        assert_eq!(texts, ["summary", "after"]);
        assert_eq!(loaded.file_len, writer.len());

        // Reopened for appending, the writer starts where the transcript ends.
        let mut again = store.append_to(id).expect("append_to");
        assert_eq!(again.len(), writer.len());
        again
            .append(&RolloutItem::EventMsg(EventMsg::AgentMessage {
                message: "done".into(),
            }))
            .expect("append");
        let exported = store.export_thread(id).expect("export");
        let kinds: Vec<String> = exported
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).expect("a whole line");
                value["type"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "session_meta",
                "response_item",
                "compacted",
                "response_item",
                "event_msg"
            ]
        );
    });
}

#[test]
fn a_thread_with_a_whole_history_is_listed_and_found_by_its_text() {
    both(|store| {
        let id = ThreadId::new();
        let writer = store
            .create_thread_with_history(
                &meta(id, Path::new("/work/q")),
                &[
                    user("find the needle"),
                    RolloutItem::ResponseItem(ResponseItem::assistant_message("found")),
                ],
            )
            .expect("create");
        assert!(!writer.is_empty());
        let other = ThreadId::new();
        store
            .create_thread(&meta(other, Path::new("/work/q")))
            .expect("create");

        assert_eq!(store.thread_ids(), [id, other].into_iter().collect());
        let page = store
            .list(&ListQuery {
                text: Some("NEEDLE".into()),
                ..Default::default()
            })
            .expect("list");
        let ids: Vec<ThreadId> = page.threads.iter().map(|t| t.id).collect();
        assert_eq!(ids, [id]);
        assert_eq!(
            page.threads[0].first_user_message.as_deref(),
            Some("find the needle")
        );
        // A thread id is created once.
        assert!(
            store
                .create_thread(&meta(id, Path::new("/work/q")))
                .is_err()
        );
    });
}

#[test]
fn an_unknown_thread_is_not_found_by_any_way_in() {
    both(|store| {
        let id = ThreadId::new();
        assert!(matches!(
            store.read_thread(id),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.append_to(id),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.export_thread(id),
            Err(StoreError::NotFound { .. })
        ));
    });
}

#[test]
fn a_held_thread_is_busy_until_its_guard_goes() {
    both(|store| {
        let id = ThreadId::new();
        let guard = store.lock_thread(id).expect("lock");
        match store.lock_thread(id) {
            Err(StoreError::Busy { id: busy, pid, .. }) => {
                assert_eq!(busy, id);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(guard);
        store.lock_thread(id).expect("free again").release_unused();
        store.lock_thread(id).expect("free after release_unused");
    });
}

#[test]
fn the_memory_store_names_the_other_process_holding_a_thread() {
    let store = MemoryStore::new();
    let other = store.as_process(4242);
    let id = ThreadId::new();
    let _held = other.lock_thread(id).expect("lock");
    let busy = store.lock_thread(id).expect_err("busy");
    assert!(busy.to_string().contains("in process 4242"), "{busy}");
}

#[test]
fn the_files_store_exports_whole_lines_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(&dir.path().join("home")).expect("open store");
    let id = ThreadId::new();
    let mut writer = FileStore::create_thread(&store, &meta(id, Path::new("/w"))).expect("create");
    writer.append(&user("whole")).expect("append");
    let whole = std::fs::read_to_string(writer.path()).expect("read");
    std::fs::OpenOptions::new()
        .append(true)
        .open(writer.path())
        .and_then(|mut file| std::io::Write::write_all(&mut file, br#"{"timestamp":"2026"#))
        .expect("tear the last line");
    assert_eq!(Store::export_thread(&store, id).expect("export"), whole);
}
