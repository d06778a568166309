//! The [`Store`] trait, the one way the rest of baton reaches transcripts, the index of
//! threads and the per-thread locks, and its vocabulary: what a caller asks for (a listing, a
//! finished turn) and what it gets back. The store and its index both use these; neither
//! owns them.
//!
//! [`crate::FileStore`] (JSONL files and SQLite under `BATON_HOME`) is the implementation
//! baton runs on; with the `test-support` feature, [`crate::MemoryStore`] keeps everything in
//! memory for tests. Codex's files are not behind this trait: they are a separate, read-only
//! source ([`crate::find_codex_rollout`], [`crate::list_codex_sessions`]).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use baton_protocol::{RolloutItem, SessionMeta, ThreadId};
use chrono::{DateTime, Utc};

use crate::{LoadedRollout, StoreError, ThreadOrigin, ThreadSummary};

/// Where threads are kept. Object-safe: callers hold an `Arc<dyn Store>`.
///
/// Every method blocks (files, SQLite, a network database): async callers run them with
/// `spawn_blocking` or `block_in_place`. A thread is named by its id only; the `path` a store
/// hands out (in a [`LoadedRollout`], a [`ThreadSummary`], [`TranscriptWriter::path`]) is for
/// showing to people and for giving back in a [`TurnRecord`], never for building on.
pub trait Store: Send + Sync {
    /// Creates a thread whose transcript starts with `meta` and records it for listing. The
    /// `session_meta` line is durable when this returns. Continue with the returned writer.
    fn create_thread(&self, meta: &SessionMeta) -> Result<Box<dyn TranscriptWriter>, StoreError>;

    /// Creates a thread that starts with a whole history (a Codex import, a fork), all or
    /// nothing: a crash part-way leaves no thread that [`Store::read_thread`] would find.
    fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError>;

    /// Opens an existing thread for appending; hold its [`Store::lock_thread`] first. A torn
    /// last line (a crash mid-append) is fenced off so the next line starts whole.
    fn append_to(&self, id: ThreadId) -> Result<Box<dyn TranscriptWriter>, StoreError>;

    /// [`Store::append_to`] for a caller that holds the thread's lock and has just read its
    /// transcript, `len` bytes long ([`LoadedRollout::file_len`]): a store may take that
    /// length instead of looking it up again (on a database, a round trip saved per turn).
    fn append_after_read(
        &self,
        id: ThreadId,
        len: u64,
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let _ = len;
        self.append_to(id)
    }

    /// Reads a thread back from its newest compaction on, every tool call paired with an
    /// output. [`StoreError::NotFound`] when the store has no thread `id`.
    fn read_thread(&self, id: ThreadId) -> Result<LoadedRollout, StoreError>;

    /// Only the thread's `session_meta` (its owner, cwd, origin), without reading its history.
    fn thread_meta(&self, id: ThreadId) -> Result<SessionMeta, StoreError>;

    /// Every whole line of a thread's transcript, as written (JSONL, each line ending in a
    /// newline); a torn last line is left out.
    fn export_thread(&self, id: ThreadId) -> Result<String, StoreError>;

    /// Every line of the thread baton understands, in order, for showing it to people
    /// (`sessions show`). The default goes through [`Store::export_thread`]; a store that can
    /// stream its lines overrides it, so memory follows what is kept, not the whole text.
    fn read_timeline(&self, id: ThreadId) -> Result<Vec<RolloutItem>, StoreError> {
        let text = self.export_thread(id)?;
        crate::timeline_of_text(&self.searched_location(), &text)
    }

    /// Adds a whole transcript (JSONL, as [`Store::export_thread`] gives it) under the id of
    /// its `session_meta`, keeping every line byte for byte; a torn last line is left out.
    /// Refused, naming the id, when the store has that thread already.
    fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError>;

    /// Lists threads, newest update first, filtered and paged by `query`.
    fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError>;

    /// The ids of every thread in the store, for telling which Codex sessions it already has.
    fn thread_ids(&self) -> HashSet<ThreadId>;

    /// Like [`Store::thread_ids`], but a store that cannot be read says why instead of
    /// answering with no ids: `sessions migrate` must not take an unreachable database for an
    /// empty one. The default asks [`Store::thread_ids`] (a store that cannot fail to list).
    fn try_thread_ids(&self) -> Result<HashSet<ThreadId>, StoreError> {
        Ok(self.thread_ids())
    }

