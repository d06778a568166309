//! What the server answers: [`Reply`], the [`default_script`] and script combinators.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::RecordedRequest;
use crate::conversation::{Entry, entries, is_context_message};

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A successful streamed response with these output items, as proper SSE for the wire of
    /// the request.
    Items(Vec<ReplyItem>),
    /// A plain JSON answer with this HTTP status (and a `Retry-After: SECONDS` header if set).
    Status {
        status: u16,
        body: Value,
        retry_after: Option<u64>,
    },
    /// Starts a streamed response (headers and a first event or two), then closes the
    /// connection without completing it.
    DropMidStream,
    /// Waits `delay` before sending anything (not even headers), then answers with `then`.
    Stall { delay: Duration, then: Box<Reply> },
    /// Holds the request (sends nothing, not even headers) until the test opens `gate`, then
    /// answers with `then`: a model "thinking" for exactly as long as a test needs.
    Hold { gate: Gate, then: Box<Reply> },
    /// Starts a streamed response, waits `delay` between two SSE events, then completes it
    /// with `items`: exercises a client's idle timeout between chunks.
    StallMidStream {
        delay: Duration,
        items: Vec<ReplyItem>,
    },
    /// The model's context window is exceeded: on the Responses wire a `response.failed`
    /// event with code `context_length_exceeded`; on the Chat wire HTTP 400 with that code,
    /// as OpenAI answers.
    ContextLengthExceeded,
}

/// A gate that held requests wait at until the test opens it (once, for good).
#[derive(Debug, Clone)]
pub struct Gate(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    pub fn new() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::channel(false).0))
    }

    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    pub(crate) async fn wait(&self) {
        let mut open = self.0.subscribe();
        // Err only when the sender is gone, which `self` prevents.
        let _ = open.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One output item of a successful response.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyItem {
    /// An assistant message.
    Text(String),
    /// A function call; `arguments` is sent as a JSON string, as the APIs do.
    ToolCall { name: String, arguments: Value },
}

impl Reply {
    /// A response with a single assistant message.
    pub fn text(text: impl Into<String>) -> Self {
        Reply::Items(vec![ReplyItem::Text(text.into())])
    }

    /// A response with a single function call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Reply::Items(vec![ReplyItem::ToolCall {
            name: name.into(),
            arguments,
        }])
    }

    /// HTTP `status` with an OpenAI-style error body.
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            body: openai_error_body(status),
            retry_after: None,
        }
    }

    /// HTTP 429 with `Retry-After: seconds`.
    pub fn rate_limited(retry_after_seconds: u64) -> Self {
        Reply::Status {
            status: 429,
            body: openai_error_body(429),
            retry_after: Some(retry_after_seconds),
        }
    }
}

