//! The thread manager: starts threads, finds and rehydrates them by id, runs their turns one
//! after another, and forgets idle ones.
//!
//! Architecture invariant: memory is a cache of the store. A thread in memory is re-read
//! whenever its transcript grew behind our back, and dropping every cached thread at any time
//! loses nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_config::{Config, ConfigOverrides, TomlValue};
use baton_model::{HttpModelClient, ModelClient, ModelError};
use baton_protocol::{
    ApprovalPolicy, BaseInstructions, CLI_VERSION, EventMsg, ModelProviderInfo, ORIGINATOR, Plan,
    ResponseItem, RolloutItem, SandboxMode, SessionMeta, SessionSource, ThreadId, format_timestamp,
    history_text,
};
use baton_store::{
    FileStore, ListQuery, LoadedRollout, Store, StoreError, ThreadOrigin, ThreadSummary,
    TranscriptWriter, TurnRecord,
};
use chrono::Utc;

use crate::access::Access;
use crate::agent::{LiveThread, ThreadSettings, Turn, blocking_section, default_base_instructions};
use crate::codex_import;
use crate::error::CoreError;
use crate::hooks::TurnHooks;
use crate::project_doc::{self, ProjectDocOptions};
use crate::redact::Secrets;
use crate::tools;
use crate::usage::TurnUsage;

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

/// A thread's place in memory. Its async mutex serves calls on the thread one at a time, in
/// the order they arrived (tokio's mutex is fair).
struct ThreadSlot {
    live: tokio::sync::Mutex<Option<LiveThread>>,
    last_used: Mutex<Instant>,
}

pub struct ThreadManager {
    options: ThreadManagerOptions,
    store: Arc<dyn Store>,
    models: Arc<dyn ModelClientFactory>,
    slots: Mutex<HashMap<ThreadId, Arc<ThreadSlot>>>,
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

    /// Starts a new thread and runs its first turn.
    pub async fn start_thread(
        &self,
        request: StartThread,
        hooks: TurnHooks,
    ) -> Result<TurnResult, CoreError> {
        request
            .access
            .check_overrides(request.config.iter().map(|(key, _)| key.as_str()))?;
        let config = self.config(Some(&request))?;
        let cwd = match &request.cwd {
            Some(cwd) => existing_dir(cwd)?,
            None => std::env::current_dir().map_err(|err| {
                CoreError::Internal(format!("cannot read the current directory: {err}"))
            })?,
        };
        request.access.check_cwd(&cwd)?;
        request.access.check_sandbox(config.sandbox_mode)?;
        // A provider that cannot be used fails before a session exists.
        self.models.client(&config.model_provider)?;
        let id = ThreadId::new();
        let meta = SessionMeta {
            id,
            timestamp: format_timestamp(Utc::now()),
            cwd: cwd.clone(),
            originator: ORIGINATOR.to_owned(),
            cli_version: CLI_VERSION.to_owned(),
            source: self.options.source,
            model_provider: Some(config.model_provider.id.clone()),
            model: Some(config.model.clone()),
            base_instructions: Some(BaseInstructions {
                text: config
                    .base_instructions
                    .clone()
                    .unwrap_or_else(|| default_base_instructions().to_owned()),
            }),
            developer_instructions: config.developer_instructions.clone(),
            git: None,
            imported_from: None,
            forked_from: None,
            owner: request.access.owner.clone(),
        };
        let store = self.store.clone();
        let meta_for_store = meta.clone();
        let mut writer = blocking(move || store.create_thread(&meta_for_store)).await??;
        let mut live = LiveThread {
            id,
            path: writer.path().to_path_buf(),
            settings: ThreadSettings {
                cwd,
                model: config.model.clone(),
                provider_id: config.model_provider.id.clone(),
                approval_policy: config.approval_policy,
                sandbox: config.sandbox_policy(),
                effort: config.model_reasoning_effort.clone(),
            },
            meta,
            history: Vec::new(),
            file_len: writer.len(),
            approved_commands: HashSet::new(),
            turn_usage: TurnUsage::default(),
            plan: None,
        };
        // Project instructions first, as Codex sends them; recorded like any item, so a
        // resumed or forked session keeps the ones it started with.
        let options = ProjectDocOptions {
            max_bytes: config.project_doc_max_bytes,
            fallback_filenames: config.project_doc_fallback_filenames.clone(),
        };
        let home = self.options.home.clone();
        let session_cwd = live.settings.cwd.clone();
        let project_doc =
            blocking(move || project_doc::instructions_message(&home, &session_cwd, &options))
                .await?;
        let developer = config
            .developer_instructions
            .clone()
            .map(ResponseItem::developer_message);
        for item in project_doc.into_iter().chain(developer) {
            writer.append(&RolloutItem::ResponseItem(item.clone()))?;
            live.history.push(item);
            live.file_len = writer.len();
        }
        let slot = self.slot(id);
        let mut guard = slot.live.lock().await;
        let _lock = blocking_section(|| self.store.lock_thread(id))?;
        *guard = Some(live);
        let Some(live) = guard.as_mut() else {
            return Err(CoreError::Internal("thread slot emptied".into()));
        };
        let outcome = self
            .run_turn(live, &mut writer, &config, &request.prompt, &hooks, false)
            .await;
        forget_after_store_error(&mut guard, &outcome);
        slot.touch();
        outcome.map_err(|err| CoreError::FirstTurnFailed {
            id,
            source: Box::new(err),
        })
    }

