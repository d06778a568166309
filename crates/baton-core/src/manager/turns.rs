//! Starting a thread, continuing one (reloading it when another process appended), running a
//! turn, and forking a thread at a turn.

use baton_config::Config;
use baton_protocol::{
    BaseInstructions, CLI_VERSION, ORIGINATOR, ResponseItem, RolloutItem, SessionMeta, ThreadId,
    format_timestamp,
};
use baton_store::{ThreadOrigin, TranscriptWriter, TurnRecord};
use chrono::Utc;

use super::locate::settings_of;
use super::slots::forget_after_store_error;
use super::tasks::TaskSetup;
use super::{ReplyToThread, StartThread, ThreadManager, TurnResult, blocking, existing_dir};
use crate::access::Access;
use crate::agent::{LiveThread, ThreadSettings, Turn, blocking_section, default_base_instructions};
use crate::codex_import;
use crate::error::CoreError;
use crate::hooks::TurnHooks;
use crate::project_doc::{self, ProjectDocOptions};

/// Where a turn starts.
pub(super) enum TurnStart<'a> {
    /// A new prompt.
    Prompt(&'a str),
    /// The turn a process that died had started (with `prompt`); `rerun_call` was waiting for
    /// approval and is asked again.
    Resume {
        rerun_call: Option<String>,
        prompt: String,
    },
}

impl ThreadManager {
    /// Starts a new thread and runs its first turn.
    pub async fn start_thread(
        &self,
        request: StartThread,
        hooks: TurnHooks,
    ) -> Result<TurnResult, CoreError> {
        self.start_thread_with(request, hooks, None).await
    }

    /// [`ThreadManager::start_thread`], running the turn for an MCP task when `task` is set:
    /// the task is opened (on disk, then announced) once the thread exists and is locked.
    pub(super) async fn start_thread_with(
        &self,
        request: StartThread,
        mut hooks: TurnHooks,
        task: Option<&mut TaskSetup>,
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
        let settings = ThreadSettings {
            cwd,
            model: config.model.clone(),
            provider_id: config.model_provider.id.clone(),
            approval_policy: config.approval_policy,
            sandbox: config.sandbox_policy(),
            effort: config.model_reasoning_effort.clone(),
        };
        let path = writer.path().to_path_buf();
        let mut live = LiveThread::new(meta, path, settings, Vec::new(), writer.len());
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
        let task = match task {
            Some(setup) => {
                Some(self.open_new_task(&mut *writer, id, "baton", setup, &mut hooks)?)
            }
            None => None,
        };
        *guard = Some(live);
        let Some(live) = guard.as_mut() else {
            return Err(CoreError::Internal("thread slot emptied".into()));
        };
        let outcome = self
            .run_turn(live, &mut writer, &config, &request.prompt, &hooks, false)
            .await;
        forget_after_store_error(&mut guard, &outcome);
        slot.touch();
        let outcome = outcome.map_err(|err| CoreError::FirstTurnFailed {
            id,
            source: Box::new(err),
        });
        if let Some(task) = task {
            self.close_task(&mut *writer, task, &outcome);
        }
        outcome
    }

    /// Continues a thread by id: from memory, else from baton's store, else from Codex's.
    pub async fn reply(
        &self,
        request: ReplyToThread,
        hooks: TurnHooks,
    ) -> Result<TurnResult, CoreError> {
        self.reply_with(request, hooks, None).await
    }

    /// [`ThreadManager::reply`], for an MCP task when `task` is set (opened once the thread is
    /// locked and the call checked, just before the turn).
    pub(super) async fn reply_with(
        &self,
        request: ReplyToThread,
        mut hooks: TurnHooks,
        task: Option<&mut TaskSetup>,
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
                let read = live.file_len;
                *guard = Some(live);
                blocking(move || store.append_after_read(id, read)).await??
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
        self.finish_orphaned_task(live, &mut *writer, &config, &hooks)
            .await;
        live.settings.cwd = cwd;
        let task = match task {
            Some(setup) => {
                Some(self.open_new_task(&mut *writer, id, "baton-reply", setup, &mut hooks)?)
            }
            None => None,
        };
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
        if let Some(task) = task {
            self.close_task(&mut *writer, task, &outcome);
        }
        forget_after_store_error(&mut guard, &outcome);
        slot.touch();
        outcome
    }

    pub(super) async fn run_turn(
        &self,
        live: &mut LiveThread,
        writer: &mut dyn TranscriptWriter,
        config: &Config,
        prompt: &str,
        hooks: &TurnHooks,
        compact_first: bool,
    ) -> Result<TurnResult, CoreError> {
        self.run_turn_from(
            live,
            writer,
            config,
            TurnStart::Prompt(prompt),
            hooks,
            compact_first,
        )
        .await
    }

    /// Runs a turn from a new prompt or, for a task whose process died, from where the
    /// transcript left it; then updates the listing.
    pub(super) async fn run_turn_from(
        &self,
        live: &mut LiveThread,
        writer: &mut dyn TranscriptWriter,
        config: &Config,
        start: TurnStart<'_>,
        hooks: &TurnHooks,
        compact_first: bool,
    ) -> Result<TurnResult, CoreError> {
        let provider = config
            .provider(&live.settings.provider_id)
            .cloned()
            .unwrap_or_else(|| config.model_provider.clone());
        let model = self.models.client(&provider)?;
        let turn = Turn::new(live, writer, model, hooks, config, compact_first);
        let (outcome, prompt) = match start {
            TurnStart::Prompt(prompt) => (turn.run(prompt).await, prompt.to_owned()),
            TurnStart::Resume { rerun_call, prompt } => {
                (turn.resume(rerun_call.as_deref()).await, prompt)
            }
        };
        // The index is a cache: a failure to update it is logged, never fatal.
        let record = TurnRecord {
            id: live.id,
            path: live.path.clone(),
            cwd: live.settings.cwd.clone(),
            created_at: live.id.created_at().unwrap_or_else(Utc::now),
            model: Some(live.settings.model.clone()),
            source: ThreadOrigin::of(&live.meta),
            user_message: Some(prompt),
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

    /// Writes a new thread holding a whole history at once (a crash leaves no partial copy)
    /// and returns it as a live thread.
    pub(super) async fn create_with_history(
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
        let path = writer.path().to_path_buf();
        Ok(LiveThread::new(meta, path, settings, history, writer.len()))
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
        let turns = baton_protocol::user_turn_starts(&history);
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
}
