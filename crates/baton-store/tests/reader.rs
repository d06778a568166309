mod common;

use baton_protocol::{ContentItem, ResponseItem, ThreadId};
use baton_store::{
    ABORTED_CALL_OUTPUT, ReadLimits, StoreError, read_rollout, read_rollout_with,
    summarize_rollout, summarize_rollout_with,
};
use common::{assistant_item, line, meta_line, user_item, write_file};
use serde_json::json;

fn texts(history: &[ResponseItem]) -> Vec<String> {
    history
        .iter()
        .map(|item| match item.message_text() {
            Some((role, text)) => format!("{role}:{text}"),
            None => format!("{item:?}"),
        })
        .collect()
}

#[test]
fn torn_last_line_is_ignored_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ThreadId::new();
    let mut contents = meta_line(id, "/p") + &user_item("one") + &assistant_item("two");
    contents.push_str(
        r#"{"timestamp":"2026-01-02T03:04:05.678Z","type":"response_item","payload":{"type":"mess"#,
    );
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history), ["user:one", "assistant:two"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.file_len, contents.len() as u64);
    assert_eq!(loaded.meta.id, id);
}

#[test]
fn corrupt_middle_line_is_skipped_with_its_line_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("one")
        + "{not json at all\n"
        + &line("response_item", json!({"type": "message", "role": "user"}))
        + &assistant_item("two");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history), ["user:one", "assistant:two"]);
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("line 3"),
        "{}",
        loaded.warnings[0]
    );
    assert!(
        loaded.warnings[1].contains("line 4"),
        "{}",
        loaded.warnings[1]
    );
}

#[test]
fn missing_session_meta_is_not_a_transcript() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(&dir.path().join("r.jsonl"), user_item("hi").as_bytes());
    let error = read_rollout(&path).expect_err("no meta");
    assert!(matches!(error, StoreError::NotATranscript { .. }));
    assert!(
        error.to_string().contains("not a session transcript"),
        "{error}"
    );
    assert!(error.to_string().contains("r.jsonl"), "{error}");
}

#[test]
fn codex_extras_are_ignored_and_passthrough_key_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ThreadId::new();
    let contents = meta_line(id, "/p")
        + r#"{"timestamp":"2026-01-02T03:04:05.678Z","ordinal":2,"type":"response_item","metadata":{"x":1},"payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}],"internal_chat_message_metadata_passthrough":{"a":1}}}"#
        + "\n"
        + &line("world_state", json!({"anything": true}))
        + &line("event_msg", json!({"type": "token_count", "info": null}))
        + &line("token_usage_record", json!([1, 2, 3]));
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(loaded.history, vec![ResponseItem::user_message("hi")]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let reserialized = serde_json::to_string(&loaded.history[0]).expect("serialize");
    assert!(!reserialized.contains("passthrough"));
}

#[test]
fn history_starts_at_the_newest_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compacted = |summary: &str| {
        line(
            "compacted",
            json!({"message": "summary", "replacement_history": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": summary}]}
            ]}),
        )
    };
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("old 1")
        + &compacted("first compaction")
        + &user_item("old 2")
        + &compacted("second compaction")
        + &user_item("new 1")
        + &line(
            "event_msg",
            json!({"type": "agent_message", "message": "x"}),
        )
        + &assistant_item("new 2");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(
        texts(&loaded.history),
        ["user:second compaction", "user:new 1", "assistant:new 2"]
    );
}

#[test]
fn a_compaction_marker_inside_a_payload_is_not_a_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A nested object with "type":"compacted" written compactly, as a tool might echo it.
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("keep me")
        + &line(
            "event_msg",
            json!({"type": "other", "nested": {"type": "compacted", "replacement_history": []}}),
        )
        + &assistant_item("and me");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history), ["user:keep me", "assistant:and me"]);
}

#[test]
fn old_style_compaction_without_replacement_becomes_a_user_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("old")
        + &line("compacted", json!({"message": "we did X"}))
        + &user_item("after");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history), ["user:we did X", "user:after"]);
}

#[test]
fn last_turn_context_before_the_compaction_is_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &line("turn_context", json!({"cwd": "/first", "model": "m1"}))
        + &line(
            "turn_context",
            json!({"cwd": "/second", "model": "m2", "approval_policy": "never", "sandbox_policy": {"type": "read-only"}}),
        )
        + &user_item("x")
        + &line(
            "compacted",
            json!({"message": "", "replacement_history": []}),
        )
        + &user_item("y");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    let context = loaded.last_turn_context.expect("turn context");
    assert_eq!(context.cwd, std::path::PathBuf::from("/second"));
    assert_eq!(context.model, "m2");
    assert_eq!(texts(&loaded.history), ["user:y"]);
}

