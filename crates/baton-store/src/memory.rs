//! An in-memory [`Store`] for tests (feature `test-support`): threads, locks and listings in
//! a few maps, so the agent loop and the thread manager run without touching `BATON_HOME`.
//!
//! It is a store, not a mock: transcripts are kept as the same JSONL bytes [`FileStore`]
//! writes, read back with the same parser and listed with the same query, so a test that
//! passes here exercises what baton does with real files. Two handles made with
//! [`MemoryStore::as_process`] share the data but not the locks' holder, the way two baton
//! processes share one `BATON_HOME`.
//!
//! [`FileStore`]: crate::FileStore

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use baton_protocol::{RolloutItem, SessionMeta, ThreadId, format_timestamp};
use chrono::{DateTime, Utc};

use crate::api::{
    ListPage, ListQuery, ReindexReport, Store, ThreadGuard, TranscriptWriter, TurnRecord,
};
use crate::index::{Cursor, in_memory_with};
use crate::store::whole_lines;
use crate::summary::summarize_bytes;
use crate::writer::serialize_line;
use crate::{LoadedRollout, StoreError, ThreadSummary, parse_rollout};

/// What an unknown-id error names as the place searched.
const MEMORY_LOCATION: &str = "memory";

/// A [`Store`] held in memory (see the module docs).
pub struct MemoryStore {
    shared: Arc<Shared>,
    /// The process this handle stands for: the pid its locks name.
    pid: u32,
}

#[derive(Default)]
struct Shared {
    threads: Mutex<BTreeMap<ThreadId, Transcript>>,
    locks: Mutex<HashMap<ThreadId, Holder>>,
    turns: Mutex<Vec<TurnRecord>>,
    open_tasks: Mutex<BTreeMap<ThreadId, String>>,
}

struct Transcript {
    bytes: Vec<u8>,
    /// How many bytes the last `sync` made durable.
    synced: usize,
    /// Where each `append_all` began in `bytes`: the units a killed process leaves whole.
    append_starts: Vec<usize>,
    updated_at: DateTime<Utc>,
}

#[derive(Clone)]
struct Holder {
    pid: u32,
    since: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store whose locks name this process.
    pub fn new() -> Self {
        Self {
            shared: Arc::default(),
            pid: std::process::id(),
        }
    }

    /// Another handle on the same threads, as another process with `pid` would see them: its
    /// locks exclude ours and name `pid`.
    pub fn as_process(&self, pid: u32) -> Self {
        Self {
            shared: self.shared.clone(),
            pid,
        }
    }

    /// The turns recorded with [`Store::record_turn`], in order.
    pub fn recorded_turns(&self) -> Vec<TurnRecord> {
        lock(&self.shared.turns).clone()
    }

    /// Bytes of the thread's transcript appended but not yet made durable by a `sync`:
    /// what a power cut now would lose. `None` for an unknown thread.
    pub fn unsynced_bytes(&self, id: ThreadId) -> Option<usize> {
        lock(&self.shared.threads)
            .get(&id)
            .map(|transcript| transcript.bytes.len() - transcript.synced)
    }

    /// The lines of each write (`append` or `append_all`) to the thread since its creation,
    /// in order: what a process killed between two writes could leave apart.
    pub fn appended_together(&self, id: ThreadId) -> Vec<Vec<String>> {
        let threads = lock(&self.shared.threads);
        let Some(transcript) = threads.get(&id) else {
            return Vec::new();
        };
        let ends = transcript.append_starts.iter().skip(1).copied();
        let ends = ends.chain([transcript.bytes.len()]);
        transcript
            .append_starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| {
                String::from_utf8_lossy(&transcript.bytes[start..end])
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .collect()
    }

    fn not_found(id: ThreadId) -> StoreError {
        StoreError::NotFound {
            id,
            searched: PathBuf::from(MEMORY_LOCATION),
        }
    }

    fn insert(
        &self,
        id: ThreadId,
        bytes: Vec<u8>,
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let mut threads = lock(&self.shared.threads);
        if threads.contains_key(&id) {
            return Err(StoreError::Io {
                doing: "create the transcript",
                path: path_of(id),
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let len = bytes.len();
        threads.insert(
            id,
            Transcript {
                synced: len,
                bytes,
                append_starts: Vec::new(),
                updated_at: Utc::now(),
            },
        );
        Ok(Box::new(MemoryWriter {
            shared: self.shared.clone(),
            id,
            path: path_of(id),
            len: len as u64,
        }))
    }

    fn with_transcript<T>(
        &self,
        id: ThreadId,
        work: impl FnOnce(&mut Transcript) -> T,
    ) -> Result<T, StoreError> {
        let mut threads = lock(&self.shared.threads);
        threads
            .get_mut(&id)
            .map(work)
            .ok_or_else(|| Self::not_found(id))
    }

    fn summaries(&self) -> Vec<ThreadSummary> {
        lock(&self.shared.threads)
            .iter()
            .filter_map(|(id, transcript)| {
                summarize_bytes(
                    &path_of(*id),
                    &transcript.bytes,
                    Some(transcript.updated_at),
                )
                .ok()
            })
            .collect()
    }
}

impl Store for MemoryStore {
    fn create_thread(&self, meta: &SessionMeta) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.create_thread_with_history(meta, &[])
    }

    fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let path = path_of(meta.id);
        let mut bytes = Vec::new();
        let meta_item = RolloutItem::SessionMeta(Box::new(meta.clone()));
        for item in std::iter::once(&meta_item).chain(items) {
            serialize_line(&mut bytes, item, &path)?;
        }
        self.insert(meta.id, bytes)
    }

    fn append_to(&self, id: ThreadId) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let len = self.with_transcript(id, |transcript| {
            // As `RolloutWriter::open_append`: a torn last line is fenced off.
            if transcript.bytes.last().is_some_and(|&byte| byte != b'\n') {
                transcript.bytes.push(b'\n');
            }
            transcript.bytes.len() as u64
        })?;
        Ok(Box::new(MemoryWriter {
            shared: self.shared.clone(),
            id,
            path: path_of(id),
            len,
        }))
    }

    fn read_thread(&self, id: ThreadId) -> Result<LoadedRollout, StoreError> {
        let bytes = self.with_transcript(id, |transcript| transcript.bytes.clone())?;
        parse_rollout(&path_of(id), &bytes)
    }

    fn thread_meta(&self, id: ThreadId) -> Result<SessionMeta, StoreError> {
        let bytes = self.with_transcript(id, |transcript| transcript.bytes.clone())?;
        crate::session_meta_from_bytes(&path_of(id), &bytes)
    }

    fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError> {
        let whole = whole_lines(transcript.as_bytes());
        let meta = crate::session_meta_from_bytes(&path_of(ThreadId::new()), whole.as_bytes())?;
        self.insert(meta.id, whole.into_bytes())?;
        Ok(meta.id)
    }

    fn export_thread(&self, id: ThreadId) -> Result<String, StoreError> {
        self.with_transcript(id, |transcript| whole_lines(&transcript.bytes))
    }

    fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        // The same query as the SQLite index, over a database that lives for this call.
        in_memory_with(&self.summaries())
            .and_then(|connection| crate::index::list(&connection, query, after.as_ref()))
            .map_err(|source| StoreError::Index {
                path: PathBuf::from("memory"),
                source,
            })
    }

