//! The thread manager: starts threads, finds and rehydrates them by id, runs their turns one
//! after another, and forgets idle ones.
//!
//! Architecture invariant: memory is a cache of the store. A thread in memory is re-read
//! whenever its transcript grew behind our back, and dropping every cached thread at any time
//! loses nothing.
//!
//! Rooms: `slots` (live threads in memory, one call at a time each, idle eviction), `locate`
//! (finding a thread: baton's store, then Codex's; rehydration and Codex import), `turns`
//! (starting, continuing and forking threads), `listing` (listing sessions, transcript text),
//! `tasks` (durable MCP tasks: their state, answers, cancellation, resumption).

mod listing;
mod locate;
mod slots;
mod tasks;
mod turns;

pub use tasks::{TaskLookup, TaskSetup};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_config::{Config, ConfigOverrides, TomlValue};
use baton_model::{HttpModelClient, ModelClient, ModelError};
use baton_protocol::{
    ApprovalPolicy, ModelProviderInfo, Plan, SandboxMode, SessionSource, ThreadId,
};
use baton_store::{FileStore, Store, ThreadSummary};
use chrono::Utc;

use crate::access::Access;
use crate::error::CoreError;
use crate::usage::TurnUsage;

use slots::ThreadSlot;

/// Builds model clients; the real one speaks HTTP, tests may script one.
pub trait ModelClientFactory: Send + Sync {
    // Building a client is rare and its error carries the provider's details; not worth a box.
    #[allow(clippy::result_large_err)]
    fn client(&self, provider: &ModelProviderInfo) -> Result<Arc<dyn ModelClient>, ModelError>;
}

/// Clients that talk to the configured provider over HTTP. One client per provider setting is
/// kept, so a server's turns reuse its connections and TLS setup instead of building both for
/// every turn.
#[derive(Default)]
pub struct HttpModelClientFactory {
    clients: Mutex<HashMap<String, Arc<dyn ModelClient>>>,
}

impl ModelClientFactory for HttpModelClientFactory {
    #[allow(clippy::result_large_err)]
    fn client(&self, provider: &ModelProviderInfo) -> Result<Arc<dyn ModelClient>, ModelError> {
        // Keyed by every setting, so an edited config.toml gets a new client.
        let key = serde_json::to_string(provider).unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client: Arc<dyn ModelClient> = Arc::new(HttpModelClient::new(provider.clone())?);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

pub struct ThreadManagerOptions {
    pub home: PathBuf,
    /// Overrides from the command line (`-c`, `--model`, `--profile`), applied to every call.
    pub overrides: ConfigOverrides,
    /// Written into `session_meta.source` of threads this manager starts.
    pub source: SessionSource,
}

/// A request to start a thread (the `baton` tool, `baton exec`).
#[derive(Debug, Clone, Default)]
pub struct StartThread {
    pub prompt: String,
    pub cwd: Option<PathBuf>,
    pub model: Option<String>,
    pub profile: Option<String>,
    pub sandbox: Option<SandboxMode>,
    pub approval_policy: Option<ApprovalPolicy>,
    pub base_instructions: Option<String>,
    pub developer_instructions: Option<String>,
    pub config: Vec<(String, TomlValue)>,
    pub access: Access,
}

/// A request to continue a thread (the `baton-reply` tool, `baton exec resume`).
#[derive(Debug, Clone, Default)]
pub struct ReplyToThread {
    /// As the caller sent it; parsed as a UUID before it comes near a path.
    pub thread_id: String,
    pub prompt: String,
    /// Overrides the recorded cwd, e.g. after the project moved.
    pub cwd: Option<PathBuf>,
    /// Compact the conversation before this turn.
    pub compact: bool,
    pub access: Access,
}

#[derive(Debug, Clone)]
pub struct TurnResult {
    pub thread_id: ThreadId,
    pub message: String,
    /// The turn's token usage; `None` for a fork, which asks no model.
    pub usage: Option<TurnUsage>,
    /// The thread's newest plan (`update_plan`), from this turn or an earlier one.
    pub plan: Option<Plan>,
}

/// Filters for [`ThreadManager::list_sessions`].
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    /// Also list the Codex CLI's sessions (first page only).
    pub include_codex: bool,
    pub text: Option<String>,
    pub cwd: Option<PathBuf>,
    pub updated_after: Option<chrono::DateTime<Utc>>,
    pub updated_before: Option<chrono::DateTime<Utc>>,
    pub limit: usize,
    pub cursor: Option<String>,
    pub access: Access,
}

pub type SessionSummary = ThreadSummary;

#[derive(Debug, Clone)]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    pub next_cursor: Option<String>,
}

