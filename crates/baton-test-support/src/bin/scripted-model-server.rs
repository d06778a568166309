//! A standalone scripted model server: starts [`ScriptedModelServer`], prints its base URL
//! (`http://127.0.0.1:PORT/v1`) on stdout and serves until killed.
//!
//! It exists to drive other clients, above all the real Codex CLI when regenerating the Codex
//! fixtures (`scripts/gen-codex-fixtures.sh`). It follows [`default_script`] with one change:
//! a `shell: CMD` prompt calls whichever shell tool the client offers, since Codex offers
//! `exec_command` (`{"cmd": …}`) or `shell_command` (`{"command": "…"}`) rather than baton's
//! `shell` (`{"command": [...]}`), and a call to a tool it did not offer would only come back
//! as an error output. It also answers Codex's compaction request (a user message starting
//! `You are performing a CONTEXT CHECKPOINT COMPACTION`) with a short, readable
//! `summary: m1 | m2 | …` of the earlier user messages instead of echoing the whole prompt.
//!
//! Usage: `scripted-model-server [--log FILE]`; with `--log`, every request body is appended
//! to FILE as one JSON line, so the requests a client sent can be inspected.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;

use baton_test_support::{
    RecordedRequest, Reply, ScriptedModelServer, default_script, is_context_message,
};
use serde_json::json;

fn main() -> ExitCode {
    let log_path = match parse_args() {
        Ok(path) => path,
        Err(message) => {
            eprintln!("scripted-model-server: {message}");
            eprintln!("usage: scripted-model-server [--log FILE]");
            return ExitCode::from(2);
        }
    };
    let log = match log_path.as_deref().map(open_log).transpose() {
        Ok(log) => log.map(Mutex::new),
        Err(err) => {
            eprintln!("scripted-model-server: cannot open the log: {err}");
            return ExitCode::from(1);
        }
    };
    let script = move |request: &RecordedRequest| {
        if let Some(log) = &log {
            let mut file = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let line = json!({"path": request.path, "body": request.body});
            // A lost log line must not take the server down; the reply matters more.
            let _ = writeln!(file, "{line}");
        }
        standalone_script(request)
    };
    let server = match ScriptedModelServer::start_blocking(script) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("scripted-model-server: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    println!("{}", server.base_url());
    // Whoever started us reads the URL from a pipe: make sure it leaves now.
    let _ = std::io::stdout().flush();
    // The server answers on its own thread; this one only has to stay alive until killed.
    loop {
        std::thread::park();
    }
}

fn parse_args() -> Result<Option<String>, String> {
    let mut args = std::env::args().skip(1);
    let mut log = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--log" => log = Some(args.next().ok_or("--log needs a file")?),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(log)
}

fn open_log(path: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Codex's local compaction prompt begins with this.
const CODEX_COMPACTION_PROMPT: &str = "You are performing a CONTEXT CHECKPOINT COMPACTION";

/// [`default_script`], except that `shell: CMD` calls the shell tool the client offers and a
/// compaction request gets a short summary.
fn standalone_script(request: &RecordedRequest) -> Reply {
    if request.last_tool_output().is_none()
        && request
            .last_user_text()
            .is_some_and(|prompt| prompt.starts_with(CODEX_COMPACTION_PROMPT))
    {
        return Reply::text(compaction_summary(request));
    }
    let command = match (request.last_tool_output(), request.last_user_text()) {
        (None, Some(prompt)) => prompt
            .strip_prefix("shell:")
            .map(|command| command.trim().to_owned()),
        _ => None,
    };
    let Some(command) = command else {
        return default_script(request);
    };
    let tools = request.tool_names();
    let offers = |name: &str| tools.iter().any(|tool| tool == name);
    if offers("shell") || tools.is_empty() {
        default_script(request)
    } else if offers("exec_command") {
        Reply::tool_call("exec_command", json!({"cmd": command}))
    } else if offers("shell_command") {
        Reply::tool_call("shell_command", json!({"command": command}))
    } else {
        default_script(request)
    }
}

/// `summary: m1 | m2 | …`: the user messages before the compaction prompt, skipping the
/// context messages Codex injects.
fn compaction_summary(request: &RecordedRequest) -> String {
    let conversation = request.conversation();
    let messages: Vec<&str> = conversation
        .iter()
        .filter_map(|entry| entry.strip_prefix("user: "))
        .filter(|text| !is_context_message(text) && !text.starts_with(CODEX_COMPACTION_PROMPT))
        .collect();
    format!("summary: {}", messages.join(" | "))
}
