//! The real `baton mcp-server --listen 127.0.0.1:0` as a child process, an rmcp Streamable
//! HTTP client for it (either era), and raw requests for the error cases.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolResult, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

use super::TestEnv;
use super::mcp::{Elicit, RecordingClient, call_params, text_of};

/// Which protocol era the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize`, then requests in an `Mcp-Session-Id` session.
    Sessions2025,
    /// Stateless: every request carries its own protocol metadata.
    Stateless2026,
}

/// A `baton mcp-server --listen` process; killed when dropped.
pub struct HttpServerProcess {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl HttpServerProcess {
    /// Starts the server in `env` (global flags `args` before the subcommand) and waits for
    /// its `listening on` line.
    pub fn spawn(env: &TestEnv, args: &[&str]) -> Self {
        Self::spawn_logging(env, args, "info")
    }

    /// Like [`HttpServerProcess::spawn`], logging at `rust_log` (e.g. `debug`, to search
    /// every log line for a secret).
    pub fn spawn_logging(env: &TestEnv, args: &[&str], rust_log: &str) -> Self {
        let mut command = env.baton();
        command
            .args(args)
            .args(["mcp-server", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn baton mcp-server --listen");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (listening, url) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = listening.send(url.to_owned());
                }
                lines.lock().expect("stderr lock").push(line);
            }
        });
        let url = url
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "no `listening on` line; stderr:\n{}",
                    stderr.lock().expect("stderr lock").join("\n")
                )
            });
        let addr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .unwrap_or_else(|| panic!("unexpected listening line: {url}"))
            .to_owned();
        Self {
            child,
            addr,
            url,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").join("\n")
    }

    /// An rmcp client connected to this server in `era`, with `token` as bearer token.
    pub async fn client(&self, era: Era, token: Option<&str>) -> HttpClient {
        let mut config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .max_concurrent_requests(64);
        if let Some(token) = token {
            config = config.auth_header(token.to_owned());
        }
        // reqwest is built without a default crypto provider; baton uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = StreamableHttpClientTransport::from_config(config);
        let client = EraClient { era };
        // `serve` always does the `initialize` handshake; the stateless era starts with
        // `server/discover` and sends its metadata with every request.
        let connect = async move {
            match era {
                Era::Sessions2025 => client.serve(transport).await,
                Era::Stateless2026 => {
                    client
                        .serve_with_lifecycle(
                            transport,
                            ClientLifecycleMode::Discover {
                                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                            },
                        )
                        .await
                }
            }
        };
        let service = tokio::time::timeout(Duration::from_secs(20), connect)
            .await
            .expect("connect within 20 s")
            .unwrap_or_else(|err| panic!("connect failed: {err}\n{}", self.stderr_text()));
        HttpClient { service }
    }

    /// An rmcp client of the 2025-11-25 era (an `Mcp-Session-Id` session, so the server can
    /// ask it for approvals) that records progress and answers elicitation as `elicit` says.
    pub async fn recording_client(
        &self,
        elicit: Elicit,
    ) -> (RunningService<RoleClient, RecordingClient>, RecordingClient) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(self.url.clone())
                .max_concurrent_requests(8),
        );
        let client = RecordingClient::new(elicit);
        let service =
            tokio::time::timeout(Duration::from_secs(20), client.clone().serve(transport))
                .await
                .expect("connect within 20 s")
                .unwrap_or_else(|err| panic!("connect failed: {err}\n{}", self.stderr_text()));
        (service, client)
    }

    /// `kill -9`, then waits for the process to be gone.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `kill -SIG`.
    pub fn signal(&self, sig: &str) {
        super::mcp::signal(self.pid(), sig);
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw POST of a JSON-RPC message to `/mcp` with the usual MCP headers plus `headers`.
    pub async fn post(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST /mcp")
    }

    /// A raw `initialize` (2025-11-25) with `headers`; returns the status.
    pub async fn initialize_status(&self, headers: &[(&str, &str)]) -> reqwest::StatusCode {
        self.post(initialize_body().to_string(), headers)
            .await
            .status()
    }
}

impl Drop for HttpServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"}
    }})
}

pub struct EraClient {
    era: Era,
}

impl ClientHandler for EraClient {
    fn get_info(&self) -> ClientConfig {
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("baton-http-tests", "0.0.0"),
        );
        match self.era {
            Era::Sessions2025 => config.with_protocol_version(ProtocolVersion::V_2025_11_25),
            Era::Stateless2026 => config.with_protocol_version(ProtocolVersion::V_2026_07_28),
        }
    }
}

/// An rmcp client over Streamable HTTP.
pub struct HttpClient {
    pub service: RunningService<RoleClient, EraClient>,
}

impl HttpClient {
    pub async fn try_call(
        &self,
        tool: &str,
        arguments: Value,
    ) -> Result<CallToolResult, ServiceError> {
        self.service.call_tool(call_params(tool, arguments)).await
    }

    pub async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        self.try_call(tool, arguments.clone())
            .await
            .unwrap_or_else(|err| panic!("{tool} {arguments}: JSON-RPC error {err}"))
    }

    /// `baton` that must succeed: `(threadId, final message)`.
    pub async fn start(&self, arguments: Value) -> (String, String) {
        turn_output(&self.call("baton", arguments).await)
    }

    /// `baton-reply` that must succeed and keep the id: the final message.
    pub async fn reply(&self, thread_id: &str, prompt: &str) -> String {
        let result = self
            .call(
                "baton-reply",
                json!({"threadId": thread_id, "prompt": prompt}),
            )
            .await;
        let (id, content) = turn_output(&result);
        assert_eq!(id, thread_id, "the threadId must not change");
        content
    }

    /// The text of a call that must be a tool error.
    pub async fn tool_error(&self, tool: &str, arguments: Value) -> String {
        let result = self.call(tool, arguments.clone()).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {arguments} should fail: {}",
            text_of(&result)
        );
        text_of(&result)
    }
}

/// `(threadId, content)` of a successful turn.
pub fn turn_output(result: &CallToolResult) -> (String, String) {
    assert_ne!(
        result.is_error,
        Some(true),
        "tool error: {}",
        text_of(result)
    );
    let structured = result
        .structured_content
        .as_ref()
        .unwrap_or_else(|| panic!("no structuredContent: {result:?}"));
    (
        structured["threadId"]
            .as_str()
            .expect("threadId")
            .to_owned(),
        structured["content"].as_str().expect("content").to_owned(),
    )
}
