//! baton's session store: the rollout transcripts under `BATON_HOME/sessions`, the SQLite
//! index over them, and the per-thread locks that keep one writer per thread.
//!
//! The rest of baton reaches them through the [`Store`] trait; [`FileStore`] is the files and
//! SQLite implementation, `MemoryStore` (feature `test-support`) an in-memory one for tests.
//!
//! Architecture invariant: this crate owns every byte under `BATON_HOME`; nothing else opens
//! a transcript file. The index is a cache: it may be deleted or corrupted at any time, and
//! every lookup then falls back to the files (and refills the index).
//!
//! The file format is Codex's rollout JSONL, so [`read_rollout`] and
//! [`find_codex_rollout`] also read Codex's transcripts. All IO is blocking; async callers
//! use `spawn_blocking`.

mod api;
mod codex;
#[cfg(feature = "test-support")]
pub mod contract;
mod error;
mod find;
mod fsutil;
mod index;
mod lines;
mod lock;
#[cfg(feature = "test-support")]
mod memory;
mod parallel;
mod reader;
mod store;
mod summary;
mod timeline;
mod writer;

pub use api::{
    ListPage, ListQuery, ReindexReport, Store, ThreadGuard, TranscriptWriter, TurnRecord,
};
pub use codex::{find_codex_rollout, list_codex_sessions};
pub use error::{DATABASE_URL_SCHEMES, StoreError, is_database_url};
/// The listing cursor every store hands out (newest update first, then id).
pub use index::Cursor as ListCursor;
pub use lines::MAX_LINE_BYTES;
pub use lock::ThreadLock;
#[cfg(feature = "test-support")]
pub use memory::MemoryStore;
pub use reader::{
    ABORTED_CALL_OUTPUT, LoadedRollout, ReadLimits, parse_rollout, read_rollout, read_rollout_with,
    session_meta_from_bytes,
};
pub use store::{FileStore, Located, LookupMethod};
pub use summary::{
    SEARCH_TEXT_LIMIT, SUMMARY_TEXT_LIMIT, ThreadOrigin, ThreadSummary, is_context_message,
    push_search_text, summarize_bytes, summarize_rollout, summarize_rollout_with,
};
pub use timeline::{read_timeline, timeline_of_text};
pub use writer::{RolloutWriter, rollout_line};