#[test]
fn unpaired_calls_get_a_synthetic_output_right_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("run things")
        + &line(
            "response_item",
            json!({"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "a"}),
        )
        + &line(
            "response_item",
            json!({"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "b"}),
        )
        + &line(
            "response_item",
            json!({"type": "function_call_output", "call_id": "b", "output": "done"}),
        )
        + &line(
            "response_item",
            json!({"type": "custom_tool_call", "name": "apply_patch", "input": "*** Begin Patch", "call_id": "c"}),
        )
        + &user_item("dangling");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let history = read_rollout(&path).expect("read").history;
    let aborted = ABORTED_CALL_OUTPUT.to_owned();
    assert_eq!(history.len(), 8, "{history:#?}");
    assert_eq!(
        history[2],
        ResponseItem::FunctionCallOutput {
            call_id: "a".into(),
            output: aborted.clone()
        }
    );
    assert_eq!(history[3].call_id(), Some("b"));
    assert_eq!(
        history[4],
        ResponseItem::FunctionCallOutput {
            call_id: "b".into(),
            output: "done".into()
        }
    );
    assert_eq!(
        history[6],
        ResponseItem::CustomToolCallOutput {
            call_id: "c".into(),
            output: aborted
        }
    );
    assert_eq!(history[7], ResponseItem::user_message("dangling"));
}

#[test]
fn crlf_and_blank_lines_are_tolerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p").replace('\n', "\r\n")
        + "\n   \n"
        + &user_item("one").replace('\n', "\r\n");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(loaded.history, vec![ResponseItem::user_message("one")]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn summary_counts_turns_and_skips_context_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ThreadId::new();
    let contents = meta_line(id, "/p")
        + &user_item("<environment_context>cwd</environment_context>")
        + &user_item("first real prompt")
        + &assistant_item("answer one")
        + &line("turn_context", json!({"cwd": "/moved", "model": "gpt-x"}))
        + &user_item("second prompt")
        + &assistant_item("answer two");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let summary = summarize_rollout(&path).expect("summary");
    assert_eq!(summary.id, id);
    assert_eq!(
        summary.first_user_message.as_deref(),
        Some("first real prompt")
    );
    assert_eq!(summary.last_agent_message.as_deref(), Some("answer two"));
    assert_eq!(summary.turns, 2);
    assert_eq!(summary.model.as_deref(), Some("gpt-x"));
    assert_eq!(summary.cwd, std::path::PathBuf::from("/moved"));
    assert_eq!(summary.source, baton_store::ThreadOrigin::Codex);
    assert_eq!(
        baton_protocol::format_timestamp(summary.updated_at),
        "2026-01-02T03:04:05.678Z"
    );
}

#[test]
fn summary_prefers_event_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &line(
            "event_msg",
            json!({"type": "user_message", "message": "typed prompt"}),
        )
        + &user_item("typed prompt")
        + &line(
            "event_msg",
            json!({"type": "agent_message", "message": "final"}),
        );
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let summary = summarize_rollout(&path).expect("summary");
    assert_eq!(summary.turns, 1);
    assert_eq!(summary.first_user_message.as_deref(), Some("typed prompt"));
    assert_eq!(summary.last_agent_message.as_deref(), Some("final"));
}

#[test]
fn content_other_parts_do_not_break_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let contents = meta_line(ThreadId::new(), "/p")
        + &line(
            "response_item",
            json!({"type": "message", "role": "user", "content": [
            {"type": "input_image", "image_url": "data:"}, {"type": "input_text", "text": "look"}]}),
        );
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let history = read_rollout(&path).expect("read").history;
    assert_eq!(
        history,
        vec![ResponseItem::Message {
            role: "user".into(),
            content: vec![
                ContentItem::Other,
                ContentItem::InputText {
                    text: "look".into()
                }
            ]
        }]
    );
}

/// A transcript of many read blocks (36 MB), so the searches from the end cross many block
/// seams.
fn big_transcript(compaction_at_end: bool) -> (String, usize) {
    let filler_output = "x".repeat(4000);
    let mut contents = meta_line(ThreadId::new(), "/p");
    contents += &line("turn_context", json!({"cwd": "/early", "model": "m-early"}));
    let mut n = 0;
    while contents.len() < 36 << 20 {
        n += 1;
        contents += &user_item(&format!("filler {n}"));
        contents += &line(
            "event_msg",
            json!({"type": "exec_command_end", "call_id": "c", "command": ["ls"], "aggregated_output": filler_output}),
        );
        if n == 10 {
            contents += "{corrupt early line\n";
        }
    }
    contents += &line("turn_context", json!({"cwd": "/late", "model": "m-late"}));
    if compaction_at_end {
        contents += &line(
            "compacted",
            json!({"message": "s", "replacement_history": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "kept"}]}
            ]}),
        );
    }
    contents += "{corrupt late line\n";
    let corrupt_line_number = contents.lines().count();
    contents += &assistant_item("after compaction");
    (contents, corrupt_line_number)
}