    /// Continues a thread by id: from memory, else from baton's store, else from Codex's.
    pub async fn reply(
        &self,
        request: ReplyToThread,
        hooks: TurnHooks,
    ) -> Result<TurnResult, CoreError> {
        let id = ThreadId::parse(&request.thread_id)?;
        let config = self.config(None)?;
        // Before the slot and the lock: another owner's thread must not even look busy.
        self.check_owner(id, &request.access).await?;
        let slot = self.slot(id);
        // A call cancelled while it waited for an earlier one on this thread writes nothing.
        let mut guard = tokio::select! {
            biased;
            _ = hooks.cancel.cancelled() => return Err(CoreError::Cancelled),
            guard = slot.live.lock() => guard,
        };
        let lock = blocking_section(|| self.store.lock_thread(id))?;

        let store = self.store.clone();
        let mut writer = match guard.as_ref() {
            Some(_) => blocking(move || store.append_to(id)).await??,
            None => {
                let live = match self.load_thread(id, &config).await {
                    Ok(live) => live,
                    Err(err @ CoreError::UnknownThread { .. }) => {
                        lock.release_unused();
                        return Err(err);
                    }
                    Err(err) => return Err(err),
                };
                *guard = Some(live);
                blocking(move || store.append_to(id)).await??
            }
        };
        let Some(live) = guard.as_mut() else {
            return Err(CoreError::Internal("thread slot emptied".into()));
        };
        if writer.len() != live.file_len {
            // Another process appended to the transcript: our copy is stale.
            tracing::info!(thread = %id, "transcript changed on disk; re-reading it");
            let approved = std::mem::take(&mut live.approved_commands);
            *live = self.load_thread(id, &config).await?;
            live.approved_commands = approved;
        }
        let cwd = match request.cwd {
            Some(cwd) => existing_dir(&cwd)?,
            None if !live.settings.cwd.is_dir() => {
                return Err(CoreError::RecordedCwdMissing {
                    id,
                    cwd: live.settings.cwd.clone(),
                });
            }
            None => live.settings.cwd.clone(),
        };
        request.access.check_cwd(&cwd)?;
        request.access.check_sandbox(live.settings.sandbox.mode)?;
        live.settings.cwd = cwd;
        let outcome = self
            .run_turn(
                live,
                &mut writer,
                &config,
                &request.prompt,
                &hooks,
                request.compact,
            )
            .await;
        forget_after_store_error(&mut guard, &outcome);
        slot.touch();
        outcome
    }

