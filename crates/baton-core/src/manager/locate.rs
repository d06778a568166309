//! Finding a thread by id: baton's store first, then the Codex CLI's sessions (read-only), in
//! one function every caller uses; rebuilding a found thread in memory; importing a Codex
//! session into baton's store under the same id.

use std::path::{Path, PathBuf};

use baton_config::Config;
use baton_protocol::ThreadId;
use baton_store::{LoadedRollout, StoreError};

use super::{SessionSummary, ThreadManager, blocking};
use crate::access::Access;
use crate::agent::{LiveThread, ThreadSettings};
use crate::codex_import;
use crate::error::CoreError;

/// Where a thread's transcript was found.
pub(super) enum Located {
    /// In baton's store, already read.
    Baton(Box<LoadedRollout>),
    /// Only among the Codex CLI's sessions: the path of its rollout file.
    Codex(PathBuf),
}

impl ThreadManager {
    /// Finds a thread: in baton's store, else among Codex's sessions under `codex_home`. The
    /// one place that order is decided.
    pub(super) async fn locate(
        &self,
        id: ThreadId,
        codex_home: &Path,
    ) -> Result<Located, CoreError> {
        let store = self.store.clone();
        match blocking(move || store.read_thread(id)).await? {
            Ok(loaded) => Ok(Located::Baton(Box::new(loaded))),
            Err(StoreError::NotFound { searched, .. }) => {
                let search_home = codex_home.to_path_buf();
                blocking(move || baton_store::find_codex_rollout(&search_home, id))
                    .await??
                    .map(Located::Codex)
                    .ok_or_else(|| CoreError::UnknownThread {
                        id,
                        baton_sessions: searched,
                        codex_home: codex_home.to_path_buf(),
                    })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Finds a thread's transcript and rebuilds it in memory; a Codex session is imported
    /// first.
    pub(super) async fn load_thread(
        &self,
        id: ThreadId,
        config: &Config,
    ) -> Result<LiveThread, CoreError> {
        let loaded = match self.locate(id, &config.codex_home).await? {
            Located::Baton(loaded) => *loaded,
            Located::Codex(codex_path) => return self.import_codex(id, &codex_path, config).await,
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

    /// Copies a Codex session into baton's store under the same id, so it can be continued
    /// like any baton thread. Codex's file is only read.
    pub(super) async fn import_codex(
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

    /// The Codex CLI's sessions under `codex_home` that baton has not imported yet, newest
    /// first.
    pub(super) async fn codex_sessions(&self) -> Result<Vec<SessionSummary>, CoreError> {
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

    /// Reads a thread's transcript (baton's, else Codex's) without continuing it.
    pub async fn read_thread(&self, thread_id: &str) -> Result<LoadedRollout, CoreError> {
        let id = ThreadId::parse(thread_id)?;
        let config = self.config(None)?;
        match self.locate(id, &config.codex_home).await? {
            Located::Baton(loaded) => Ok(*loaded),
            Located::Codex(path) => Ok(blocking(move || baton_store::read_rollout(&path)).await??),
        }
    }

    /// Refuses a thread the caller may not see, like an unknown id. Reads only the first
    /// line of the transcript (`session_meta`); a thread baton's store does not hold (a Codex
    /// session) has no owner, so no caller with an owner sees it.
    pub(super) async fn check_owner(&self, id: ThreadId, access: &Access) -> Result<(), CoreError> {
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
    pub(super) async fn read_visible(
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
}

/// A thread's settings come from its last `turn_context`, else from its `session_meta`, and
/// what the transcript does not say comes from the config.
fn rehydrate(loaded: LoadedRollout, config: &Config) -> LiveThread {
    let settings = settings_of(&loaded, config);
    LiveThread::new(
        loaded.meta,
        loaded.path,
        settings,
        loaded.history,
        loaded.file_len,
    )
}

/// The settings a transcript's turns ran with (see [`rehydrate`]).
pub(super) fn settings_of(loaded: &LoadedRollout, config: &Config) -> ThreadSettings {
    let context = loaded.last_turn_context.as_ref();
    let recorded_provider = context
        .and_then(|c| c.model_provider.clone())
        .or_else(|| loaded.meta.model_provider.clone());
    // A provider this config does not define falls back to the configured one, model included
    // (an imported Codex session names a provider baton may not have).
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