pub struct ThreadManager {
    options: ThreadManagerOptions,
    store: Arc<dyn Store>,
    models: Arc<dyn ModelClientFactory>,
    slots: Mutex<HashMap<ThreadId, Arc<ThreadSlot>>>,
    /// The MCP tasks whose turns run in this process.
    live_tasks: crate::tasks::LiveTasks,
    /// Answers to a task's recorded question that came while no turn here asked it yet.
    early_answers: Mutex<HashMap<crate::tasks::TaskId, crate::tasks::KeptAnswer>>,
    /// Set by the MCP server: lets a call on a thread continue the task a dead process left.
    task_renderer: std::sync::OnceLock<crate::tasks::RenderResult>,
    idle_ttl: Duration,
}

impl ThreadManager {
    /// Opens the store under `options.home` and checks that the configuration loads.
    pub fn new(
        options: ThreadManagerOptions,
        models: Arc<dyn ModelClientFactory>,
    ) -> Result<Self, CoreError> {
        Self::open(options, models, None)
    }

    /// Like [`ThreadManager::new`], on another store (tests use an in-memory one).
    pub fn with_store(
        options: ThreadManagerOptions,
        models: Arc<dyn ModelClientFactory>,
        store: Arc<dyn Store>,
    ) -> Result<Self, CoreError> {
        Self::open(options, models, Some(store))
    }

    fn open(
        options: ThreadManagerOptions,
        models: Arc<dyn ModelClientFactory>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<Self, CoreError> {
        let config = Config::load(&options.home, &options.overrides)?;
        for key in &config.ignored_keys {
            tracing::warn!(
                "{}: unknown key `{key}` ignored (baton does not use it)",
                config.config_file.display()
            );
        }
        let store: Arc<dyn Store> = match store {
            Some(store) => store,
            None => Arc::new(FileStore::open(&options.home)?),
        };
        Ok(Self {
            idle_ttl: config.idle_thread_ttl,
            options,
            store,
            models,
            slots: Mutex::new(HashMap::new()),
            live_tasks: Default::default(),
            early_answers: Mutex::new(HashMap::new()),
            task_renderer: std::sync::OnceLock::new(),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration with the manager's overrides and `extra` on top.
    pub fn config(&self, extra: Option<&StartThread>) -> Result<Config, CoreError> {
        let mut overrides = self.options.overrides.clone();
        if let Some(start) = extra {
            overrides.values.extend(start.config.iter().cloned());
            overrides.profile = start.profile.clone().or(overrides.profile);
            overrides.model = start.model.clone().or(overrides.model);
            overrides.sandbox_mode = start.sandbox.or(overrides.sandbox_mode);
            overrides.approval_policy = start.approval_policy.or(overrides.approval_policy);
            overrides.base_instructions = start
                .base_instructions
                .clone()
                .or(overrides.base_instructions);
            overrides.developer_instructions = start
                .developer_instructions
                .clone()
                .or(overrides.developer_instructions);
        }
        Ok(Config::load(&self.options.home, &overrides)?)
    }
}

pub(super) fn existing_dir(path: &Path) -> Result<PathBuf, CoreError> {
    match std::fs::canonicalize(path) {
        Ok(dir) if dir.is_dir() => Ok(dir),
        _ => Err(CoreError::CwdMissing {
            cwd: path.to_path_buf(),
        }),
    }
}

/// Runs blocking store work off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| CoreError::Internal(format!("a background task failed: {err}")))
}
