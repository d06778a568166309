mod common;

use baton_protocol::ThreadId;
use baton_store::{parse_rollout, summarize_rollout};
use proptest::prelude::*;
use std::path::Path;

fn valid_prefix() -> String {
    common::meta_line(ThreadId::new(), "/p")
        + &common::user_item("hello")
        + &common::line(
            "compacted",
            serde_json::json!({"message": "m", "replacement_history": []}),
        )
        + &common::assistant_item("bye")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_rollout(Path::new("fuzz.jsonl"), &bytes);
    }

    #[test]
    fn truncated_and_mangled_transcripts_never_panic(
        cut in 0usize..2000,
        flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8),
    ) {
        let mut bytes = valid_prefix().into_bytes();
        for (position, value) in flips {
            if let Some(byte) = bytes.get_mut(position) {
                *byte = value; // may create invalid UTF-8 or break JSON anywhere
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(loaded) = parse_rollout(Path::new("fuzz.jsonl"), &bytes) {
            prop_assert!(loaded.history.len() <= 4);
        }
    }

    #[test]
    fn deep_json_never_panics(depth in 1usize..5000, kind in prop::sample::select(vec!["response_item", "compacted", "event_msg", "turn_context", "session_meta"])) {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let line = format!(
            "{{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"type\":\"{kind}\",\"payload\":{{\"type\":\"message\",\"x\":{nested}}}}}\n"
        );
        let bytes = valid_prefix() + &line + &common::user_item("after");
        let _ = parse_rollout(Path::new("fuzz.jsonl"), bytes.as_bytes());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deep.jsonl");
        std::fs::write(&path, &bytes).expect("write");
        let _ = summarize_rollout(&path);
    }
}

#[test]
fn invalid_utf8_inside_a_line_is_a_skipped_line() {
    let mut bytes = valid_prefix().into_bytes();
    bytes.extend_from_slice(b"{\"timestamp\":\"x\",\"type\":\"response_item\",\"payload\":{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"\xff\xfe\"}]}}\n");
    bytes.extend_from_slice(common::user_item("fine").as_bytes());
    let loaded = parse_rollout(Path::new("utf8.jsonl"), &bytes).expect("loads");
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.history.len(), 2);
}