    async fn run_turn(
        &self,
        live: &mut LiveThread,
        writer: &mut dyn TranscriptWriter,
        config: &Config,
        prompt: &str,
        hooks: &TurnHooks,
        compact_first: bool,
    ) -> Result<TurnResult, CoreError> {
        let provider = config
            .provider(&live.settings.provider_id)
            .cloned()
            .unwrap_or_else(|| config.model_provider.clone());
        let model = self.models.client(&provider)?;
        let compact_limit = config.auto_compact_token_limit_for(&live.settings.model);
        let secret_names = config.secret_env_names();
        let outcome = Turn {
            thread: live,
            writer,
            model,
            hooks,
            compact_limit,
            compact_first,
            unreported: 0,
            command_env: baton_exec::command_env(
                &config.shell_environment_policy,
                &secret_names,
                std::env::vars_os(),
            ),
            secrets: Secrets::from_env(&secret_names, std::env::vars_os()),
        }
        .run(prompt)
        .await;
        // The index is a cache: a failure to update it is logged, never fatal.
        let record = TurnRecord {
            id: live.id,
            path: live.path.clone(),
            cwd: live.settings.cwd.clone(),
            created_at: live.id.created_at().unwrap_or_else(Utc::now),
            model: Some(live.settings.model.clone()),
            source: ThreadOrigin::of(&live.meta),
            user_message: Some(prompt.to_owned()),
            agent_message: outcome.as_ref().ok().cloned(),
        };
        let store = self.store.clone();
        match blocking(move || store.record_turn(&record)).await {
            Ok(Err(err)) => tracing::warn!("could not update the session index: {err}"),
            Err(err) => tracing::warn!("could not update the session index: {err}"),
            Ok(Ok(())) => {}
        }
        let message = outcome?;
        let window = config.context_window_for(&live.settings.model);
        Ok(TurnResult {
            thread_id: live.id,
            message,
            usage: Some(live.turn_usage.clone().with_window(window)),
            plan: live.plan.clone(),
        })
    }

    /// Finds a thread's transcript and rebuilds it in memory.
    async fn load_thread(&self, id: ThreadId, config: &Config) -> Result<LiveThread, CoreError> {
        let store = self.store.clone();
        let codex_home = config.codex_home.clone();
        let read = blocking(move || store.read_thread(id)).await?;
        let loaded = match read {
            Ok(loaded) => loaded,
            Err(StoreError::NotFound { searched, .. }) => {
                let codex_home_for_search = codex_home.clone();
                let found =
                    blocking(move || baton_store::find_codex_rollout(&codex_home_for_search, id))
                        .await??;
                let Some(codex_path) = found else {
                    return Err(CoreError::UnknownThread {
                        id,
                        baton_sessions: searched,
                        codex_home,
                    });
                };
                return self.import_codex(id, &codex_path, config).await;
            }
            Err(err) => return Err(err.into()),
        };
        for warning in &loaded.warnings {
            tracing::warn!(thread = %id, "{warning}");
        }
        tracing::info!(
            thread = %id,
            path = %loaded.path.display(),
            items = loaded.history.len(),
            "loaded the thread from its transcript"
        );
        Ok(rehydrate(loaded, config))
    }

    /// Copies a Codex session into baton's store under the same id (SPEC §6). Codex's file is
    /// only read.
    async fn import_codex(
        &self,
        id: ThreadId,
        codex_path: &Path,
        config: &Config,
    ) -> Result<LiveThread, CoreError> {
        let path = codex_path.to_path_buf();
        let loaded = blocking(move || baton_store::read_rollout(&path)).await??;
        let settings = settings_of(&loaded, config);
        let (meta, history) = codex_import::as_baton_thread(&loaded, settings.clone());
        let live = self.create_with_history(meta, settings, history).await?;
        tracing::info!(thread = %id, from = %codex_path.display(), "imported a Codex session");
        Ok(live)
    }

