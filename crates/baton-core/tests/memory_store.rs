//! The thread manager and the agent loop on the in-memory store (`baton_store::MemoryStore`):
//! the `Store` trait is the seam, as `ModelClientFactory` is for the model. Nothing here
//! touches `BATON_HOME` beyond reading its (absent) config file.

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

/// Answers `run:<script>` with a shell call, a tool output with `saw: <its last line>`, `hang`
/// never, anything else with `ok`; keeps every request.
#[derive(Default)]
struct Model {
    requests: Mutex<Vec<ModelRequest>>,
    hanging: tokio::sync::Notify,
}

#[async_trait]
impl ModelClient for Model {
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
                    arguments: serde_json::json!({"command": ["bash", "-c", &text[4..]]})
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

struct Factory(Arc<Model>);

impl ModelClientFactory for Factory {
    fn client(&self, _: &ModelProviderInfo) -> Result<Arc<dyn ModelClient>, ModelError> {
        Ok(self.0.clone())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    model: Arc<Model>,
    store: MemoryStore,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("project")).expect("project");
        Self {
            dir,
            model: Arc::new(Model::default()),
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
            Arc::new(Factory(self.model.clone())),
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
