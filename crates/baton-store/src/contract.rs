//! What every [`Store`] promises, as functions over `&dyn Store` (feature `test-support`):
//! baton-store's tests run them on the files store and the in-memory one, and every other
//! implementation (PostgreSQL) runs the same bodies, so all stores keep one contract.
//!
//! They panic on a broken promise, like the tests they are.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use baton_protocol::{
    BaseInstructions, Compacted, EventMsg, ORIGINATOR, ResponseItem, RolloutItem, SessionMeta,
    SessionSource, ThreadId, format_timestamp,
};
use chrono::Utc;

use crate::{ListQuery, Store, StoreError, TranscriptWriter};

/// One contract check.
pub type Check = fn(&dyn Store);

/// Every contract check, by name, for a store to run one by one.
pub const ALL: &[(&str, Check)] = &[
    (
        "a_thread_is_created_appended_to_and_read_back_from_its_newest_compaction",
        a_thread_is_created_appended_to_and_read_back_from_its_newest_compaction,
    ),
    (
        "a_thread_with_a_whole_history_is_listed_and_found_by_its_text",
        a_thread_with_a_whole_history_is_listed_and_found_by_its_text,
    ),
    (
        "an_unknown_thread_is_not_found_by_any_way_in",
        an_unknown_thread_is_not_found_by_any_way_in,
    ),
    (
        "a_held_thread_is_busy_until_its_guard_goes",
        a_held_thread_is_busy_until_its_guard_goes,
    ),
    (
        "a_transcript_imports_byte_for_byte_and_once",
        a_transcript_imports_byte_for_byte_and_once,
    ),
    (
        "lines_appended_together_keep_their_order_and_their_compaction",
        lines_appended_together_keep_their_order_and_their_compaction,
    ),
    (
        "reindex_keeps_the_search_text_the_turns_wrote",
        reindex_keeps_the_search_text_the_turns_wrote,
    ),
];

/// A `session_meta` as baton writes it.
pub fn meta(id: ThreadId, cwd: &Path) -> SessionMeta {
    SessionMeta {
        id,
        timestamp: format_timestamp(id.created_at().unwrap_or_else(Utc::now)),
        cwd: cwd.to_path_buf(),
        originator: ORIGINATOR.to_owned(),
        cli_version: "0.1.0".to_owned(),
        source: SessionSource::Exec,
        model_provider: Some("openai".to_owned()),
        model: Some("gpt-test".to_owned()),
        base_instructions: Some(BaseInstructions {
            text: "be brief".to_owned(),
        }),
        developer_instructions: None,
        git: None,
        imported_from: None,
        forked_from: None,
        owner: None,
    }
}

fn user(text: &str) -> RolloutItem {
    RolloutItem::ResponseItem(ResponseItem::user_message(text))
}

/// A new thread in `cwd` holding `first`, a compaction that keeps only "summary", then "after".
fn thread_with_a_compaction(
    store: &dyn Store,
    cwd: &str,
    first: &str,
) -> (ThreadId, Box<dyn TranscriptWriter>) {
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new(cwd)))
        .expect("create");
    writer.append(&user(first)).expect("append");
    writer
        .append(&RolloutItem::Compacted(Compacted {
            message: "summary".into(),
            replacement_history: Some(vec![ResponseItem::user_message("summary")]),
        }))
        .expect("append");
    writer.append(&user("after")).expect("append");
    (id, writer)
}

/// The text of each message of a thread read back.
fn message_texts(loaded: &crate::LoadedRollout) -> Vec<String> {
    loaded
        .history
        .iter()
        .filter_map(|item| item.message_text().map(|(_, text)| text))
        .collect()
}

pub fn a_thread_is_created_appended_to_and_read_back_from_its_newest_compaction(store: &dyn Store) {
    let (id, mut writer) = thread_with_a_compaction(store, "/work/p", "before");
    writer.sync().expect("sync");

    let loaded = store.read_thread(id).expect("read");
    assert_eq!(loaded.meta.id, id);
    assert_eq!(message_texts(&loaded), ["summary", "after"]);
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
}

