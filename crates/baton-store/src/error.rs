use std::io;
use std::path::{Path, PathBuf};

use baton_protocol::ThreadId;

/// Everything the store can fail with. Each message names the file involved and what baton
/// was doing, so a person can act on it without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not {doing} {}: {source}", path.display())]
    Io {
        /// What baton was doing, as a verb phrase ("create the session folder").
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{}", not_found_message(*id, searched))]
    NotFound { id: ThreadId, searched: PathBuf },

    #[error("{} is not a session transcript: {reason}", path.display())]
    NotATranscript { path: PathBuf, reason: String },

    #[error("{}", busy_message(id, *pid, host.as_deref(), since.as_deref()))]
    Busy {
        id: ThreadId,
        /// The process holding the thread, when it had written its pid into the lock file.
        pid: Option<u32>,
        /// The machine of that process, when the store is shared between machines.
        host: Option<String>,
        /// When that process took the lock (RFC 3339), when known.
        since: Option<String>,
    },

    #[error("could not write a transcript line for {}: {source}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("the session index {} is unusable: {source}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A database store (PostgreSQL) failed; `location` is its URL without the password.
    #[error("could not {doing} in the session database {location}: {source}")]
    Database {
        doing: &'static str,
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "`{cursor}` is not a cursor this store handed out; start the listing again without one"
    )]
    InvalidCursor { cursor: String },
}

fn busy_message(
    id: &ThreadId,
    pid: Option<u32>,
    host: Option<&str>,
    since: Option<&str>,
) -> String {
    let mut holder = match pid {
        Some(pid) => format!("in process {pid}"),
        None => "in another process".to_owned(),
    };
    if let Some(host) = host {
        holder.push_str(&format!(" on host {host}"));
    }
    let running = match since {
        Some(since) => format!(" (a turn running since {since})"),
        None => " (a turn is running)".to_owned(),
    };
    format!("thread {id} is busy {holder}{running}; try again when that turn ends")
}

impl StoreError {
    pub(crate) fn io(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            doing,
            path,
            source,
        }
    }
}

/// How a PostgreSQL URL starts: what names a session database rather than a folder, as a
/// store's location and as `--store`.
pub const DATABASE_URL_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `text` is a session database's URL (or a location a database store shows).
pub fn is_database_url(text: &str) -> bool {
    DATABASE_URL_SCHEMES
        .iter()
        .any(|scheme| text.starts_with(scheme))
}

/// Where baton looked, in the words of the store that looked: a database has no files.
fn not_found_message(id: ThreadId, searched: &Path) -> String {
    let place = searched.display().to_string();
    if is_database_url(&place) {
        format!("no session with thread id {id} in the session database {place}")
    } else {
        format!(
            "no session with thread id {id}: it is not in the index and no file named \
             rollout-…-{id}.jsonl exists under {place}"
        )
    }
}
