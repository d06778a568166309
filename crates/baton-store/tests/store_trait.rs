//! What every `Store` promises, checked on the files store and on the in-memory double alike,
//! so a test that runs on the double says something about baton on real files.

mod common;

use std::path::Path;

use baton_protocol::{ResponseItem, RolloutItem, ThreadId};
use baton_store::{FileStore, MemoryStore, Store, contract};
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
    both(contract::a_thread_is_created_appended_to_and_read_back_from_its_newest_compaction);
}

#[test]
fn a_thread_with_a_whole_history_is_listed_and_found_by_its_text() {
    both(contract::a_thread_with_a_whole_history_is_listed_and_found_by_its_text);
}

#[test]
fn an_unknown_thread_is_not_found_by_any_way_in() {
    both(contract::an_unknown_thread_is_not_found_by_any_way_in);
}

#[test]
fn a_held_thread_is_busy_until_its_guard_goes() {
    both(contract::a_held_thread_is_busy_until_its_guard_goes);
}

#[test]
fn a_transcript_imports_byte_for_byte_and_once() {
    both(contract::a_transcript_imports_byte_for_byte_and_once);
}

#[test]
fn lines_appended_together_keep_their_order_and_their_compaction() {
    both(contract::lines_appended_together_keep_their_order_and_their_compaction);
}

#[test]
fn reindex_keeps_the_search_text_the_turns_wrote() {
    both(contract::reindex_keeps_the_search_text_the_turns_wrote);
}

/// The list above and [`contract::ALL`] (which the PostgreSQL store runs) stay one list.
#[test]
fn every_contract_check_runs_on_both_stores_here() {
    let this_file = include_str!("store_trait.rs");
    for (name, _) in contract::ALL {
        assert!(
            this_file.contains(&format!("both(contract::{name})")),
            "contract check {name} is not run on the files and memory stores"
        );
    }
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
