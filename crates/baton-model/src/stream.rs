//! The interface between the HTTP client and the wire-specific stream readers (`chat`,
//! `responses`): each reader turns SSE events into a response or a failure, the client
//! decides what to retry. Both sides import this module; it imports neither.

use serde_json::Value;

use crate::ModelResponse;
use crate::sse::SseEvent;

/// What the wire-specific stream readers do with each SSE event.
pub(crate) trait StreamCollector {
    fn on_event(&mut self, event: &SseEvent) -> Result<StreamStep, StreamFailure>;
    fn finish(self) -> ModelResponse;
    /// Whether what arrived so far is a whole answer even though the stream ended without
    /// its completion marker.
    fn complete_at_end_of_stream(&self) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamStep {
    Continue,
    Complete,
}

#[derive(Debug)]
pub(crate) enum StreamFailure {
    /// The server said in the stream that the response failed.
    Failed {
        code: Option<String>,
        message: String,
        retryable: bool,
    },
    Unreadable(String),
}

impl StreamFailure {
    pub(crate) fn unreadable(data: &str, error: &serde_json::Error) -> Self {
        StreamFailure::Unreadable(format!("{error} in event data `{}`", shorten(data, 200)))
    }

    /// From an OpenAI-style `{code, message}` object (or a bare string).
    pub(crate) fn from_error_object(error: &Value) -> Self {
        let (code, message) = code_and_message(error);
        let retryable = matches!(
            code.as_deref(),
            Some("server_error" | "rate_limit_exceeded" | "server_is_overloaded" | "slow_down")
        );
        StreamFailure::Failed {
            code,
            message,
            retryable,
        }
    }
}

/// `(code, message)` of an OpenAI-style error object, or of a bare string.
pub(crate) fn code_and_message(error: &Value) -> (Option<String>, String) {
    let code = match error.get("code") {
        Some(Value::String(code)) => Some(code.clone()),
        Some(Value::Number(code)) => Some(code.to_string()),
        _ => None,
    };
    let message = match error {
        Value::String(message) => message.clone(),
        _ => ["message", "detail"]
            .iter()
            .find_map(|key| error.get(key).and_then(Value::as_str))
            .map_or_else(|| error.to_string(), str::to_owned),
    };
    (code, message)
}

/// On one line and at most `max_chars` characters.
pub(crate) use baton_protocol::shorten_line as shorten;
