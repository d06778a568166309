//! The agent loop against an in-memory model (no HTTP, no process): the `ModelClient` and
//! `ModelClientFactory` traits are the seam.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_config::ConfigOverrides;
use baton_core::{
    CoreError, ModelClientFactory, ReplyToThread, StartThread, ThreadManager, ThreadManagerOptions,
    TurnHooks,
};
use baton_model::{ModelClient, ModelError, ModelRequest, ModelResponse};
use baton_protocol::{ModelProviderInfo, ResponseItem, SessionSource};

/// Answers a user message that starts with `run:` with a shell call, a tool output with its
/// text, a `hang` prompt never, and anything else with `ok`. Records every request.
#[derive(Default)]
struct FakeModel {
    requests: Mutex<Vec<ModelRequest>>,
    /// Notified when a `hang` request is in flight.
    hanging: tokio::sync::Notify,
}

#[async_trait]
impl ModelClient for FakeModel {
    async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        let item = match request.input.last() {
            Some(ResponseItem::FunctionCallOutput { output, .. }) => {
                ResponseItem::assistant_message(format!(
                    "saw: {}",
                    output.lines().last().unwrap_or("")
                ))
            }
            Some(last) => match last.message_text() {
                Some((_, text)) if text == "hang" => {
                    self.hanging.notify_one();
                    std::future::pending::<()>().await;
                    unreachable!("pending never resolves")
                }
                Some((_, text)) if text.starts_with("run:") => ResponseItem::FunctionCall {
                    name: "shell".into(),
                    arguments: serde_json::json!({"command": ["bash", "-lc", &text[4..]]})
                        .to_string(),
                    call_id: format!("call-{}", request.input.len()),
                },
                _ => ResponseItem::assistant_message("ok"),
            },
            None => ResponseItem::assistant_message("ok"),
        };
        Ok(ModelResponse {
            items: vec![item],
            usage: None,
        })
    }
}

struct FakeFactory(Arc<FakeModel>);

impl ModelClientFactory for FakeFactory {
    fn client(&self, _: &ModelProviderInfo) -> Result<Arc<dyn ModelClient>, ModelError> {
        Ok(self.0.clone())
    }
}

fn manager(home: &std::path::Path, model: Arc<FakeModel>) -> ThreadManager {
    ThreadManager::new(
        ThreadManagerOptions {
            home: home.to_path_buf(),
            overrides: ConfigOverrides::default(),
            source: SessionSource::Exec,
        },
        Arc::new(FakeFactory(model)),
    )
    .expect("manager")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_runs_and_a_new_manager_continues_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).expect("project");
    let model = Arc::new(FakeModel::default());
    let first = manager(&dir.path().join("home"), model.clone());
    let result = first
        .start_thread(
            StartThread {
                prompt: "run:echo from-the-tool".into(),
                cwd: Some(project.clone()),
                ..Default::default()
            },
            TurnHooks::default(),
        )
        .await
        .expect("turn");
    assert_eq!(result.message, "saw: from-the-tool");

    // A second manager (another process, in effect) has nothing in memory.
    let second = manager(&dir.path().join("home"), model.clone());
    let result = second
        .reply(
            ReplyToThread {
                thread_id: result.thread_id.to_string(),
                prompt: "again".into(),
                ..Default::default()
            },
            TurnHooks::default(),
        )
        .await
        .expect("reply");
    assert_eq!(result.message, "ok");
    let last = model
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .cloned()
        .expect("request");
    let kinds: Vec<&str> = last
        .input
        .iter()
        .map(|item| match item {
            ResponseItem::Message { role, .. } => role.as_str(),
            ResponseItem::FunctionCall { .. } => "call",
            ResponseItem::FunctionCallOutput { .. } => "output",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["user", "call", "output", "assistant", "user"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_turn_records_the_abort_and_the_thread_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Arc::new(FakeModel::default());
    let manager = manager(&dir.path().join("home"), model.clone());
    let started = manager
        .start_thread(
            StartThread {
                prompt: "first".into(),
                cwd: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
            TurnHooks::default(),
        )
        .await
        .expect("turn");
    let hooks = TurnHooks::default();
    let cancel = hooks.cancel.clone();
    // Cancel once the model request is in flight, however slow the machine.
    tokio::spawn(async move {
        model.hanging.notified().await;
        cancel.cancel();
    });
    let outcome = manager
        .reply(
            ReplyToThread {
                thread_id: started.thread_id.to_string(),
                prompt: "hang".into(),
                ..Default::default()
            },
            hooks,
        )
        .await;
    assert!(matches!(outcome, Err(CoreError::Cancelled)), "{outcome:?}");
    let text = manager
        .store()
        .export_thread(started.thread_id)
        .expect("export");
    assert!(text.contains("\"turn_aborted\""), "{text}");

    let next = manager
        .reply(
            ReplyToThread {
                thread_id: started.thread_id.to_string(),
                prompt: "after".into(),
                ..Default::default()
            },
            TurnHooks::default(),
        )
        .await
        .expect("the thread stays usable");
    assert_eq!(next.message, "ok");
}

#[test]
fn the_http_factory_reuses_a_client_per_provider_setting() {
    use baton_core::HttpModelClientFactory;
    let factory = HttpModelClientFactory::default();
    let provider = ModelProviderInfo {
        id: "p".into(),
        name: "P".into(),
        base_url: "http://127.0.0.1:9/v1".into(),
        env_key: None,
        wire_api: Default::default(),
        http_headers: Default::default(),
        request_max_retries: None,
        stream_idle_timeout_ms: None,
    };
    let first = factory.client(&provider).expect("client");
    let again = factory.client(&provider).expect("client");
    assert!(
        Arc::ptr_eq(&first, &again),
        "the same setting reuses its client"
    );
    let edited = ModelProviderInfo {
        base_url: "http://127.0.0.1:10/v1".into(),
        ..provider
    };
    let other = factory.client(&edited).expect("client");
    assert!(
        !Arc::ptr_eq(&first, &other),
        "an edited setting gets a new client"
    );
}