    /// Takes the thread's writer lock without waiting, across processes; released when the
    /// guard is dropped. [`StoreError::Busy`] names the holder's pid when known.
    fn lock_thread(&self, id: ThreadId) -> Result<Box<dyn ThreadGuard>, StoreError>;

    /// Updates the thread's listing after a turn. The listing is a cache: a failure to update
    /// it is logged by the store, and only a failure that matters is returned.
    fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError>;

    /// Notes in the listing that `thread`'s current turn runs for the durable task `task`
    /// (`None`: no unfinished task), so a server starting up finds the tasks a dead process
    /// left. A cache like the rest of the listing: the transcript records the task itself.
    fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError>;

    /// The threads whose listing notes an unfinished task, with that task's id.
    fn open_tasks(&self) -> Result<Vec<(ThreadId, String)>, StoreError>;

    /// Rebuilds the listing from the transcripts.
    fn reindex(&self) -> Result<ReindexReport, StoreError>;

    /// Where the store looks for threads, as [`StoreError::NotFound`] names it: a thread a
    /// caller may not see is reported exactly like one that is not there.
    fn searched_location(&self) -> PathBuf;
}

/// Appends lines to one thread's transcript, one whole line per item.
pub trait TranscriptWriter: Send + Sync {
    /// Appends one item. On failure the transcript still ends with a whole line.
    fn append(&mut self, item: &RolloutItem) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(item))
    }

    /// Appends `items` as one write: a process killed meanwhile leaves all of them or none
    /// (a torn tail aside, which readers skip). For lines that mean something only together,
    /// such as a prompt and its `user_message` event. On failure none of them is kept.
    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError>;

    /// The durability point: when this returns, every line appended so far survives a crash.
    /// The agent calls it after each tool output and at the end of each turn.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// How far the transcript reaches after our last append. It also grows when another
    /// writer appends, so a reader that remembers it notices a transcript that changed.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the transcript is, as the store shows it (see [`Store`]).
    fn path(&self) -> &Path;
}

// So a `Box<dyn TranscriptWriter>` passes where a `&mut dyn TranscriptWriter` is wanted.
impl<W: TranscriptWriter + ?Sized> TranscriptWriter for Box<W> {
    fn append(&mut self, item: &RolloutItem) -> Result<(), StoreError> {
        (**self).append(item)
    }

    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        (**self).append_all(items)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }

    fn len(&self) -> u64 {
        (**self).len()
    }

    fn path(&self) -> &Path {
        (**self).path()
    }
}

/// Holds a thread for one writer; the lock is released when the guard is dropped.
pub trait ThreadGuard: Send + fmt::Debug {
    /// Releases the lock and forgets it: for an id that turned out to name no thread, so a
    /// typo leaves nothing behind.
    fn release_unused(self: Box<Self>);
}

/// What [`Store::reindex`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Transcripts read into the index.
    pub found: usize,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// What to list: newest update first, optionally filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only threads whose cwd is exactly this folder.
    pub cwd: Option<PathBuf>,
    /// Case-insensitive (ASCII) substring of any prompt or answer.
    pub text: Option<String>,
    /// Only threads updated at or after this time.
    pub updated_after: Option<DateTime<Utc>>,
    /// Only threads updated before this time.
    pub updated_before: Option<DateTime<Utc>>,
    /// Threads per page; 0 means [`ListQuery::DEFAULT_LIMIT`].
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only threads with this `session_meta.owner` (a caller over HTTP with a token).
    pub owner: Option<String>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: usize = 50;

    pub(crate) fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT
        } else {
            self.limit
        }
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            cwd: None,
            text: None,
            updated_after: None,
            updated_before: None,
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
            owner: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub threads: Vec<ThreadSummary>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a turn added to a thread, for [`Store::record_turn`].
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub id: ThreadId,
    pub path: PathBuf,
    pub cwd: PathBuf,
    pub created_at: DateTime<Utc>,
    /// The model the turn used; `None` keeps the recorded one.
    pub model: Option<String>,
    pub source: ThreadOrigin,
    /// The prompt that started the turn; `None` when the turn had none (it adds no turn).
    pub user_message: Option<String>,
    /// The turn's final answer; `None` (failed or cancelled turn) keeps the previous one.
    pub agent_message: Option<String>,
}
