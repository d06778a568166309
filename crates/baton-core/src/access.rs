//! What a caller may reach. Local callers (stdio, the CLI) reach every thread and directory;
//! a caller over HTTP is confined to its owner's threads and the server's workspace roots
//! (so one team member cannot read or continue another's threads).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_protocol::SandboxMode;

use crate::error::CoreError;

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
