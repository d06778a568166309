//! Times `read_rollout` against parsing every line into `serde_json::Value`.
//!
//! `cargo run --release -p baton-store --example read_bench -- [MEGABYTES] [compacted|plain|compacted-bare]`
//!
//! `compacted-bare` writes no `turn_context` line: the settings then come from `session_meta`.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use baton_protocol::ThreadId;
use serde_json::json;

fn line(kind: &str, payload: serde_json::Value) -> String {
    let mut text =
        json!({"timestamp": "2026-01-02T03:04:05.678Z", "type": kind, "payload": payload})
            .to_string();
    text.push('\n');
    text
}

fn generate(path: &Path, megabytes: usize, end_with_compaction: bool, turn_contexts: bool) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let id = ThreadId::new();
    let meta = line(
        "session_meta",
        json!({"id": id.to_string(), "timestamp": "2026-01-02T03:04:05.678Z", "cwd": "/p",
               "originator": "codex_exec", "cli_version": "0.169.0", "source": "exec",
               "base_instructions": {"text": "x".repeat(20_000), "provenance": "default"}}),
    );
    file.write_all(meta.as_bytes()).expect("write");
    let output = "line of tool output with some \"quotes\" and \\ backslashes\n".repeat(60);
    let mut written = meta.len();
    let mut n = 0usize;
    while written < megabytes << 20 {
        n += 1;
        let call_id = format!("call_{n}");
        let lines = [
            line(
                "turn_context",
                json!({"cwd": "/p", "model": "gpt-5", "approval_policy": "never", "sandbox_policy": {"type": "read-only"}}),
            ),
            line(
                "event_msg",
                json!({"type": "user_message", "message": format!("please do step {n}")}),
            ),
            line(
                "response_item",
                json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("please do step {n}")}]}),
            ),
            line(
                "response_item",
                json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking about it"}], "encrypted_content": "Z".repeat(1500)}),
            ),
            line(
                "response_item",
                json!({"type": "function_call", "name": "exec_command", "arguments": "{\"cmd\":\"cargo test\"}", "call_id": call_id}),
            ),
            line(
                "event_msg",
                json!({"type": "exec_command_end", "call_id": call_id, "command": ["cargo", "test"], "exit_code": 0, "aggregated_output": output, "stdout": output}),
            ),
            line(
                "response_item",
                json!({"type": "function_call_output", "call_id": call_id, "output": output}),
            ),
            line(
                "event_msg",
                json!({"type": "token_count", "info": {"total": {"input_tokens": 1000, "output_tokens": 200}}, "rate_limits": {"primary": {"used_percent": 3.0}}}),
            ),
            line(
                "response_item",
                json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done with the step, here is a summary of what happened ".repeat(10)}]}),
            ),
            line(
                "event_msg",
                json!({"type": "agent_message", "message": "done with the step"}),
            ),
        ];
        for text in lines.iter().skip(usize::from(!turn_contexts)) {
            written += text.len();
            file.write_all(text.as_bytes()).expect("write");
        }
    }
    if end_with_compaction {
        let history: Vec<_> = (0..20)
            .map(|i| json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("kept {i}")}]}))
            .collect();
        let text = line(
            "compacted",
            json!({"message": "summary", "replacement_history": history}),
        );
        file.write_all(text.as_bytes()).expect("write");
        for i in 0..10 {
            file.write_all(line("response_item", json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("after {i}")}]})).as_bytes()).expect("write");
        }
    }
    file.flush().expect("flush");
}

fn best_of<T>(runs: usize, mut work: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let value = work();
        best = best.min(start.elapsed().as_secs_f64());
        last = Some(value);
    }
    (best, last.expect("at least one run"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let megabytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(105);
    let mode = args.next().unwrap_or_else(|| "compacted".to_owned());
    let compacted = mode.starts_with("compacted");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.jsonl");
    generate(&path, megabytes, compacted, mode != "compacted-bare");
    let size = std::fs::metadata(&path).expect("stat").len();

    let (baseline, lines) = best_of(3, || {
        let bytes = std::fs::read(&path).expect("read");
        let mut lines = 0;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let value: serde_json::Value = serde_json::from_slice(line).expect("json");
            std::hint::black_box(value);
            lines += 1;
        }
        lines
    });
    let (read_only, _) = best_of(3, || std::fs::read(&path).expect("read").len());
    println!("fs::read alone {:.1} ms", read_only * 1e3);
    let (ours, loaded) = best_of(3, || {
        baton_store::read_rollout(&path).expect("read_rollout")
    });
    let (summary, _) = best_of(3, || {
        baton_store::summarize_rollout(&path).expect("summary")
    });
    println!(
        "{:.1} MB, {lines} lines, {mode}: serde_json Value {:.1} ms, read_rollout {:.1} ms ({:.2}x, {} items), summarize {:.1} ms",
        size as f64 / 1e6,
        baseline * 1e3,
        ours * 1e3,
        ours / baseline,
        loaded.history.len(),
        summary * 1e3
    );
}
