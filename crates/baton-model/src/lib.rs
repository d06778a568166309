//! Talks to model servers: streaming (SSE) clients for the OpenAI Responses API and the Chat
//! Completions API, with retries and errors a person can act on.
//!
//! [`HttpModelClient`] sends the whole conversation ([`ModelRequest`]) and returns the model's
//! output items once the response is complete ([`ModelResponse`]). It retries connection
//! failures, HTTP 408/409/429/5xx, streams that break off and streams that go idle, with
//! exponential backoff; other 4xx answers fail at once.
//!
//! Architecture invariant: an API key lives only in a request header. It is read from the
//! environment for each request and never stored, logged, or shown in an error.

mod chat;
mod client;
mod error;
mod history;
mod responses;
mod sse;
mod stream;

pub use baton_protocol::{ModelProviderInfo, ResponseItem, WireApi};
pub use client::HttpModelClient;
pub use error::ModelError;

/// A function tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// A JSON Schema object describing the arguments.
    pub parameters: serde_json::Value,
}

/// Everything a model needs for one turn of inference.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    pub model: String,
    /// The system (base) instructions.
    pub instructions: String,
    /// The whole history, in order.
    pub input: Vec<ResponseItem>,
    pub tools: Vec<ToolSpec>,
    pub reasoning_effort: Option<String>,
    /// Sent as `prompt_cache_key` on the Responses wire (baton uses the thread id), so every
    /// request of a conversation, also after a restart, lands on the provider's cached prefix.
    /// The Chat wire has no such field and sends nothing.
    pub prompt_cache_key: Option<String>,
}

/// Token counts a server reported for one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    /// Of `input_tokens`, how many were served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

impl TokenUsage {
    /// Reads a usage object whose wire names the input and output counts `input_key` and
    /// `output_key`, and the cached part of the input `cached_pointer` (a JSON pointer);
    /// `None` without an input count.
    pub(crate) fn from_wire(
        value: &serde_json::Value,
        input_key: &str,
        output_key: &str,
        cached_pointer: &str,
    ) -> Option<Self> {
        let count = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
        let input_tokens = count(input_key)?;
        let output_tokens = count(output_key).unwrap_or(0);
        Some(Self {
            input_tokens,
            cached_input_tokens: value
                .pointer(cached_pointer)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            output_tokens,
            total_tokens: count("total_tokens")
                .unwrap_or_else(|| input_tokens.saturating_add(output_tokens)),
        })
    }
}

/// What the model produced in one response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelResponse {
    /// Output items in order: assistant messages and `function_call` items (reasoning items
    /// are kept when the server sends them).
    pub items: Vec<ResponseItem>,
    pub usage: Option<TokenUsage>,
}

/// A model that answers a request; [`HttpModelClient`] is the real one, tests may script
/// their own.
#[async_trait::async_trait]
pub trait ModelClient: Send + Sync {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError>;
}
