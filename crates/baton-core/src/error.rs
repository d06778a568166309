use std::path::PathBuf;

use baton_protocol::{ThreadId, ThreadIdError};

/// Why a turn could not start or finish. Each message is meant for a person (or the agent
/// that drives baton) and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    MalformedThreadId(#[from] ThreadIdError),
    #[error(
        "thread {id} was not found: baton looked in its index and session files under {baton_sessions} and in Codex's sessions under {codex_home}; check the id with `baton sessions list`"
    )]
    UnknownThread {
        id: ThreadId,
        baton_sessions: PathBuf,
        codex_home: PathBuf,
    },
    #[error(
        "the working directory {cwd} recorded for thread {id} no longer exists; pass `cwd` (or `--cd`) with the project's current location to continue"
    )]
    RecordedCwdMissing { id: ThreadId, cwd: PathBuf },
    #[error("the working directory {cwd} does not exist or is not a directory")]
    CwdMissing { cwd: PathBuf },
    #[error(
        "thread {id} has {turns} turns; `atTurn` must be between 1 and {turns}, not {requested}"
    )]
    TurnOutOfRange {
        id: ThreadId,
        requested: u32,
        turns: usize,
    },
    #[error(
        "the working directory {cwd} is outside this server's workspace roots ({roots}); use a directory inside one of them"
    )]
    OutsideWorkspaceRoots { cwd: PathBuf, roots: String },
    #[error(
        "danger-full-access is not allowed over HTTP on this server (set `allow_danger_full_access = true` under [server] in config.toml to allow it); use workspace-write or read-only"
    )]
    DangerFullAccessRefused,
    #[error(
        "the config override `{key}` is not allowed over HTTP; a call may override only: {allowed}"
    )]
    OverrideRefused { key: String, allowed: String },
    #[error("the turn was cancelled; the thread stays usable")]
    Cancelled,
    #[error(transparent)]
    Config(#[from] baton_config::ConfigError),
    #[error(transparent)]
    Store(#[from] baton_store::StoreError),
    /// Boxed: model errors carry the server's message and are much larger than the rest.
    #[error(transparent)]
    Model(Box<baton_model::ModelError>),
    /// The first turn of a new thread failed; the thread itself exists and can be continued.
    #[error(
        "{source} (the session was saved as thread {id}; continue it with `baton exec resume {id}` or the baton-reply tool)"
    )]
    FirstTurnFailed {
        id: ThreadId,
        #[source]
        source: Box<CoreError>,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<baton_model::ModelError> for CoreError {
    fn from(err: baton_model::ModelError) -> Self {
        Self::Model(Box::new(err))
    }
}