    /// Writes a new thread holding a whole history at once (a crash leaves no partial copy)
    /// and returns it as a live thread.
    async fn create_with_history(
        &self,
        meta: SessionMeta,
        settings: ThreadSettings,
        history: Vec<ResponseItem>,
    ) -> Result<LiveThread, CoreError> {
        let mut items = Vec::with_capacity(history.len() + 1);
        items.push(RolloutItem::TurnContext(settings.turn_context()));
        items.extend(history.iter().cloned().map(RolloutItem::ResponseItem));
        let store = self.store.clone();
        let meta_for_store = meta.clone();
        let writer =
            blocking(move || store.create_thread_with_history(&meta_for_store, &items)).await??;
        let file_len = writer.len();
        Ok(LiveThread {
            id: meta.id,
            path: writer.path().to_path_buf(),
            meta,
            settings,
            plan: tools::latest_plan(&history),
            history,
            file_len,
            approved_commands: HashSet::new(),
            turn_usage: TurnUsage::default(),
        })
    }

    /// The Codex CLI's sessions under `codex_home` that baton has not imported yet, newest
    /// first.
    async fn codex_sessions(&self) -> Result<Vec<SessionSummary>, CoreError> {
        let codex_home = self.config(None)?.codex_home;
        let store = self.store.clone();
        blocking(move || {
            let imported = store.thread_ids();
            baton_store::list_codex_sessions(&codex_home)
                .into_iter()
                .filter(|summary| !imported.contains(&summary.id))
                .collect()
        })
        .await
    }

    /// A new thread whose history is the first `at_turn` turns of another (all of them when
    /// `None`). The source transcript is only read.
    pub async fn fork(
        &self,
        thread_id: &str,
        at_turn: Option<u32>,
    ) -> Result<TurnResult, CoreError> {
        self.fork_as(thread_id, at_turn, &Access::default()).await
    }

    /// [`ThreadManager::fork`] within a caller's reach: the source must be visible to it and
    /// its recorded cwd inside its workspace roots; the fork belongs to the caller.
    pub async fn fork_as(
        &self,
        thread_id: &str,
        at_turn: Option<u32>,
        access: &Access,
    ) -> Result<TurnResult, CoreError> {
        let source = self.read_visible(thread_id, access).await?;
        let config = self.config(None)?;
        let source_id = source.meta.id;
        let settings = settings_of(&source, &config);
        access.check_cwd(&settings.cwd)?;
        // A Codex session not yet imported is converted first, as `baton-reply` would.
        let (mut meta, history) = if source.meta.imported_from.is_none()
            && ThreadOrigin::of(&source.meta) == ThreadOrigin::Codex
        {
            codex_import::as_baton_thread(&source, settings.clone())
        } else {
            (source.meta.clone(), source.history.clone())
        };
        let turns = user_turn_starts(&history);
        let history = match at_turn {
            None => history,
            Some(n) if n as usize > turns.len() || n == 0 => {
                return Err(CoreError::TurnOutOfRange {
                    id: source_id,
                    requested: n,
                    turns: turns.len(),
                });
            }
            Some(n) => match turns.get(n as usize) {
                Some(&end) => history[..end].to_vec(),
                None => history,
            },
        };
        let id = ThreadId::new();
        meta.id = id;
        meta.timestamp = format_timestamp(Utc::now());
        meta.forked_from = Some(source_id);
        meta.source = self.options.source;
        if access.owner.is_some() {
            meta.owner = access.owner.clone();
        }
        let child = self.create_with_history(meta, settings, history).await?;
        let kept = at_turn.map_or(turns.len(), |n| n as usize);
        Ok(TurnResult {
            thread_id: id,
            message: format!(
                "forked thread {source_id} at turn {kept} of {} into thread {id}; continue it by that id",
                turns.len()
            ),
            usage: None,
            plan: child.plan,
        })
    }

