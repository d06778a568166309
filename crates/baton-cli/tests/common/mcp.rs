//! MCP client helpers: the real `baton mcp-server` driven through rmcp's client, and a raw
//! JSON-RPC line driver for protocol-level checks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, ElicitRequestParams, ElicitResult, ElicitationAction, Implementation,
    ProgressNotificationParam, ProtocolVersion, ServerResult,
};
use rmcp::service::{
    NotificationContext, PeerRequestOptions, RequestContext, RequestHandle, RunningService,
    ServiceError,
};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, ErrorData, RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::TestEnv;

/// How the test client answers `elicitation/create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elicit {
    /// The client does not advertise the elicitation capability at all.
    Unsupported,
    /// `action: accept` with `{"decision": <value>}`.
    Answer(&'static str),
    Decline,
}

/// A `ClientHandler` that records what the server sends it.
#[derive(Clone)]
pub struct RecordingClient {
    elicit: Elicit,
    progress: Arc<Mutex<Vec<(Instant, ProgressNotificationParam)>>>,
    elicitations: Arc<Mutex<Vec<Value>>>,
}

impl ClientHandler for RecordingClient {
    fn get_info(&self) -> ClientConfig {
        let capabilities = match self.elicit {
            Elicit::Unsupported => ClientCapabilities::default(),
            _ => ClientCapabilities::builder().enable_elicitation().build(),
        };
        // Pin the handshake era Claude Code uses (rmcp's default is 2026-07-28).
        ClientConfig::new(capabilities, Implementation::new("baton-tests", "0.0.0"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .expect("progress lock")
            .push((Instant::now(), params));
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.elicitations
            .lock()
            .expect("elicitations lock")
            .push(serde_json::to_value(&request).expect("elicitation as JSON"));
        Ok(match &self.elicit {
            Elicit::Answer(decision) => ElicitResult::new(ElicitationAction::Accept)
                .with_content(json!({ "decision": decision })),
            Elicit::Decline => ElicitResult::new(ElicitationAction::Decline),
            Elicit::Unsupported => ElicitResult::new(ElicitationAction::Cancel),
        })
    }
}

impl RecordingClient {
    pub fn new(elicit: Elicit) -> Self {
        Self {
            elicit,
            progress: Arc::default(),
            elicitations: Arc::default(),
        }
    }

    /// The messages of the progress notifications received so far.
    pub fn progress_messages(&self) -> Vec<String> {
        let progress = self.progress.lock().expect("progress lock");
        progress
            .iter()
            .filter_map(|(_, p)| p.message.clone())
            .collect()
    }

    /// Every `elicitation/create` the server sent, as JSON.
    pub fn elicitations(&self) -> Vec<Value> {
        self.elicitations.lock().expect("elicitations lock").clone()
    }
}

/// The command line of `baton mcp-server` in `env`, logging at info level.
fn server_command(env: &TestEnv) -> tokio::process::Command {
    let mut command = env.baton();
    // BATON_TEST_SERVER_LOG=debug when a test needs to see more of the server.
    let filter = std::env::var("BATON_TEST_SERVER_LOG").unwrap_or_else(|_| "info".to_owned());
    command.arg("mcp-server").env("RUST_LOG", filter);
    tokio::process::Command::from(command)
}

/// A file for the server's stderr, one per process, kept with the test's temp dir.
fn log_file(env: &TestEnv) -> (PathBuf, std::fs::File) {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = env.root.join(format!(
        "mcp-server-{}.log",
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&path).expect("server log file");
    (path, file)
}

/// A running `baton mcp-server` with an rmcp client connected to it.
pub struct McpProcess {
    pub service: RunningService<RoleClient, RecordingClient>,
    pub pid: u32,
    pub log: PathBuf,
    progress: Arc<Mutex<Vec<(Instant, ProgressNotificationParam)>>>,
    elicitations: Arc<Mutex<Vec<Value>>>,
}

impl McpProcess {
    /// Spawns the server in `env` and runs the `initialize` handshake; the client does not
    /// support elicitation.
    pub async fn spawn(env: &TestEnv) -> Self {
        Self::spawn_with(env, Elicit::Unsupported).await
    }

    pub async fn spawn_with(env: &TestEnv, elicit: Elicit) -> Self {
        let (log, file) = log_file(env);
        let (transport, _) = TokioChildProcess::builder(server_command(env))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn baton mcp-server");
        let pid = transport.id().expect("server pid");
        let client = RecordingClient {
            elicit,
            progress: Arc::default(),
            elicitations: Arc::default(),
        };
        let progress = client.progress.clone();
        let elicitations = client.elicitations.clone();
        let service = tokio::time::timeout(Duration::from_secs(20), client.serve(transport))
            .await
            .expect("handshake within 20 s")
            .unwrap_or_else(|err| panic!("handshake failed: {err}\n{}", read_log(&log)));
        Self {
            service,
            pid,
            log,
            progress,
            elicitations,
        }
    }

    /// Calls a tool; a JSON-RPC error is `Err`.
    pub async fn try_call(
        &self,
        tool: &str,
        arguments: Value,
    ) -> Result<CallToolResult, ServiceError> {
        self.service.call_tool(call_params(tool, arguments)).await
    }

    /// Calls a tool; a JSON-RPC error fails the test (a tool error is a normal result).
    pub async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        self.try_call(tool, arguments.clone())
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "{tool} {arguments}: JSON-RPC error {err}\nserver log:\n{}",
                    read_log(&self.log)
                )
            })
    }

    /// Sends a tool call whose handle can cancel it; rmcp attaches a progress token.
    pub async fn call_cancellable(
        &self,
        tool: &str,
        arguments: Value,
    ) -> RequestHandle<RoleClient> {
        self.service
            .send_cancellable_request(
                ClientRequest::CallToolRequest(CallToolRequest::new(call_params(tool, arguments))),
                PeerRequestOptions::no_options(),
            )
            .await
            .expect("send the call")
    }

    /// Starts a session with `baton`; returns `(threadId, final message)`.
    pub async fn start(&self, prompt: &str, cwd: &Path) -> (String, String) {
        self.start_with(json!({"prompt": prompt, "cwd": cwd})).await
    }

    /// `baton` with these arguments, which must succeed; returns `(threadId, final message)`.
    pub async fn start_with(&self, arguments: Value) -> (String, String) {
        let result = self.call("baton", arguments).await;
        self.turn_output(&result)
    }

    /// `baton-reply`, which must succeed and keep the id; returns the final message.
    pub async fn reply(&self, thread_id: &str, prompt: &str) -> String {
        let result = self
            .call(
                "baton-reply",
                json!({"threadId": thread_id, "prompt": prompt}),
            )
            .await;
        let (id, content) = self.turn_output(&result);
        assert_eq!(id, thread_id, "the threadId must not change");
        content
    }

    /// `(threadId, content)` of a successful turn, checking that `content` text and
    /// `structuredContent` agree.
    pub fn turn_output(&self, result: &CallToolResult) -> (String, String) {
        assert_ne!(
            result.is_error,
            Some(true),
            "tool error: {}\nserver log:\n{}",
            text_of(result),
            read_log(&self.log)
        );
        let structured = result
            .structured_content
            .as_ref()
            .unwrap_or_else(|| panic!("no structuredContent: {result:?}"));
        let id = structured["threadId"]
            .as_str()
            .expect("threadId")
            .to_owned();
        let content = structured["content"].as_str().expect("content").to_owned();
        assert_eq!(text_of(result), content, "text content = final message");
        (id, content)
    }

    /// Every progress notification received so far, with its arrival time.
    pub fn progress(&self) -> Vec<(Instant, ProgressNotificationParam)> {
        self.progress.lock().expect("progress lock").clone()
    }

    /// The messages of the progress notifications received so far.
    pub fn progress_messages(&self) -> Vec<String> {
        self.progress()
            .into_iter()
            .filter_map(|(_, p)| p.message)
            .collect()
    }

    /// Waits until a progress message satisfies `wanted`; panics after `within`.
    pub async fn wait_for_progress(
        &self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.progress_messages().into_iter().find(|m| wanted(m)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no such progress within {within:?}; got {:?}",
                self.progress_messages()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every `elicitation/create` the server sent, as JSON.
    pub fn elicitations(&self) -> Vec<Value> {
        self.elicitations.lock().expect("elicitations lock").clone()
    }

    /// SIGKILLs the server, as a crash or an impatient client would.
    pub async fn kill_9(self) {
        kill_9_and_wait(self.pid);
        drop(self.service);
    }

    /// Closes the connection (stdin EOF) and waits for rmcp to let go of the process.
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }

    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }
}

