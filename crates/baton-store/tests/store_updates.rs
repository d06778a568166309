//! Whole-history thread creation, per-turn index updates, the on-disk id scan and the
//! context-message filter.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baton_protocol::{EventMsg, ResponseItem, RolloutItem, ThreadId};
use baton_store::{
    FileStore, ListQuery, LookupMethod, RolloutWriter, StoreError, ThreadOrigin, TurnRecord,
    is_context_message, read_rollout, summarize_rollout,
};
use common::{assistant_item, meta, meta_line, user_item, write_file};

fn new_store() -> (tempfile::TempDir, FileStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::open(&dir.path().join("home")).expect("open store");
    (dir, store)
}

fn file_names(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .expect("read folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn listed_ids(store: &FileStore) -> Vec<ThreadId> {
    let mut ids: Vec<ThreadId> = store
        .list(&ListQuery::default())
        .expect("list")
        .threads
        .iter()
        .map(|thread| thread.id)
        .collect();
    ids.sort();
    ids
}

fn imported_history() -> Vec<RolloutItem> {
    vec![
        RolloutItem::ResponseItem(ResponseItem::user_message("port the parser")),
        RolloutItem::EventMsg(EventMsg::UserMessage {
            message: "port the parser".into(),
        }),
        RolloutItem::ResponseItem(ResponseItem::assistant_message("ported it")),
        RolloutItem::EventMsg(EventMsg::AgentMessage {
            message: "ported it".into(),
        }),
    ]
}

#[test]
fn a_thread_created_with_history_appears_whole_and_indexed() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let meta = meta(id, Path::new("/work/imported"));
    let items = imported_history();

    let path = store
        .create_thread_with_history(&meta, &items)
        .expect("create with history");

    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("rollout-") && name.ends_with(&format!("-{id}.jsonl")),
        "{name}"
    );
    assert!(path.starts_with(store.sessions_dir()));
    assert_eq!(
        std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
        0o600
    );
    // Only the transcript is left in its folder: the temporary copy was renamed.
    let folder = path.parent().expect("day folder");
    assert_eq!(file_names(folder), [name]);

    let loaded = read_rollout(&path).expect("read");
    assert_eq!(loaded.meta, meta);
    assert_eq!(
        loaded.history,
        vec![
            ResponseItem::user_message("port the parser"),
            ResponseItem::assistant_message("ported it"),
        ]
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);

    let located = store.locate(id).expect("locate");
    assert_eq!(located.path, path);
    assert_eq!(located.via, LookupMethod::Index);
    store.reindex().expect("reindex");
    let page = store.list(&ListQuery::default()).expect("list");
    let row = page.threads.iter().find(|t| t.id == id).expect("listed");
    assert_eq!(row.first_user_message.as_deref(), Some("port the parser"));
    assert_eq!(row.last_agent_message.as_deref(), Some("ported it"));
    assert_eq!(row.turns, 1);
}

