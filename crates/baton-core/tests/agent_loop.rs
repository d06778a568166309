//! The agent loop against an in-memory model (no HTTP, no process): the `ModelClient` and
//! `ModelClientFactory` traits are the seam. The last tests also keep the threads in memory,
//! through the `Store` trait.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_config::ConfigOverrides;
use baton_core::{
    CoreError, ErrorKind, ModelClientFactory, ReplyToThread, StartThread, ThreadManager,
    ThreadManagerOptions, TurnHooks,
};
use baton_model::{ModelClient, ModelError, ModelRequest, ModelResponse};
use baton_protocol::{ModelProviderInfo, ResponseItem, SessionSource, ThreadId};
use baton_store::{MemoryStore, Store};

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

/// The thread manager on the in-memory store (`baton_store::MemoryStore`): the `Store` trait is
/// the seam, as `ModelClientFactory` is for the model. Nothing but the (absent) config file is
/// read from `BATON_HOME`.
struct Setup {
    dir: tempfile::TempDir,
    model: Arc<FakeModel>,
    store: MemoryStore,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("project")).expect("project");
        Self {
            dir,
            model: Arc::new(FakeModel::default()),
            store: MemoryStore::new(),
        }
    }

    /// A manager on the shared memory store, as process `pid` would run it.
    fn manager(&self, pid: u32) -> ThreadManager {
        ThreadManager::with_store(
            ThreadManagerOptions {
                home: self.dir.path().join("home"),
                overrides: ConfigOverrides::default(),
                source: SessionSource::Exec,
            },
            Arc::new(FakeFactory(self.model.clone())),
            Arc::new(self.store.as_process(pid)),
        )
        .expect("manager")
    }

    async fn start(&self, manager: &ThreadManager, prompt: &str) -> ThreadId {
        manager
            .start_thread(
                StartThread {
                    prompt: prompt.into(),
                    cwd: Some(self.dir.path().join("project")),
                    ..Default::default()
                },
                TurnHooks::default(),
            )
            .await
            .expect("first turn")
            .thread_id
    }

    fn last_request_kinds(&self) -> Vec<&'static str> {
        let requests = self
            .model
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let last = requests.last().expect("a request");
        last.input
            .iter()
            .map(|item| match item {
                ResponseItem::Message { role, .. } if role == "user" => "user",
                ResponseItem::Message { .. } => "assistant",
                ResponseItem::FunctionCall { .. } => "call",
                ResponseItem::FunctionCallOutput { .. } => "output",
                _ => "other",
            })
            .collect()
    }
}