/// `{"error": {"message", "type", "param", "code"}}` as OpenAI sends it.
pub fn openai_error_body(status: u16) -> Value {
    let (kind, code) = match status {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        429 => ("rate_limit_exceeded", json!("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", Value::Null),
        _ => ("server_error", Value::Null),
    };
    json!({"error": {
        "message": format!("scripted failure: HTTP {status}"),
        "type": kind,
        "param": null,
        "code": code,
    }})
}

/// The conventions described in the crate docs.
pub fn default_script(request: &RecordedRequest) -> Reply {
    if let Some(output) = request.last_tool_output() {
        return Reply::text(format!("tool output: {}", output.trim()));
    }
    let prompt = request.last_user_text().unwrap_or_default();
    if let Some(command) = prompt.strip_prefix("shell:") {
        return Reply::tool_call("shell", json!({"command": ["bash", "-lc", command.trim()]}));
    }
    if let Some(patch) = prompt.strip_prefix("patch:") {
        return Reply::tool_call("apply_patch", json!({"input": patch.trim()}));
    }
    if prompt.trim() == "RECALL" {
        return Reply::text(recall(request));
    }
    if let Some(millis) = prompt
        .strip_prefix("sleep:")
        .and_then(|ms| ms.trim().parse().ok())
    {
        return Reply::Stall {
            delay: Duration::from_millis(millis),
            then: Box::new(Reply::text("slept")),
        };
    }
    if let Some(status) = prompt
        .strip_prefix("fail:")
        .and_then(|status| status.trim().parse().ok())
    {
        return Reply::status(status);
    }
    Reply::text(format!("echo: {prompt}"))
}

/// `recall: m1 | m2 | … (N tool outputs)`: the user messages before the last one.
fn recall(request: &RecordedRequest) -> String {
    let entries = entries(request);
    let mut user_messages: Vec<&str> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::User(text) if !is_context_message(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    user_messages.pop();
    let outputs = entries
        .iter()
        .filter(|entry| matches!(entry, Entry::Output(_)))
        .count();
    format!(
        "recall: {} ({outputs} tool outputs)",
        user_messages.join(" | ")
    )
}

/// A script that answers the first `n` requests with `reply` and the rest with `then`,
/// e.g. `first_n_then(1, Reply::status(500), default_script)` for "500, then 200".
pub fn first_n_then(
    n: usize,
    reply: Reply,
    then: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
) -> impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static {
    let answered = AtomicUsize::new(0);
    move |request| {
        if answered.fetch_add(1, Ordering::SeqCst) < n {
            reply.clone()
        } else {
            then(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Wire;

    fn responses(input: Value) -> RecordedRequest {
        RecordedRequest {
            path: "/v1/responses".into(),
            headers: vec![],
            body: json!({"model": "m", "instructions": "sys", "input": input}),
            wire: Wire::Responses,
        }
    }

    fn user(text: &str) -> Value {
        json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
    }

    fn say(text: &str) -> Reply {
        default_script(&responses(json!([user(text)])))
    }

    #[test]
    fn prompts_select_the_reply() {
        assert_eq!(say("hello"), Reply::text("echo: hello"));
        assert_eq!(
            say("shell:  ls -la "),
            Reply::tool_call("shell", json!({"command": ["bash", "-lc", "ls -la"]}))
        );
        assert_eq!(
            say("patch: *** Begin Patch\n*** End Patch\n"),
            Reply::tool_call(
                "apply_patch",
                json!({"input": "*** Begin Patch\n*** End Patch"})
            )
        );
        assert_eq!(
            say("sleep: 250"),
            Reply::Stall {
                delay: Duration::from_millis(250),
                then: Box::new(Reply::text("slept"))
            }
        );
        assert_eq!(say("fail: 503"), Reply::status(503));
        assert_eq!(
            say("fail: 429"),
            Reply::Status {
                status: 429,
                body: openai_error_body(429),
                retry_after: None
            }
        );
    }

    #[test]
    fn a_last_tool_output_is_answered_before_any_prompt() {
        let request = responses(json!([
            user("shell: ls"),
            {"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c", "output": "a.txt\n"},
        ]));
        assert_eq!(default_script(&request), Reply::text("tool output: a.txt"));
    }

    #[test]
    fn recall_lists_earlier_user_messages_and_counts_outputs_on_both_wires() {
        let request = responses(json!([
            user("<environment_context>cwd</environment_context>"),
            user("one"),
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "echo: one"}]},
            user("two"),
            {"type": "function_call", "name": "shell", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c", "output": "x"},
            user("RECALL"),
        ]));
        let chat = RecordedRequest {
            path: "/v1/chat/completions".into(),
            headers: vec![],
            body: json!({"model": "m", "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "<environment_context>cwd</environment_context>"},
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "echo: one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "x"},
                {"role": "user", "content": "RECALL"},
            ]}),
            wire: Wire::Chat,
        };
        assert_eq!(request.conversation(), chat.conversation());
        assert_eq!(request.instructions(), chat.instructions());
        for request in [request, chat] {
            assert_eq!(
                default_script(&request),
                Reply::text("recall: one | two (1 tool outputs)")
            );
        }
    }

    #[test]
    fn first_n_then_switches_after_n_requests() {
        let script = first_n_then(2, Reply::status(500), default_script);
        let request = responses(json!([user("hi")]));
        let replies: Vec<Reply> = (0..3).map(|_| script(&request)).collect();
        assert_eq!(
            replies,
            vec![
                Reply::status(500),
                Reply::status(500),
                Reply::text("echo: hi")
            ]
        );
    }
}
