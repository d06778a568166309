#![allow(dead_code)]

use std::path::{Path, PathBuf};

use baton_protocol::ThreadId;
use chrono::Utc;
use serde_json::{Value, json};

/// A `session_meta` as baton writes it (the same one the store contract checks use).
#[allow(unused_imports)] // not every test binary uses it
pub use baton_store::contract::meta;

/// One transcript line as Codex or baton writes it.
pub fn line(kind: &str, payload: Value) -> String {
    let mut text =
        json!({"timestamp": "2026-01-02T03:04:05.678Z", "type": kind, "payload": payload})
            .to_string();
    text.push('\n');
    text
}

pub fn meta_line(id: ThreadId, cwd: &str) -> String {
    line(
        "session_meta",
        json!({"id": id.to_string(), "timestamp": "2026-01-02T03:04:05.678Z", "cwd": cwd,
               "originator": "codex_exec", "cli_version": "0.169.0", "source": "exec",
               "model_provider": "openai",
               "base_instructions": {"text": "x", "provenance": "default"}}),
    )
}

pub fn user_item(text: &str) -> String {
    line(
        "response_item",
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}),
    )
}

pub fn assistant_item(text: &str) -> String {
    line(
        "response_item",
        json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}),
    )
}

pub fn write_file(path: &Path, contents: &[u8]) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(path, contents).expect("write file");
    path.to_path_buf()
}

/// A UUID v7 id whose timestamp is `days_ago` days in the past.
pub fn id_days_ago(days_ago: i64) -> ThreadId {
    let time = Utc::now() - chrono::Duration::days(days_ago);
    let millis = time.timestamp_millis() as u64;
    let uuid = uuid_v7(millis);
    ThreadId::parse(&uuid).expect("valid id")
}

fn uuid_v7(millis: u64) -> String {
    let random: u128 = (ThreadId::new().as_uuid().as_u128()) & ((1u128 << 80) - 1);
    let value: u128 = ((millis as u128) << 80) | random;
    // Set version 7 and the RFC 4122 variant.
    let value = (value & !(0xF << 76)) | (0x7 << 76);
    let value = (value & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