fn reply(thread_id: ThreadId, prompt: &str) -> ReplyToThread {
    ReplyToThread {
        thread_id: thread_id.to_string(),
        prompt: prompt.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_started_in_one_process_is_continued_from_the_store_in_another() {
    let setup = Setup::new();
    let first = setup.manager(1111);
    let id = setup.start(&first, "run:echo from-the-tool").await;
    assert_eq!(
        setup.store.unsynced_bytes(id),
        Some(0),
        "a turn ends durable"
    );

    // Another process has nothing in memory: the history comes from the store.
    let second = setup.manager(2222);
    let answer = second
        .reply(reply(id, "again"), TurnHooks::default())
        .await
        .expect("reply");
    assert_eq!(answer.message, "ok");
    assert_eq!(
        setup.last_request_kinds(),
        ["user", "call", "output", "assistant", "user"]
    );
    assert_eq!(setup.store.unsynced_bytes(id), Some(0));

    let turns = setup.store.recorded_turns();
    let prompts: Vec<_> = turns.iter().map(|t| t.user_message.as_deref()).collect();
    assert_eq!(prompts, [Some("run:echo from-the-tool"), Some("again")]);
    assert_eq!(
        turns[0].agent_message.as_deref(),
        Some("saw: from-the-tool")
    );

    let exported = setup.store.export_thread(id).expect("export");
    assert!(exported.contains("\"session_meta\""), "{exported}");
    assert!(exported.contains("from-the-tool"), "{exported}");
    // The manager built no path under BATON_HOME: everything went through the store.
    let home: Vec<_> = std::fs::read_dir(setup.dir.path().join("home"))
        .expect("home")
        .collect();
    assert!(home.is_empty(), "{home:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_told_the_thread_is_busy_and_by_whom() {
    let setup = Setup::new();
    let holder = setup.manager(4242);
    let id = setup.start(&holder, "first").await;

    let hooks = TurnHooks::default();
    let cancel = hooks.cancel.clone();
    let running = {
        let holder = Arc::new(holder);
        let holder_for_turn = holder.clone();
        tokio::spawn(async move { holder_for_turn.reply(reply(id, "hang"), hooks).await })
    };
    setup.model.hanging.notified().await;

    let other = setup.manager(5151);
    let busy = other
        .reply(reply(id, "me too"), TurnHooks::default())
        .await
        .expect_err("the thread is held by process 4242");
    assert_eq!(busy.kind(), ErrorKind::Busy, "{busy}");
    assert!(busy.to_string().contains("process 4242"), "{busy}");

    cancel.cancel();
    let cancelled = running.await.expect("task");
    assert!(
        matches!(cancelled, Err(CoreError::Cancelled)),
        "{cancelled:?}"
    );
    let after = other
        .reply(reply(id, "me now"), TurnHooks::default())
        .await
        .expect("the lock was released with the turn");
    assert_eq!(after.message, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_keeps_the_turns_asked_for_and_leaves_the_source_alone() {
    let setup = Setup::new();
    let manager = setup.manager(1111);
    let source = setup.start(&manager, "one").await;
    manager
        .reply(reply(source, "two"), TurnHooks::default())
        .await
        .expect("second turn");
    let before = setup.store.export_thread(source).expect("export");

    let fork = manager
        .fork(&source.to_string(), Some(1))
        .await
        .expect("fork")
        .thread_id;
    assert_ne!(fork, source);
    let forked = setup.store.read_thread(fork).expect("read the fork");
    assert_eq!(forked.meta.forked_from, Some(source));
    let texts: Vec<String> = forked
        .history
        .iter()
        .filter_map(|item| item.message_text().map(|(_, text)| text))
        .collect();
    assert_eq!(texts, ["one", "ok"]);
    assert_eq!(setup.store.export_thread(source).expect("export"), before);

    let continued = manager
        .reply(reply(fork, "three"), TurnHooks::default())
        .await
        .expect("the fork continues");
    assert_eq!(continued.message, "ok");
    assert_eq!(setup.last_request_kinds(), ["user", "assistant", "user"]);
}

/// A turn's prompt, the `user_message` event that lists it and the settings it runs with are
/// one write: a process killed between separate writes would leave a prompt that the model
/// is shown on resume but that listings and the event stream do not have (seen on
/// PostgreSQL, where each write is its own commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_and_its_user_message_event_are_written_together() {
    let setup = Setup::new();
    let manager = setup.manager(1111);
    let id = setup.start(&manager, "first prompt").await;
    manager
        .reply(reply(id, "second prompt"), TurnHooks::default())
        .await
        .expect("reply");

    let writes = setup.store.appended_together(id);
    for prompt in ["first prompt", "second prompt"] {
        let holding: Vec<&Vec<String>> = writes
            .iter()
            .filter(|lines| lines.iter().any(|line| line.contains(prompt)))
            .collect();
        assert_eq!(holding.len(), 1, "{prompt}: {writes:#?}");
        let kinds: Vec<&str> = holding[0]
            .iter()
            .map(|line| {
                if line.contains(r#""type":"turn_context""#) {
                    "turn_context"
                } else if line.contains(r#""type":"user_message""#) {
                    "user_message event"
                } else if line.contains(r#""role":"user""#) {
                    "user message"
                } else {
                    "other"
                }
            })
            .collect();
        assert_eq!(
            kinds,
            ["turn_context", "user message", "user_message event"],
            "{prompt}: {writes:#?}"
        );
    }
    // Likewise the model's answer and the `agent_message` event that ends the turn.
    let answers: Vec<&Vec<String>> = writes
        .iter()
        .filter(|lines| {
            lines
                .iter()
                .any(|line| line.contains(r#""type":"agent_message""#))
        })
        .collect();
    assert_eq!(answers.len(), 2, "{writes:#?}");
    for lines in answers {
        assert!(
            lines
                .iter()
                .any(|line| line.contains(r#""role":"assistant""#)),
            "{lines:#?}"
        );
    }
}