#[test]
fn the_index_row_of_a_thread_created_with_history_is_filled_without_a_reindex() {
    let (_dir, store) = new_store();
    // Make the index complete so listing does not rebuild it from the files.
    store.reindex().expect("reindex");
    let id = ThreadId::new();
    store
        .create_thread_with_history(&meta(id, Path::new("/w")), &imported_history())
        .expect("create");
    let page = store
        .list(&ListQuery {
            text: Some("parser".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(page.threads.len(), 1);
    assert_eq!(page.threads[0].id, id);
    assert_eq!(page.threads[0].turns, 1);
    assert_eq!(
        page.threads[0].last_agent_message.as_deref(),
        Some("ported it")
    );
}

#[test]
fn creating_a_thread_with_history_twice_fails_and_keeps_the_first_copy() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let meta = meta(id, Path::new("/w"));
    let path = store
        .create_thread_with_history(&meta, &imported_history())
        .expect("create");
    let before = std::fs::read(&path).expect("read");
    let error = store
        .create_thread_with_history(&meta, &[])
        .expect_err("already exists");
    assert!(
        matches!(&error, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(file_names(path.parent().expect("folder")).len(), 1);
}

#[test]
fn a_temporary_copy_left_by_a_crash_is_ignored_and_then_replaced() {
    let (_dir, store) = new_store();
    let (done, done_path) = {
        let id = ThreadId::new();
        let path = store
            .create_thread_with_history(&meta(id, Path::new("/w")), &imported_history())
            .expect("create");
        (id, path)
    };
    // A crash while copying thread `crashed` left its temporary file, cut mid-line, in the
    // folder its id names (where a lookup by file name looks first).
    let crashed = ThreadId::new();
    let folder = done_path.parent().expect("day folder");
    let final_name = done_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .replace(&done.to_string(), &crashed.to_string());
    let leftover = folder.join(format!(".{final_name}.tmp"));
    let mut text = meta_line(crashed, "/w");
    text.push_str(&user_item("half a"));
    text.push_str(r#"{"timestamp":"2026-01-02T03:04:05.678Z","type":"resp"#);
    write_file(&leftover, text.as_bytes());

    assert!(matches!(
        store.locate(crashed),
        Err(StoreError::NotFound { .. })
    ));
    let report = store.reindex().expect("reindex");
    assert_eq!(report.found, 1);
    assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);
    assert_eq!(listed_ids(&store), [done]);
    assert_eq!(store.thread_ids_on_disk(), HashSet::from([done]));
    // Still not found when the index is gone and every lookup goes by file name.
    let home = store.home().to_path_buf();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    let store = FileStore::open(&home).expect("reopen");
    assert!(matches!(
        store.locate(crashed),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(listed_ids(&store), [done]);

    // Creating the thread again (the retry after the crash) replaces the leftover.
    let mut retry_meta = meta(crashed, Path::new("/w"));
    retry_meta.timestamp = meta(done, Path::new("/w")).timestamp;
    let path = store
        .create_thread_with_history(&retry_meta, &imported_history())
        .expect("retry");
    assert_eq!(folder.join(final_name), path);
    assert!(!leftover.exists());
    assert_eq!(
        read_rollout(&path).expect("read").history.len(),
        2,
        "the new copy is whole"
    );
}

/// Writes one turn the way baton-core does, and returns its record.
fn write_turn(
    writer: &mut RolloutWriter,
    id: ThreadId,
    prompt: &str,
    answer: Option<&str>,
) -> TurnRecord {
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message(
            prompt,
        )))
        .expect("append");
    writer
        .append(&RolloutItem::EventMsg(EventMsg::UserMessage {
            message: prompt.into(),
        }))
        .expect("append");
    if let Some(answer) = answer {
        writer
            .append(&RolloutItem::ResponseItem(ResponseItem::assistant_message(
                answer,
            )))
            .expect("append");
        writer
            .append(&RolloutItem::EventMsg(EventMsg::AgentMessage {
                message: answer.into(),
            }))
            .expect("append");
    } else {
        writer
            .append(&RolloutItem::EventMsg(EventMsg::Error {
                message: "the model failed".into(),
            }))
            .expect("append");
    }
    TurnRecord {
        id,
        path: writer.path().to_path_buf(),
        cwd: PathBuf::from("/work/project"),
        created_at: id.created_at().expect("v7 id"),
        model: Some("gpt-test".into()),
        source: ThreadOrigin::Baton,
        user_message: Some(prompt.into()),
        agent_message: answer.map(str::to_owned),
    }
}

/// The index row as stored, read straight from the database (listing may rebuild the index
/// first, which would hide what `record_turn` wrote).
struct Row {
    first_user_message: Option<String>,
    last_agent_message: Option<String>,
    turns: u32,
    cwd: String,
    model: Option<String>,
    source: String,
    search_text: String,
}

fn stored_row(store: &FileStore, id: ThreadId) -> Option<Row> {
    let connection = rusqlite::Connection::open(store.index_path()).expect("open index");
    let mut statement = connection
        .prepare(
            "SELECT first_user_message, last_agent_message, turns, cwd, model, source,
                    search_text FROM threads WHERE id = ?1",
        )
        .expect("prepare");
    let mut rows = statement
        .query_map([id.to_string()], |row| {
            Ok(Row {
                first_user_message: row.get(0)?,
                last_agent_message: row.get(1)?,
                turns: row.get(2)?,
                cwd: row.get(3)?,
                model: row.get(4)?,
                source: row.get(5)?,
                search_text: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
            })
        })
        .expect("query");
    rows.next().map(|row| row.expect("row"))
}

fn assert_row_matches_the_file(store: &FileStore, id: ThreadId, path: &Path) {
    let row = stored_row(store, id).expect("a row");
    let summary = summarize_rollout(path).expect("summary");
    assert_eq!(row.first_user_message, summary.first_user_message);
    assert_eq!(row.last_agent_message, summary.last_agent_message);
    assert_eq!(row.turns, summary.turns);
    assert_eq!(Path::new(&row.cwd), summary.cwd);
    assert_eq!(row.model, summary.model);
    assert_eq!(row.source, summary.source.as_str());
}

#[test]
fn record_turn_keeps_the_row_equal_to_what_reindex_computes() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/work/project")))
        .expect("create");
    store
        .reindex()
        .expect("reindex: the index is complete from here on");

    let turns = [
        ("first prompt", Some("an answer about the zanzibar parser")),
        ("second prompt", Some("the second answer")),
        // A failed turn: no answer, so the previous one stays the last.
        ("third prompt", None),
    ];
    for (prompt, answer) in turns {
        let turn = write_turn(&mut writer, id, prompt, answer);
        store.record_turn(&turn).expect("record turn");
    }

    let row = stored_row(&store, id).expect("a row");
    assert_eq!(row.first_user_message.as_deref(), Some("first prompt"));
    assert_eq!(row.last_agent_message.as_deref(), Some("the second answer"));
    assert_eq!(row.turns, 3);
    assert!(row.search_text.contains("zanzibar"), "{}", row.search_text);
    assert_row_matches_the_file(&store, id, writer.path());

    let found = store
        .list(&ListQuery {
            text: Some("ZANZIBAR".into()),
            ..Default::default()
        })
        .expect("search");
    assert_eq!(found.threads.len(), 1);
    assert_eq!(found.threads[0].id, id);
    assert_eq!(found.threads[0].turns, 3);

    // A reindex computes the same row.
    store.reindex().expect("reindex");
    let reindexed = store.list(&ListQuery::default()).expect("list");
    let again = reindexed.threads.iter().find(|t| t.id == id).expect("row");
    assert_eq!(again.first_user_message.as_deref(), Some("first prompt"));
    assert_eq!(
        again.last_agent_message.as_deref(),
        Some("the second answer")
    );
    assert_eq!(again.turns, 3);
}

#[test]
fn record_turn_clips_long_messages_like_a_summary_does() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/work/project")))
        .expect("create");
    let long = "é".repeat(baton_store::SUMMARY_TEXT_LIMIT);
    let turn = write_turn(&mut writer, id, &long, Some(&long));
    store.record_turn(&turn).expect("record turn");
    assert_row_matches_the_file(&store, id, writer.path());
    let row = stored_row(&store, id).expect("row");
    assert!(row.first_user_message.expect("first").len() <= baton_store::SUMMARY_TEXT_LIMIT + 3);
}

#[test]
fn record_turn_without_a_row_summarises_the_file_instead() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/work/project")))
        .expect("create");
    for (prompt, answer) in [
        ("first prompt", "first answer"),
        ("second prompt", "second answer"),
    ] {
        let turn = write_turn(&mut writer, id, prompt, Some(answer));
        store.record_turn(&turn).expect("record turn");
    }
    // The index is lost while the thread is open; then the thread goes on.
    let home = store.home().to_path_buf();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    let store = FileStore::open(&home).expect("reopen");
    let turn = write_turn(&mut writer, id, "third prompt", Some("third answer"));
    store.record_turn(&turn).expect("record turn");

    let row = stored_row(&store, id).expect("a row");
    assert_eq!(row.first_user_message.as_deref(), Some("first prompt"));
    assert_eq!(row.last_agent_message.as_deref(), Some("third answer"));
    assert_eq!(row.turns, 3);
    assert!(row.search_text.contains("first answer"));
    assert_row_matches_the_file(&store, id, writer.path());
}

#[test]
fn record_turn_with_an_unusable_index_is_not_an_error() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/p")))
        .expect("create");
    let turn = write_turn(&mut writer, id, "a prompt", Some("an answer"));
    // The index path is now a folder: it can be neither opened nor moved aside and recreated.
    let index = store.index_path().to_path_buf();
    let home = store.home().to_path_buf();
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(home.join(format!("state.sqlite{suffix}")));
    }
    std::fs::create_dir(&index).expect("block the index path");
    let store = FileStore::open(&home).expect("reopen");
    store.record_turn(&turn).expect("the index is only a cache");
}

