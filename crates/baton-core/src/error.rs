use std::path::PathBuf;

use baton_protocol::{ThreadId, ThreadIdError};

/// Why a turn could not start or finish. Each message is meant for a person (or the agent
/// that drives baton) and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    MalformedThreadId(#[from] ThreadIdError),
    #[error("{}", unknown_thread_message(*id, baton_sessions, codex_home))]
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
    /// Malformed and unknown task ids get the same answer, and so does another owner's task,
    /// so ids cannot be probed.
    #[error(
        "task {id} not found: a baton task id is the 64 hex digits a task-augmented call returned, and the task must be one of yours"
    )]
    UnknownTask { id: String },
    #[error(
        "task {id} runs in another baton process; send tasks/update and tasks/cancel to the server that runs it (tasks/get works on any), or wait for it to end"
    )]
    TaskElsewhere { id: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an error is, for the callers that must decide what to do with it
/// (the CLI's exit status, the MCP error code). Decided here, once, from the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No thread has that id.
    NotFound,
    /// Another process is running a turn on the thread.
    Busy,
    /// The request itself is wrong: a malformed id, a missing folder, a turn out of range.
    BadInput,
    /// The configuration (config.toml, overrides, the provider settings) must be fixed.
    Config,
    /// The model server failed or refused.
    Model,
    /// Reading or writing the session store failed.
    Store,
    /// The caller cancelled the turn.
    Cancelled,
    /// A bug or an unexpected failure of the runtime.
    Internal,
}

impl CoreError {
    pub fn kind(&self) -> ErrorKind {
        use baton_store::StoreError;
        match self {
            Self::UnknownThread { .. }
            | Self::UnknownTask { .. }
            | Self::Store(StoreError::NotFound { .. }) => ErrorKind::NotFound,
            Self::Store(StoreError::Busy { .. }) | Self::TaskElsewhere { .. } => ErrorKind::Busy,
            Self::MalformedThreadId(_)
            | Self::RecordedCwdMissing { .. }
            | Self::CwdMissing { .. }
            | Self::TurnOutOfRange { .. }
            | Self::OutsideWorkspaceRoots { .. }
            | Self::DangerFullAccessRefused
            | Self::OverrideRefused { .. }
            | Self::Store(StoreError::InvalidCursor { .. }) => ErrorKind::BadInput,
            Self::Config(_) => ErrorKind::Config,
            Self::Model(model) if model.is_misconfiguration() => ErrorKind::Config,
            Self::Model(_) => ErrorKind::Model,
            Self::Store(_) => ErrorKind::Store,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::FirstTurnFailed { source, .. } => source.kind(),
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<baton_model::ModelError> for CoreError {
    fn from(err: baton_model::ModelError) -> Self {
        Self::Model(Box::new(err))
    }
}

/// Where baton looked for an unknown thread, in the words of its store (a database has no
/// session files).
fn unknown_thread_message(
    id: ThreadId,
    baton_sessions: &std::path::Path,
    codex_home: &std::path::Path,
) -> String {
    let searched = baton_sessions.display().to_string();
    let in_store = if baton_store::is_database_url(&searched) {
        format!("in the session database {searched}")
    } else {
        format!("in its index and session files under {searched}")
    };
    format!(
        "thread {id} was not found: baton looked {in_store} and in Codex's sessions under {}; \
         check the id with `baton sessions list`",
        codex_home.display()
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use baton_protocol::ThreadId;
    use baton_store::StoreError;

    use super::{CoreError, ErrorKind};

    #[test]
    fn kinds_see_through_store_errors_and_failed_first_turns() {
        let id = ThreadId::new();
        let busy = || {
            CoreError::Store(StoreError::Busy {
                id,
                pid: Some(42),
                host: None,
                since: None,
            })
        };
        let cases = [
            (busy(), ErrorKind::Busy),
            (
                CoreError::FirstTurnFailed {
                    id,
                    source: Box::new(busy()),
                },
                ErrorKind::Busy,
            ),
            (
                CoreError::Store(StoreError::NotFound {
                    id,
                    searched: PathBuf::from("/home/sessions"),
                }),
                ErrorKind::NotFound,
            ),
            (
                CoreError::UnknownThread {
                    id,
                    baton_sessions: PathBuf::new(),
                    codex_home: PathBuf::new(),
                },
                ErrorKind::NotFound,
            ),
            (
                CoreError::Store(StoreError::InvalidCursor { cursor: "x".into() }),
                ErrorKind::BadInput,
            ),
            (
                CoreError::MalformedThreadId(ThreadId::parse("nope").unwrap_err()),
                ErrorKind::BadInput,
            ),
            (CoreError::Cancelled, ErrorKind::Cancelled),
            (CoreError::Internal("x".into()), ErrorKind::Internal),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }
}