/// `CallToolRequestParams` for a tool with a JSON object of arguments.
pub fn call_params(tool: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments must be a JSON object: {arguments}")
    };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)
}

/// The text blocks of a result, joined.
pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `CallToolResult` a cancellable call ended with.
pub async fn await_call(handle: RequestHandle<RoleClient>) -> Result<CallToolResult, ServiceError> {
    match handle.await_response().await? {
        ServerResult::CallToolResult(result) => Ok(result),
        other => panic!("expected a CallToolResult, got {other:?}"),
    }
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// `kill -9 pid`, then waits (up to 5 s) until the process is gone, so that what it held (its
/// thread locks) is free for the next step of the test.
pub fn kill_9_and_wait(pid: u32) {
    signal(pid, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !process_alive(pid),
        "process {pid} still alive 5 s after kill -9"
    );
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Pids of live processes whose command line (arguments joined by spaces) contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A raw JSON-RPC peer of `baton mcp-server`: lines in, lines out.
pub struct RawMcp {
    pub child: Child,
    pub log: PathBuf,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Messages read while waiting for something else.
    pub backlog: Vec<Value>,
}

impl RawMcp {
    pub fn spawn(env: &TestEnv) -> Self {
        let (log, file) = log_file(env);
        let mut child = server_command(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn baton mcp-server");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            log,
            stdin,
            lines: BufReader::new(stdout).lines(),
            backlog: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("server still running")
    }

    pub async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to server");
        stdin.flush().await.expect("flush");
    }

    /// Writes several messages in one write, so they arrive in this order.
    pub async fn send_all(&mut self, messages: &[Value]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut lines = String::new();
        for message in messages {
            lines.push_str(&message.to_string());
            lines.push('\n');
        }
        stdin
            .write_all(lines.as_bytes())
            .await
            .expect("write to server");
        stdin.flush().await.expect("flush");
    }

    async fn read_message(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no message within {within:?}\nserver log:\n{}",
                    read_log(&self.log)
                )
            })
            .expect("read server stdout")
            .unwrap_or_else(|| panic!("server closed stdout\nlog:\n{}", read_log(&self.log)));
        serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("stdout line is not JSON ({err}): {line}"))
    }

    /// The response with this id; other messages go to the backlog.
    pub async fn response(&mut self, id: i64, within: Duration) -> Value {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|m| m["id"] == json!(id) && m.get("method").is_none())
        {
            return self.backlog.remove(pos);
        }
        loop {
            let message = self.read_message(within).await;
            if message["id"] == json!(id) && message.get("method").is_none() {
                return message;
            }
            self.backlog.push(message);
        }
    }

    pub async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response(id, Duration::from_secs(30)).await
    }

    /// The first notification with this method.
    pub async fn notification(&mut self, method: &str, within: Duration) -> Value {
        if let Some(pos) = self
            .backlog
            .iter()
            .position(|m| m["method"] == method && m.get("id").is_none())
        {
            return self.backlog.remove(pos);
        }
        loop {
            let message = self.read_message(within).await;
            if message["method"] == method && message.get("id").is_none() {
                return message;
            }
            self.backlog.push(message);
        }
    }

    /// The 2025-11-25 handshake, as Claude Code does it.
    pub async fn initialize(&mut self) -> Value {
        let init = self
            .request(
                0,
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"}
                }),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        init
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Some(status.expect("wait for the server")),
            Err(_) => None,
        }
    }
}