#[test]
fn thread_ids_on_disk_come_from_file_names_alone() {
    let (_dir, store) = new_store();
    let a = store
        .create_thread(&meta(ThreadId::new(), Path::new("/a")))
        .expect("create");
    let b = ThreadId::new();
    store
        .create_thread_with_history(&meta(b, Path::new("/b")), &[])
        .expect("create");
    let sessions = store.sessions_dir();
    // Names are all that count: this file is not even a transcript inside.
    let codex = ThreadId::new();
    write_file(
        &sessions.join(format!(
            "2025/05/07/rollout-2025-05-07T17-24-21-{codex}.jsonl"
        )),
        b"not json\n",
    );
    for stray in [
        "2025/05/07/notes.txt".to_owned(),
        "2025/05/07/rollout-2025-05-07T17-24-21-not-a-uuid.jsonl".to_owned(),
        format!(
            "2025/05/07/.rollout-2025-05-07T17-24-21-{}.jsonl.tmp",
            ThreadId::new()
        ),
        format!(
            "2025/05/07/rollout-2025-05-07T17-24-21-{}.jsonl.bak",
            ThreadId::new()
        ),
        format!(
            "2025/05/07/rollout-2025-05-07T17-24-21x{}.jsonl",
            ThreadId::new()
        ),
    ] {
        write_file(&sessions.join(stray), b"{}\n");
    }

    let a_id = read_rollout(a.path()).expect("read").meta.id;
    assert_eq!(store.thread_ids_on_disk(), HashSet::from([a_id, b, codex]));
}