#[test]
fn a_large_file_read_from_the_end_gives_the_same_result_as_a_full_parse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (contents, corrupt_line) = big_transcript(true);
    let path = write_file(&dir.path().join("big.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(
        texts(&loaded.history),
        ["user:kept", "assistant:after compaction"]
    );
    assert_eq!(
        loaded.last_turn_context.as_ref().expect("context").model,
        "m-late"
    );
    // Only the late corrupt line is after the compaction; its number is exact.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains(&format!("line {corrupt_line}:")),
        "{} (expected line {corrupt_line})",
        loaded.warnings[0]
    );
    let full = baton_store::parse_rollout(&path, contents.as_bytes()).expect("full parse");
    assert_eq!(full, loaded);
}

#[test]
fn a_large_file_without_compaction_is_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (contents, _) = big_transcript(false);
    let path = write_file(&dir.path().join("big.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history[..1]), ["user:filler 1"]);
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert_eq!(
        loaded,
        baton_store::parse_rollout(&path, contents.as_bytes()).expect("full")
    );
}

#[test]
fn exact_and_unusual_line_shapes_give_the_same_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut contents = meta_line(ThreadId::new(), "/p");
    // The exact shape baton writes (the one-pass path)…
    contents += "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"response_item\",\"payload\":{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"one\"}]}}\n";
    // …Codex 0.169's extra `metadata` after the payload, keys in another order, and a
    // payload followed by junk that must not be taken as an item.
    contents += "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"response_item\",\"payload\":{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"two\"}]},\"metadata\":{\"turn\":1}}\n";
    contents += "{\"type\":\"response_item\",\"payload\":{\"role\":\"user\",\"type\":\"message\",\"content\":[{\"type\":\"input_text\",\"text\":\"three\"}]},\"timestamp\":\"2026-01-01T00:00:00.000Z\"}\n";
    contents += "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"response_item\",\"payload\":{\"type\":\"message\",\"role\":\"user\",\"content\":[]}} trailing junk}\n";
    let path = write_file(&dir.path().join("shapes.jsonl"), contents.as_bytes());
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(
        texts(&loaded.history),
        ["user:one", "assistant:two", "user:three"]
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
}

/// A line cap small enough for tests; the default is 64 MiB.
const SMALL_CAP: ReadLimits = ReadLimits {
    max_line_bytes: 2 << 20,
};

#[test]
fn a_line_over_the_cap_is_skipped_with_a_warning_and_the_rest_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Valid JSON, so only the cap keeps it out; it spans several read blocks.
    let huge = user_item(&"h".repeat(3 << 20));
    // Under the cap but over one read block, and not starting at a block boundary.
    let large_text = "l".repeat(1_500_000);
    let contents = meta_line(ThreadId::new(), "/p")
        + &user_item("one")
        + &huge
        + &assistant_item(&large_text)
        + &user_item("two");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());

    let loaded = read_rollout_with(&path, SMALL_CAP).expect("read");
    assert_eq!(
        texts(&loaded.history),
        [
            "user:one".to_owned(),
            format!("assistant:{large_text}"),
            "user:two".to_owned()
        ]
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let warning = &loaded.warnings[0];
    assert!(warning.contains("line 3"), "{warning}");
    assert!(warning.contains("over the 2097152-byte limit"), "{warning}");

    // The summary skips it the same way: the first prompt is the one before it, and the
    // huge prompt is not counted as a turn.
    let summary = summarize_rollout_with(&path, SMALL_CAP).expect("summary");
    assert_eq!(summary.turns, 2);
    assert!(!summary.search_text.contains("hhhh"));

    // Without the small cap the same file loads whole.
    assert_eq!(read_rollout(&path).expect("read").history.len(), 4);
}

#[test]
fn a_torn_last_line_over_the_cap_is_ignored_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut contents = meta_line(ThreadId::new(), "/p") + &user_item("one");
    let torn = user_item(&"t".repeat(3 << 20));
    contents.push_str(&torn[..torn.len() - 10]);
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout_with(&path, SMALL_CAP).expect("read");
    assert_eq!(texts(&loaded.history), ["user:one"]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.file_len, contents.len() as u64);
}

#[test]
fn an_over_cap_compaction_is_passed_over_like_a_corrupt_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big_compaction = line(
        "compacted",
        json!({"message": "x".repeat(3 << 20), "replacement_history": []}),
    );
    let contents =
        meta_line(ThreadId::new(), "/p") + &user_item("one") + &big_compaction + &user_item("two");
    let path = write_file(&dir.path().join("r.jsonl"), contents.as_bytes());
    let loaded = read_rollout_with(&path, SMALL_CAP).expect("read");
    assert_eq!(texts(&loaded.history), ["user:one", "user:two"]);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("line 3"),
        "{:?}",
        loaded.warnings
    );
    // With room for it, the compaction replaces what came before.
    let loaded = read_rollout(&path).expect("read");
    assert_eq!(texts(&loaded.history), ["user:two"]);
}