    fn thread_ids(&self) -> HashSet<ThreadId> {
        lock(&self.shared.threads).keys().copied().collect()
    }

    fn lock_thread(&self, id: ThreadId) -> Result<Box<dyn ThreadGuard>, StoreError> {
        let mut locks = lock(&self.shared.locks);
        // As with `flock` on two open files, even the same process cannot lock twice.
        if let Some(holder) = locks.get(&id) {
            return Err(StoreError::Busy {
                id,
                pid: Some(holder.pid),
                host: None,
                since: Some(holder.since.clone()),
            });
        }
        locks.insert(
            id,
            Holder {
                pid: self.pid,
                since: format_timestamp(Utc::now()),
            },
        );
        Ok(Box::new(MemoryGuard {
            shared: self.shared.clone(),
            id,
        }))
    }

    fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        lock(&self.shared.turns).push(turn.clone());
        Ok(())
    }

    fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError> {
        let mut open = lock(&self.shared.open_tasks);
        match task {
            Some(task) => open.insert(thread, task.to_owned()),
            None => open.remove(&thread),
        };
        Ok(())
    }

    fn open_tasks(&self) -> Result<Vec<(ThreadId, String)>, StoreError> {
        Ok(lock(&self.shared.open_tasks)
            .iter()
            .map(|(thread, task)| (*thread, task.clone()))
            .collect())
    }

    fn reindex(&self) -> Result<ReindexReport, StoreError> {
        Ok(ReindexReport {
            found: lock(&self.shared.threads).len(),
            unreadable: Vec::new(),
        })
    }

    fn searched_location(&self) -> PathBuf {
        PathBuf::from(MEMORY_LOCATION)
    }
}

struct MemoryWriter {
    shared: Arc<Shared>,
    id: ThreadId,
    path: PathBuf,
    len: u64,
}

impl TranscriptWriter for MemoryWriter {
    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        let mut line = Vec::new();
        for item in items {
            serialize_line(&mut line, item, &self.path)?;
        }
        let mut threads = lock(&self.shared.threads);
        let transcript = threads
            .get_mut(&self.id)
            .ok_or_else(|| MemoryStore::not_found(self.id))?;
        transcript.append_starts.push(transcript.bytes.len());
        transcript.bytes.extend_from_slice(&line);
        transcript.updated_at = Utc::now();
        self.len += line.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        let mut threads = lock(&self.shared.threads);
        if let Some(transcript) = threads.get_mut(&self.id) {
            transcript.synced = transcript.bytes.len();
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug)]
struct MemoryGuard {
    shared: Arc<Shared>,
    id: ThreadId,
}

impl Drop for MemoryGuard {
    fn drop(&mut self) {
        lock(&self.shared.locks).remove(&self.id);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

impl ThreadGuard for MemoryGuard {
    fn release_unused(self: Box<Self>) {}
}

/// The path a memory transcript shows: it names the thread, and no file.
fn path_of(id: ThreadId) -> PathBuf {
    PathBuf::from(format!("memory/{id}.jsonl"))
}

/// A panic while a map was held leaves it as it was between two whole operations.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