#[test]
fn thread_ids_on_disk_of_an_empty_store_is_empty() {
    let (_dir, store) = new_store();
    assert!(store.thread_ids_on_disk().is_empty());
}

#[test]
fn context_messages_are_recognised() {
    for text in [
        "<environment_context>\n  <cwd>/p</cwd>\n</environment_context>",
        "  <user_instructions>be brief</user_instructions>",
        "# AGENTS.md instructions for /p",
        "Summary of the earlier conversation (compacted by baton):\nwe did things",
        "\nSummary of the earlier conversation (compacted by baton):\nwe did things",
    ] {
        assert!(is_context_message(text), "{text}");
    }
    for text in [
        "fix the parser",
        "Summary of the earlier conversation, please",
        "what does <environment_context> mean?",
    ] {
        assert!(!is_context_message(text), "{text}");
    }
}

#[test]
fn a_compaction_summary_is_neither_the_first_prompt_nor_a_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ThreadId::new();
    // A transcript with response items only (no user_message events), so the summary
    // counts prompts from the items.
    let mut text = meta_line(id, "/p");
    text.push_str(&user_item(
        "Summary of the earlier conversation (compacted by baton):\nwe fixed the lexer",
    ));
    text.push_str(&user_item("now the parser"));
    text.push_str(&assistant_item("done"));
    let path = write_file(
        &dir.path()
            .join(format!("rollout-2026-01-02T03-04-05-{id}.jsonl")),
        text.as_bytes(),
    );
    let summary = summarize_rollout(&path).expect("summary");
    assert_eq!(
        summary.first_user_message.as_deref(),
        Some("now the parser")
    );
    assert_eq!(summary.turns, 1);
    // Its text is still searchable.
    assert!(summary.search_text.contains("lexer"));
}

#[test]
fn a_fork_keeps_its_first_prompt_after_it_is_continued() {
    let (_dir, store) = new_store();
    let id = ThreadId::new();
    // A fork: the history as items only, then a turn written as baton writes it.
    let mut items: Vec<RolloutItem> = ["copied one", "copied two"]
        .into_iter()
        .map(|text| RolloutItem::ResponseItem(ResponseItem::user_message(text)))
        .collect();
    items.push(RolloutItem::ResponseItem(ResponseItem::user_message(
        "new turn",
    )));
    items.push(RolloutItem::EventMsg(EventMsg::UserMessage {
        message: "new turn".into(),
    }));
    let path = store
        .create_thread_with_history(&meta(id, Path::new("/p")), &items)
        .expect("create");
    let summary = baton_store::summarize_rollout(&path).expect("summary");
    assert_eq!(summary.first_user_message.as_deref(), Some("copied one"));
    assert_eq!(summary.turns, 3);
}