/// `append_all` writes its lines in order, as one; a compaction among them is where the next
/// rehydration starts, as it is when appended alone.
pub fn lines_appended_together_keep_their_order_and_their_compaction(store: &dyn Store) {
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/work/together")))
        .expect("create");
    writer.append(&user("alone")).expect("append");
    let before = writer.len();
    writer
        .append_all(&[
            user("first of three"),
            RolloutItem::Compacted(Compacted {
                message: "summary".into(),
                replacement_history: Some(vec![ResponseItem::user_message("summary")]),
            }),
            user("third of three"),
        ])
        .expect("append_all");
    writer.append_all(&[]).expect("nothing to append");
    writer.sync().expect("sync");

    let exported = store.export_thread(id).expect("export");
    assert_eq!(exported.len() as u64, writer.len(), "{exported}");
    assert!(writer.len() > before);
    let texts: Vec<String> = exported
        .lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a whole line");
            value["payload"]["content"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(texts, ["alone", "first of three", "third of three"]);
    let loaded = store.read_thread(id).expect("read");
    assert_eq!(message_texts(&loaded), ["summary", "third of three"]);
    assert_eq!(loaded.file_len, writer.len());
}

pub fn a_thread_with_a_whole_history_is_listed_and_found_by_its_text(store: &dyn Store) {
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
}

pub fn an_unknown_thread_is_not_found_by_any_way_in(store: &dyn Store) {
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
}

pub fn a_held_thread_is_busy_until_its_guard_goes(store: &dyn Store) {
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
}

pub fn a_transcript_imports_byte_for_byte_and_once(store: &dyn Store) {
    let (id, _writer) = thread_with_a_compaction(store, "/work/i", "carry me over");
    let exported = store.export_thread(id).expect("export");

    // The same id again is refused, naming it.
    let refused = store.import_thread(&exported).expect_err("the id exists");
    assert!(refused.to_string().contains(&id.to_string()), "{refused}");

    // Under another id (as from another store), every byte is kept.
    let other = ThreadId::new();
    let copy = exported.replace(&id.to_string(), &other.to_string());
    assert_eq!(store.import_thread(&copy).expect("import"), other);
    assert_eq!(store.export_thread(other).expect("export"), copy);
    let loaded = store.read_thread(other).expect("read");
    assert_eq!(message_texts(&loaded), ["summary", "after"]);
    assert_eq!(loaded.file_len, copy.len() as u64);

    // A transcript written with CRLF line ends (edited on Windows) keeps them too, so an
    // export, an import elsewhere and a second `migrate` all see the same bytes.
    let third = ThreadId::new();
    let crlf = exported
        .replace(&id.to_string(), &third.to_string())
        .replace('\n', "\r\n");
    assert_eq!(store.import_thread(&crlf).expect("import CRLF"), third);
    assert_eq!(store.export_thread(third).expect("export"), crlf);
    let loaded = store.read_thread(third).expect("read");
    assert_eq!(message_texts(&loaded), ["summary", "after"]);
}

/// `reindex` rebuilds the search text the turns wrote: a prompt and an answer are written
/// both as response items and as events, and count once, so long prompts do not push later
/// ones out of the bytes search covers.
pub fn reindex_keeps_the_search_text_the_turns_wrote(store: &dyn Store) {
    let id = ThreadId::new();
    let cwd = Path::new("/work/r");
    let mut writer = store.create_thread(&meta(id, cwd)).expect("create");
    // Two prompts of two fifths of the limit each: counted twice, the second one's end (the
    // only place "omega" is: not the first prompt, not the last answer) would be cut off.
    let filler = "word ".repeat(crate::SEARCH_TEXT_LIMIT * 2 / 25);
    for prompt in [format!("{filler} alpha"), format!("{filler} omega")] {
        let answer = "an answer";
        writer
            .append_all(&[
                user(&prompt),
                RolloutItem::EventMsg(EventMsg::UserMessage {
                    message: prompt.clone(),
                }),
                RolloutItem::ResponseItem(ResponseItem::assistant_message(answer)),
                RolloutItem::EventMsg(EventMsg::AgentMessage {
                    message: answer.into(),
                }),
            ])
            .expect("append");
        writer.sync().expect("sync");
        store
            .record_turn(&crate::TurnRecord {
                id,
                path: writer.path().to_path_buf(),
                cwd: cwd.to_path_buf(),
                created_at: Utc::now(),
                model: None,
                source: crate::ThreadOrigin::Baton,
                user_message: Some(prompt),
                agent_message: Some(answer.into()),
            })
            .expect("record");
    }
    let found = |store: &dyn Store| -> Vec<ThreadId> {
        let page = store
            .list(&ListQuery {
                text: Some("omega".into()),
                ..Default::default()
            })
            .expect("list");
        page.threads.iter().map(|t| t.id).collect()
    };
    assert_eq!(
        found(store),
        [id],
        "the second prompt is searchable after its turn"
    );
    store.reindex().expect("reindex");
    assert_eq!(found(store), [id], "and still after reindex");
}
