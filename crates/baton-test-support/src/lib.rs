//! Test helpers for baton: a scripted model server that speaks both SSE wire APIs.
//!
//! [`ScriptedModelServer`] listens on `127.0.0.1` and answers `POST …/responses` (OpenAI
//! Responses API) and `POST …/chat/completions` (Chat Completions API) with faithful SSE
//! streams. What it answers is decided by a *script*: a function of the request alone, so a
//! test proves that the client really sent the history (a reply that depends on earlier
//! messages can only be right if those messages arrived).
//!
//! The server runs on its own thread with its own tokio runtime, so it keeps answering while a
//! test blocks on a child process (`std::process::Command::output`) or uses a current-thread
//! runtime. Dropping the server stops it and closes the port.
//!
//! # The default script
//!
//! [`default_script`] (used by [`ScriptedModelServer::start_default`]) follows these
//! conventions, which integration tests across the project rely on:
//!
//! - If the last input item is a tool output → text `tool output: <output, trimmed>`.
//! - Else, with `P` the text of the last user message (context messages that Codex and baton
//!   inject, such as `<environment_context>…</environment_context>`, are skipped, see
//!   [`is_context_message`]):
//!   - `shell: CMD` → a `shell` tool call with arguments `{"command": ["bash", "-lc", CMD]}`.
//!   - `patch: PATCH` → an `apply_patch` tool call with arguments `{"input": PATCH}`.
//!   - `RECALL` → text `recall: m1 | m2 | … (N tool outputs)`, listing every earlier user
//!     message in order and counting the tool outputs in the request.
//!   - `sleep: MS` → waits `MS` milliseconds before answering, then text `slept`.
//!   - `fail: STATUS` → HTTP `STATUS` with an OpenAI-style error body.
//!   - anything else → text `echo: P`.
//!
//! Call ids are derived from a hash of the request body and the position of the call, so they
//! are unique per request and the reply stays a pure function of the request.
//!
//! Token usage is reported in every completed response: `input_tokens` is the request body's
//! length in bytes divided by 4 (rounded up), of which half (rounded down) are reported as
//! cached (`input_tokens_details.cached_tokens`, `prompt_tokens_details.cached_tokens` on the
//! Chat wire), `output_tokens` the reply's text length in bytes divided by 4 (rounded up)
//! plus 1.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use baton_test_support::{Reply, ScriptedModelServer, default_script, first_n_then};
//! // Answer the first request with HTTP 500, then follow the default script.
//! let server = ScriptedModelServer::start(first_n_then(1, Reply::status(500), default_script)).await?;
//! let base_url = server.base_url(); // "http://127.0.0.1:PORT/v1"
//! // … point a provider at base_url, run the client …
//! assert_eq!(server.requests().len(), 2);
//! # Ok(()) }
//! ```

mod conversation;
mod http;
mod postgres;
mod script;
mod sse;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde_json::Value;
use tokio::sync::oneshot;

pub use conversation::is_context_message;
pub use postgres::{PgCluster, PgUnavailable};
pub use script::{Gate, Reply, ReplyItem, default_script, first_n_then, openai_error_body};

/// Which wire API a request used, decided by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `POST …/responses`
    Responses,
    /// `POST …/chat/completions`
    Chat,
}

/// One request the server received, in the order of arrival.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The request path, e.g. `/v1/responses`.
    pub path: String,
    /// The headers as sent (names as the client spelled them).
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Value,
    pub wire: Wire,
}

type Script = dyn Fn(&RecordedRequest) -> Reply + Send + Sync + 'static;

/// A model server on `127.0.0.1` whose answers come from a script; see the crate docs.
pub struct ScriptedModelServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedModelServer {
    /// Starts a server answering with `script`.
    pub async fn start(
        script: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::start_blocking(script)
    }

    /// Starts a server answering with [`default_script`].
    pub async fn start_default() -> std::io::Result<Self> {
        Self::start_blocking(default_script)
    }

    /// Like [`ScriptedModelServer::start`], for tests that are not async.
    pub fn start_blocking(
        script: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, shutdown_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let state = http::ServerState {
            script: Arc::new(script) as Arc<Script>,
            requests: Arc::clone(&requests),
        };
        let thread = std::thread::Builder::new()
            .name(format!("scripted-model-server-{}", addr.port()))
            .spawn(move || runtime.block_on(http::serve(listener, state, shutdown_rx)))?;
        Ok(Self {
            addr,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The base URL to configure a provider with: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A `config.toml` table defining a provider `id` that points at this server.
    pub fn provider_toml(&self, id: &str, wire: Wire) -> String {
        let wire_api = match wire {
            Wire::Responses => "responses",
            Wire::Chat => "chat",
        };
        format!(
            "[model_providers.{id}]\nname = \"scripted {id}\"\nbase_url = \"{}\"\nwire_api = \"{wire_api}\"\n",
            self.base_url()
        )
    }
}

impl Drop for ScriptedModelServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Joining makes the port closed by the time drop returns; the thread ends promptly
        // because dropping its runtime cancels every connection task.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RecordedRequest {
    /// The value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The model named in the body.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// The system instructions: `instructions` on the Responses wire, the leading `system`
    /// message on the Chat wire.
    pub fn instructions(&self) -> Option<String> {
        conversation::instructions(self)
    }

    /// The names of the tools offered, on either wire.
    pub fn tool_names(&self) -> Vec<String> {
        conversation::tool_names(self)
    }

    /// The conversation the client sent, normalised across both wires, one string per item:
    /// `"user: hi"`, `"assistant: echo: hi"`, `"system: …"` (developer and system messages),
    /// `"call shell {\"command\":[…]}"`, `"output: …"`. The instructions are not included
    /// (on the Chat wire, the leading system message is taken to be them).
    pub fn conversation(&self) -> Vec<String> {
        conversation::entries(self)
            .iter()
            .map(conversation::Entry::render)
            .collect()
    }

    /// The text of the last user message that is not an injected context message.
    pub fn last_user_text(&self) -> Option<String> {
        conversation::entries(self)
            .into_iter()
            .rev()
            .find_map(|entry| match entry {
                conversation::Entry::User(text) if !is_context_message(&text) => Some(text),
                _ => None,
            })
    }

    /// The usage object (`input_tokens`, `input_tokens_details.cached_tokens`,
    /// `output_tokens`, `total_tokens`) the server reports when it answers this request with
    /// `reply`, e.g. `request.reported_usage(&default_script(&request))`: a script is a pure
    /// function of the request, so a test can recompute what each response reported.
    pub fn reported_usage(&self, reply: &Reply) -> Option<Value> {
        sse::reported_usage(self, reply)
    }

    /// The output of the last input item, if that item is a tool output.
    pub fn last_tool_output(&self) -> Option<String> {
        match conversation::entries(self).pop() {
            Some(conversation::Entry::Output(output)) => Some(output),
            _ => None,
        }
    }
}
