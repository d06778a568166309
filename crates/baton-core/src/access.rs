//! What a caller may reach. Local callers (stdio, the CLI) reach every thread and directory;
//! a caller over HTTP is confined to its owner's threads and the server's workspace roots
//! (so one team member cannot read or continue another's threads).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_protocol::SandboxMode;

use crate::error::CoreError;

/// The config keys a caller over the network may override per call (the `config` argument).
pub const NETWORK_OVERRIDABLE: &[&str] = &[
    "model",
    "model_provider",
    "model_reasoning_effort",
    "approval_policy",
    "sandbox_mode",
    "model_context_window",
    "model_auto_compact_token_limit",
    "base_instructions",
    "developer_instructions",
];

/// The reach of one call. `Access::default()` is local: everything.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `Some`: only threads whose `session_meta.owner` is this are visible, and threads this
    /// call starts record it. Anything else is answered like an unknown id.
    pub owner: Option<String>,
    /// `Some`: the call came over the network and is confined.
    pub confinement: Option<Arc<Confinement>>,
}

/// The limits of a networked caller.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Canonical directories; every cwd must lie inside one of them.
    pub workspace_roots: Vec<PathBuf>,
    /// Whether `danger-full-access` may be used at all.
    pub allow_danger_full_access: bool,
}

impl Access {
    /// True if a thread with this recorded owner is visible to the caller.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        self.owner
            .as_deref()
            .is_none_or(|caller| owner == Some(caller))
    }

    /// Refuses a working directory outside the workspace roots. Symlinks and `..` are
    /// resolved first, so neither leads out.
    pub fn check_cwd(&self, cwd: &Path) -> Result<(), CoreError> {
        let Some(confinement) = &self.confinement else {
            return Ok(());
        };
        let resolved = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        if confinement
            .workspace_roots
            .iter()
            .any(|root| resolved.starts_with(root))
        {
            return Ok(());
        }
        Err(CoreError::OutsideWorkspaceRoots {
            cwd: cwd.to_path_buf(),
            roots: confinement
                .workspace_roots
                .iter()
                .map(|root| root.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Refuses per-call config overrides a confined caller must not make: anything that would
    /// point a provider (and its API key) elsewhere, widen the sandbox's writable roots, or
    /// read another home. Only the keys in [`NETWORK_OVERRIDABLE`] may be set.
    pub fn check_overrides<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CoreError> {
        if self.confinement.is_none() {
            return Ok(());
        }
        for key in keys {
            let top = key.split('.').next().unwrap_or(key);
            if !NETWORK_OVERRIDABLE.contains(&top) {
                return Err(CoreError::OverrideRefused {
                    key: key.to_owned(),
                    allowed: NETWORK_OVERRIDABLE.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Refuses `danger-full-access` for a confined caller unless the server allows it.
    pub fn check_sandbox(&self, mode: SandboxMode) -> Result<(), CoreError> {
        match &self.confinement {
            Some(confinement)
                if mode == SandboxMode::DangerFullAccess
                    && !confinement.allow_danger_full_access =>
            {
                Err(CoreError::DangerFullAccessRefused)
            }
            _ => Ok(()),
        }
    }
}