    /// Lists sessions, newest first (the `baton-sessions` tool, `baton sessions list`).
    ///
    /// With `include_codex`, the first page also holds the Codex CLI's sessions that baton has
    /// not imported (they have no place in the index, so they are not paged).
    pub async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, CoreError> {
        // The index holds canonical cwds; a symlinked or relative path must match them.
        let cwd = query
            .cwd
            .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir));
        let store = self.store.clone();
        let list_query = ListQuery {
            cwd: cwd.clone(),
            text: query.text.clone(),
            updated_after: query.updated_after,
            updated_before: query.updated_before,
            limit: query.limit,
            cursor: query.cursor.clone(),
            owner: query.access.owner.clone(),
        };
        let page = blocking(move || store.list(&list_query)).await??;
        let mut sessions = page.threads;
        // Codex's sessions have no owner: a caller with one never sees them.
        if query.include_codex && query.cursor.is_none() && query.access.owner.is_none() {
            let text = query.text.as_deref().map(str::to_lowercase);
            let codex = self.codex_sessions().await?.into_iter().filter(|s| {
                cwd.as_ref().is_none_or(|dir| &s.cwd == dir)
                    && query.updated_after.is_none_or(|t| s.updated_at >= t)
                    && query.updated_before.is_none_or(|t| s.updated_at < t)
                    && text
                        .as_deref()
                        .is_none_or(|t| s.search_text.to_lowercase().contains(t))
            });
            sessions.extend(codex);
            sessions.sort_by_key(|s| std::cmp::Reverse(s.updated_at));
            sessions.truncate(query.limit.max(1));
        }
        Ok(SessionPage {
            sessions,
            next_cursor: page.next_cursor,
        })
    }

    /// Reads a thread's transcript (baton's, else Codex's) without continuing it.
    pub async fn read_thread(&self, thread_id: &str) -> Result<LoadedRollout, CoreError> {
        let id = ThreadId::parse(thread_id)?;
        let config = self.config(None)?;
        let store = self.store.clone();
        let read = blocking(move || store.read_thread(id)).await?;
        let path = match read {
            Ok(loaded) => return Ok(loaded),
            Err(StoreError::NotFound { searched, .. }) => {
                let codex_home = config.codex_home.clone();
                let search_home = codex_home.clone();
                blocking(move || baton_store::find_codex_rollout(&search_home, id))
                    .await??
                    .ok_or_else(|| CoreError::UnknownThread {
                        id,
                        baton_sessions: searched,
                        codex_home,
                    })?
            }
            Err(err) => return Err(err.into()),
        };
        Ok(blocking(move || baton_store::read_rollout(&path)).await??)
    }

    /// Refuses a thread the caller may not see, like an unknown id. Reads only the first
    /// line of the transcript (`session_meta`); a thread baton's store does not hold (a Codex
    /// session) has no owner, so no caller with an owner sees it.
    async fn check_owner(&self, id: ThreadId, access: &Access) -> Result<(), CoreError> {
        if access.owner.is_none() {
            return Ok(());
        }
        let store = self.store.clone();
        // A thread the store cannot read has no owner to match (fail closed: not found).
        let owner = blocking(move || store.thread_meta(id))
            .await?
            .ok()
            .and_then(|meta| meta.owner);
        if access.sees(owner.as_deref()) {
            return Ok(());
        }
        Err(CoreError::UnknownThread {
            id,
            baton_sessions: self.store.searched_location(),
            codex_home: self.config(None)?.codex_home,
        })
    }

    /// [`ThreadManager::read_thread`] for a caller: a thread it may not see is answered
    /// exactly like an unknown id, so ids cannot be probed.
    async fn read_visible(
        &self,
        thread_id: &str,
        access: &Access,
    ) -> Result<LoadedRollout, CoreError> {
        let loaded = self.read_thread(thread_id).await?;
        if access.sees(loaded.meta.owner.as_deref()) {
            return Ok(loaded);
        }
        Err(CoreError::UnknownThread {
            id: loaded.meta.id,
            baton_sessions: self.store.searched_location(),
            codex_home: self.config(None)?.codex_home,
        })
    }

    /// The conversation of a thread as readable text, with each turn's token usage and the
    /// plan updates where they happened.
    pub async fn transcript_text(&self, thread_id: &str) -> Result<String, CoreError> {
        self.transcript_text_as(thread_id, &Access::default()).await
    }

    /// [`ThreadManager::transcript_text`] within a caller's reach.
    pub async fn transcript_text_as(
        &self,
        thread_id: &str,
        access: &Access,
    ) -> Result<String, CoreError> {
        let loaded = self.read_visible(thread_id, access).await?;
        let path = loaded.path.clone();
        let store = self.store.clone();
        let id = loaded.meta.id;
        // From the store (files or a database); a Codex session is only a file of Codex's.
        let timeline = blocking(move || match store.export_thread(id) {
            Ok(text) => baton_store::timeline_of_text(&path, &text),
            Err(StoreError::NotFound { .. }) => baton_store::read_timeline(&path),
            Err(err) => Err(err),
        })
        .await??;
        Ok(format!(
            "thread {}\ncwd: {}\nfile: {}\n\n{}",
            loaded.meta.id,
            loaded.meta.cwd.display(),
            loaded.path.display(),
            timeline_text(&timeline)
        ))
    }

    /// The slot of a thread, created if needed; forgets threads idle past the TTL.
    fn slot(&self, id: ThreadId) -> Arc<ThreadSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        evict_idle(&mut slots, self.idle_ttl);
        let slot = slots
            .entry(id)
            .or_insert_with(|| {
                Arc::new(ThreadSlot {
                    live: tokio::sync::Mutex::new(None),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone();
        slot.touch();
        slot
    }

    /// Drops threads idle longer than `idle_thread_ttl` from memory; returns how many were
    /// dropped.
    pub fn evict_idle_threads(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let before = slots.len();
        evict_idle(&mut slots, self.idle_ttl);
        before - slots.len()
    }

    pub fn idle_thread_ttl(&self) -> Duration {
        self.idle_ttl
    }
}

impl ThreadSlot {
    /// Marks the thread as just used, so the idle clock starts when a call ends.
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// After a failed write, memory may hold what the disk does not: drop the cached thread so
/// the next call rebuilds it from the transcript.
fn forget_after_store_error(
    live: &mut Option<LiveThread>,
    outcome: &Result<TurnResult, CoreError>,
) {
    if matches!(outcome, Err(CoreError::Store(_))) {
        *live = None;
    }
}

fn evict_idle(slots: &mut HashMap<ThreadId, Arc<ThreadSlot>>, ttl: Duration) {
    slots.retain(|_, slot| {
        let idle = slot
            .last_used
            .lock()
            .map(|t| t.elapsed() > ttl)
            .unwrap_or(false);
        // A slot someone holds (a running or queued call) stays.
        let in_use = Arc::strong_count(slot) > 1 || slot.live.try_lock().is_err();
        !idle || in_use
    });
}

/// A thread's settings come from its last `turn_context`, else from its `session_meta`, and
/// what the transcript does not say comes from the config.
fn rehydrate(loaded: LoadedRollout, config: &Config) -> LiveThread {
    let settings = settings_of(&loaded, config);
    LiveThread {
        id: loaded.meta.id,
        path: loaded.path,
        meta: loaded.meta,
        settings,
        plan: tools::latest_plan(&loaded.history),
        history: loaded.history,
        file_len: loaded.file_len,
        approved_commands: HashSet::new(),
        turn_usage: TurnUsage::default(),
    }
}

/// The settings a transcript's turns ran with (see [`rehydrate`]).
fn settings_of(loaded: &LoadedRollout, config: &Config) -> ThreadSettings {
    let context = loaded.last_turn_context.as_ref();
    let recorded_provider = context
        .and_then(|c| c.model_provider.clone())
        .or_else(|| loaded.meta.model_provider.clone());
    // A provider this config does not define falls back to the configured one, model included
    // (SPEC §7: imported Codex sessions).
    let (provider_id, model) = match recorded_provider.filter(|id| config.provider(id).is_some()) {
        Some(id) => {
            let model = context
                .map(|c| c.model.clone())
                .filter(|m| !m.is_empty())
                .or_else(|| loaded.meta.model.clone())
                .unwrap_or_else(|| config.model.clone());
            (id, model)
        }
        None => (config.model_provider.id.clone(), config.model.clone()),
    };
    ThreadSettings {
        cwd: context
            .map(|c| c.cwd.clone())
            .unwrap_or_else(|| loaded.meta.cwd.clone()),
        model,
        provider_id,
        approval_policy: context
            .map(|c| c.approval_policy)
            .unwrap_or(config.approval_policy),
        sandbox: context
            .map(|c| c.sandbox_policy.clone())
            .unwrap_or_else(|| config.sandbox_policy()),
        effort: context
            .and_then(|c| c.effort.clone())
            .or_else(|| config.model_reasoning_effort.clone()),
    }
}

/// A transcript's lines as text for people: the conversation (as [`history_text`] writes it),
/// compactions, plan updates, and after each turn the tokens its model requests used.
fn timeline_text(timeline: &[RolloutItem]) -> String {
    let mut out = String::new();
    let mut turn = TurnUsage::default();
    let mut requests = 0usize;
    let flush = |out: &mut String, turn: &mut TurnUsage, requests: &mut usize| {
        if *requests > 0 {
            out.push_str(&format!(
                "[usage] {} model requests: input {} tokens ({} cached), output {} tokens\n\n",
                requests, turn.input_tokens, turn.cached_input_tokens, turn.output_tokens
            ));
        }
        *turn = TurnUsage::default();
        *requests = 0;
    };
    for item in timeline {
        match item {
            RolloutItem::TurnContext(_) => flush(&mut out, &mut turn, &mut requests),
            RolloutItem::ResponseItem(item) => {
                out.push_str(&history_text(std::slice::from_ref(item)))
            }
            RolloutItem::Compacted(compacted) => {
                out.push_str(&format!("[compacted]\n{}\n\n", compacted.message.trim()))
            }
            RolloutItem::EventMsg(EventMsg::TokenCount {
                input_tokens,
                cached_input_tokens,
                output_tokens,
                total_tokens,
            }) if *input_tokens > 0 || *output_tokens > 0 => {
                // Codex writes its counts in another shape; those read as zeros and are left out.
                requests += 1;
                turn.add(&baton_model::TokenUsage {
                    input_tokens: *input_tokens,
                    cached_input_tokens: *cached_input_tokens,
                    output_tokens: *output_tokens,
                    total_tokens: *total_tokens,
                });
            }
            RolloutItem::EventMsg(EventMsg::PlanUpdate(plan)) => out.push_str(&format!(
                "[plan] {}\n{}\n",
                plan.progress_line(),
                plan.checklist()
            )),
            RolloutItem::EventMsg(EventMsg::TurnAborted { reason }) => {
                out.push_str(&format!("[turn aborted: {reason}]\n\n"))
            }
            RolloutItem::EventMsg(EventMsg::Error { message }) => {
                out.push_str(&format!("[error] {message}\n\n"))
            }
            RolloutItem::SessionMeta(_) | RolloutItem::EventMsg(_) => {}
        }
    }
    flush(&mut out, &mut turn, &mut requests);
    out
}

/// Where each turn starts: the indices of the messages a person typed (not the context and
/// compaction summaries that are sent as user messages).
fn user_turn_starts(history: &[ResponseItem]) -> Vec<usize> {
    history
        .iter()
        .enumerate()
        .filter(|(_, item)| match item.message_text() {
            Some(("user", text)) => !baton_store::is_context_message(&text),
            _ => false,
        })
        .map(|(index, _)| index)
        .collect()
}

fn existing_dir(path: &Path) -> Result<PathBuf, CoreError> {
    match std::fs::canonicalize(path) {
        Ok(dir) if dir.is_dir() => Ok(dir),
        _ => Err(CoreError::CwdMissing {
            cwd: path.to_path_buf(),
        }),
    }
}

/// Runs blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| CoreError::Internal(format!("a background task failed: {err}")))
}
