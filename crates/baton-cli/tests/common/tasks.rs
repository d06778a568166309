//! A real rmcp client that declares the MCP tasks extension (2026-07-28), over stdio or HTTP,
//! and the polling a task client does.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig, CreateTaskResult,
    GetTaskParams, GetTaskResult, Implementation, ProtocolVersion, TaskPayload, TaskStatus,
    UpdateTaskParams,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Value, json};

use super::TestEnv;
use super::http::HttpServerProcess;
use super::mcp::{call_params, read_log};

/// How long a test waits for a task to reach a state before it fails (a bound, not a timing
/// assertion: tasks normally get there in milliseconds).
pub const TASK_DEADLINE: Duration = Duration::from_secs(60);

/// A 2026-07-28 client that declares `io.modelcontextprotocol/tasks`.
#[derive(Clone)]
pub struct TaskClient;

impl ClientHandler for TaskClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("baton-task-tests", "0.0.0"),
        )
        .with_protocol_version(ProtocolVersion::V_2026_07_28)
    }
}

fn discover() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

/// A task client connected to one baton server process.
pub struct TaskSession {
    pub service: RunningService<RoleClient, TaskClient>,
    /// The stdio server's pid (`None` over HTTP: the test owns that process).
    pub pid: Option<u32>,
    log: Option<PathBuf>,
}

impl TaskSession {
    /// Spawns `baton mcp-server` on stdio in `env` and connects.
    pub async fn stdio(env: &TestEnv) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = env.root.join(format!(
            "task-server-{}.log",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).expect("server log file");
        let mut command = env.baton();
        command.arg("mcp-server").env("RUST_LOG", "info");
        let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(command))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn baton mcp-server");
        let pid = transport.id();
        let service = tokio::time::timeout(
            Duration::from_secs(20),
            TaskClient.serve_with_lifecycle(transport, discover()),
        )
        .await
        .expect("connect within 20 s")
        .unwrap_or_else(|err| panic!("connect failed: {err}\n{}", read_log(&log)));
        Self {
            service,
            pid,
            log: Some(log),
        }
    }

    /// Connects to an HTTP server, with `token` as bearer token.
    pub async fn http(server: &HttpServerProcess, token: Option<&str>) -> Self {
        let mut config = StreamableHttpClientTransportConfig::with_uri(server.url.clone());
        if let Some(token) = token {
            config = config.auth_header(token.to_owned());
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let transport = StreamableHttpClientTransport::from_config(config);
        let service = tokio::time::timeout(
            Duration::from_secs(20),
            TaskClient.serve_with_lifecycle(transport, discover()),
        )
        .await
        .expect("connect within 20 s")
        .unwrap_or_else(|err| panic!("connect failed: {err}\n{}", server.stderr_text()));
        Self {
            service,
            pid: None,
            log: None,
        }
    }

    fn log_text(&self) -> String {
        self.log.as_deref().map(read_log).unwrap_or_default()
    }

    /// A call that must be answered with a task.
    pub async fn call_task(&self, tool: &str, arguments: Value) -> CreateTaskResult {
        match self
            .service
            .call_tool_once(call_params(tool, arguments.clone()))
            .await
        {
            Ok(CallToolResponse::Task(task)) => task,
            other => panic!(
                "{tool} {arguments}: expected a task, got {other:?}\n{}",
                self.log_text()
            ),
        }
    }

    /// `tasks/get`; a server that does not answer within [`TASK_DEADLINE`] fails the test
    /// (`tasks/get` must never wait for a turn).
    pub async fn try_get(&self, task_id: &str) -> Result<GetTaskResult, ServiceError> {
        tokio::time::timeout(
            TASK_DEADLINE,
            self.service.get_task(GetTaskParams::new(task_id)),
        )
        .await
        .unwrap_or_else(|_| {
            panic!(
                "tasks/get {task_id} was not answered within {TASK_DEADLINE:?}\n{}",
                self.log_text()
            )
        })
    }

    pub async fn get(&self, task_id: &str) -> GetTaskResult {
        self.try_get(task_id)
            .await
            .unwrap_or_else(|err| panic!("tasks/get {task_id}: {err}\n{}", self.log_text()))
    }

    /// Polls `tasks/get` until the task's status is `status`; fails on a different terminal
    /// status or after [`TASK_DEADLINE`].
    pub async fn wait_for(&self, task_id: &str, status: TaskStatus) -> GetTaskResult {
        let deadline = Instant::now() + TASK_DEADLINE;
        loop {
            let task = self.get(task_id).await;
            let now = task.task.status();
            if now == status {
                return task;
            }
            assert!(
                !(now.is_terminal() || Instant::now() > deadline),
                "task {task_id} is {now:?} (waited for {status:?}): {}\n{}",
                serde_json::to_string(&task).unwrap_or_default(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn try_update(
        &self,
        task_id: &str,
        key: &str,
        response: Value,
    ) -> Result<(), ServiceError> {
        let mut responses = std::collections::BTreeMap::new();
        responses.insert(key.to_owned(), response);
        self.service
            .update_task(UpdateTaskParams::new(task_id, responses))
            .await
    }

    pub async fn update(&self, task_id: &str, key: &str, response: Value) {
        self.try_update(task_id, key, response)
            .await
            .unwrap_or_else(|err| panic!("tasks/update {task_id}: {err}\n{}", self.log_text()));
    }

    pub async fn try_cancel(&self, task_id: &str) -> Result<(), ServiceError> {
        self.service
            .cancel_task(CancelTaskParams::new(task_id))
            .await
    }
}

/// The result of a completed task, as JSON (`content`, `structuredContent`, `isError`).
pub fn completed_result(task: &GetTaskResult) -> Value {
    match &task.task.payload {
        TaskPayload::Completed { result } => Value::Object(result.clone()),
        other => panic!("task not completed: {other:?}"),
    }
}

/// The one input request of an `input_required` task: `(key, request as JSON)`.
pub fn input_request(task: &GetTaskResult) -> (String, Value) {
    match &task.task.payload {
        TaskPayload::InputRequired { input_requests } => {
            assert_eq!(input_requests.len(), 1, "{input_requests:?}");
            let (key, request) = input_requests.iter().next().expect("one request");
            (
                key.clone(),
                serde_json::to_value(request).expect("input request as JSON"),
            )
        }
        other => panic!("task not waiting for input: {other:?}"),
    }
}

/// The answer an approving person gives.
pub fn approve() -> Value {
    json!({"action": "accept", "content": {"decision": "approve"}})
}

/// Waits until `condition` holds, polling; fails with `what` after [`TASK_DEADLINE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TASK_DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
