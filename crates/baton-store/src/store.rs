use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use baton_protocol::{RolloutItem, SessionMeta, ThreadId};
use chrono::{DateTime, Local, Utc};

use crate::find::{NameSuffix, all_transcripts, day_folder, find_by_scan, find_in_day_folders};
use crate::fsutil::{canonical_or_same, create_private_dir_all, is_file_inside, sync_dir};
use crate::index::{Cursor, Index, in_memory_with};
use crate::lines::parse_time;
use crate::summary::summarize_rollout_quick;
use crate::{
    LoadedRollout, RolloutWriter, StoreError, ThreadLock, ThreadOrigin, ThreadSummary,
    read_rollout, summarize_rollout,
};

/// The session store under one `BATON_HOME`: transcripts, their index, thread locks.
///
/// Plain blocking IO; async callers use `spawn_blocking`. `Send + Sync`: share it in an `Arc`.
pub struct Store {
    home: PathBuf,
    sessions: PathBuf,
    /// `sessions` with symlinks resolved, to check that a path from the index stays inside.
    sessions_canonical: PathBuf,
    index: Index,
}

/// Where a transcript was found and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub via: LookupMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupMethod {
    /// The index row pointed at it.
    Index,
    /// Found in the day folder named by the UUID v7 timestamp (or a neighbouring day).
    DayFolder,
    /// Found by walking every day folder.
    FullScan,
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
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub threads: Vec<ThreadSummary>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Transcripts read into the index.
    pub found: usize,
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Store {
    /// Opens the store at `home`, creating `home` and `home/sessions` (mode 0700) if missing.
    /// The index is opened on first use.
    pub fn open(home: &Path) -> Result<Store, StoreError> {
        create_private_dir_all(home, "create the baton home folder")?;
        let sessions = home.join("sessions");
        create_private_dir_all(&sessions, "create the sessions folder")?;
        Ok(Store {
            home: home.to_path_buf(),
            sessions_canonical: canonical_or_same(&sessions),
            sessions,
            index: Index::new(home.join("state.sqlite")),
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.sessions.clone()
    }

    pub fn index_path(&self) -> &Path {
        self.index.path()
    }

    fn locks_dir(&self) -> PathBuf {
        self.home.join("locks")
    }

    /// Creates `sessions/YYYY/MM/DD/rollout-YYYY-MM-DDThh-mm-ss-<id>.jsonl` (local time of
    /// `meta.timestamp`), writes and fsyncs the `session_meta` line and records the thread
    /// in the index.
    pub fn create_thread(&self, meta: &SessionMeta) -> Result<RolloutWriter, StoreError> {
        let started_utc = parse_time(&meta.timestamp).unwrap_or_else(Utc::now);
        let started = started_utc.with_timezone(&Local);
        let folder = day_folder(&self.sessions, started.date_naive());
        create_private_dir_all(&folder, "create the day folder")?;
        let path = folder.join(format!(
            "rollout-{}-{}.jsonl",
            started.format("%Y-%m-%dT%H-%M-%S"),
            meta.id
        ));
        let mut writer = RolloutWriter::create_new(&path)?;
        writer.append(&RolloutItem::SessionMeta(Box::new(meta.clone())))?;
        writer.sync()?;
        sync_dir(&folder)?;
        self.record_thread(&ThreadSummary {
            id: meta.id,
            path,
            cwd: meta.cwd.clone(),
            created_at: started_utc,
            updated_at: Utc::now(),
            first_user_message: None,
            last_agent_message: None,
            model: meta.model.clone(),
            turns: 0,
            source: ThreadOrigin::of(meta),
            search_text: String::new(),
        })?;
        Ok(writer)
    }

    /// Finds the transcript of `id`: index, then the day folder its UUID v7 names (± 1 day),
    /// then every day folder by file name. A file found without the index is added to it.
    pub fn locate(&self, id: ThreadId) -> Result<Located, StoreError> {
        match self.index.lookup(id) {
            Ok(Some(path)) if self.is_own_transcript(&path, id) => {
                return Ok(Located {
                    path,
                    via: LookupMethod::Index,
                });
            }
            Ok(Some(path)) => tracing::warn!(
                "the index points thread {id} at {}, which is missing or outside {}; searching by file name",
                path.display(),
                self.sessions.display()
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!("{error}; searching by file name"),
        }

        let found = find_in_day_folders(&self.sessions, id)
            .filter(|path| self.is_own_transcript(path, id))
            .map(|path| (path, LookupMethod::DayFolder))
            .or_else(|| {
                find_by_scan(&self.sessions, id)
                    .filter(|path| self.is_own_transcript(path, id))
                    .map(|path| (path, LookupMethod::FullScan))
            });
        let Some((path, via)) = found else {
            return Err(StoreError::NotFound {
                id,
                searched: self.sessions.clone(),
            });
        };
        self.backfill(&path);
        Ok(Located { path, via })
    }

    /// Locates and reads a thread's transcript.
    pub fn load(&self, id: ThreadId) -> Result<LoadedRollout, StoreError> {
        read_rollout(&self.locate(id)?.path)
    }

    fn is_own_transcript(&self, path: &Path, id: ThreadId) -> bool {
        NameSuffix::new(id).matches(path) && is_file_inside(path, &self.sessions_canonical)
    }

    /// Lazy rebuild: a thread found by file name goes back into the index.
    fn backfill(&self, path: &Path) {
        match summarize_rollout_quick(path) {
            Ok(summary) => {
                if let Err(error) = self.index.upsert(&summary) {
                    tracing::warn!("could not add {} to the index: {error}", path.display());
                }
            }
            Err(error) => tracing::warn!(
                "could not summarise {} for the index: {error}",
                path.display()
            ),
        }
    }

    /// Takes the thread's lock without waiting; [`StoreError::Busy`] names the holder.
    pub fn lock_thread(&self, id: ThreadId) -> Result<ThreadLock, StoreError> {
        let locks = self.locks_dir();
        create_private_dir_all(&locks, "create the locks folder")?;
        crate::lock::try_lock(&locks, id)
    }

    /// Updates the thread's index row (after each turn).
    ///
    /// The index is a cache: if it cannot be written, that is logged and the turn goes on.
    pub fn record_thread(&self, summary: &ThreadSummary) -> Result<(), StoreError> {
        if let Err(error) = self.index.upsert(summary) {
            tracing::warn!(
                "could not record thread {} in the index: {error}",
                summary.id
            );
        }
        Ok(())
    }

    /// Lists threads, newest update first. A new or repaired index is first rebuilt from
    /// the files; if the index cannot be used at all, the listing is built from the files.
    pub fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        if !self.index.is_complete().unwrap_or(false)
            && let Err(error) = self.reindex()
        {
            tracing::warn!("{error}");
        }
        match self.index.list(query, after.as_ref()) {
            Ok(page) => Ok(page),
            Err(error) => {
                tracing::warn!("{error}; listing from the transcript files instead");
                let (summaries, _) = self.summarize_all();
                let path = self.index.path().to_path_buf();
                in_memory_with(&summaries)
                    .and_then(|connection| crate::index::list(&connection, query, after.as_ref()))
                    .map_err(|source| StoreError::Index { path, source })
            }
        }
    }

    /// Rebuilds the index from the transcript files.
    pub fn reindex(&self) -> Result<ReindexReport, StoreError> {
        let (summaries, unreadable) = self.summarize_all();
        self.index.replace_all(&summaries)?;
        Ok(ReindexReport {
            found: summaries.len(),
            unreadable,
        })
    }

    /// Summaries of every transcript, read in parallel; for duplicate ids the newest wins.
    fn summarize_all(&self) -> (Vec<ThreadSummary>, Vec<(PathBuf, String)>) {
        let files = all_transcripts(&self.sessions);
        let results = summarize_in_parallel(&files);
        let mut summaries = Vec::with_capacity(results.len());
        let mut unreadable = Vec::new();
        for (path, result) in files.into_iter().zip(results) {
            match result {
                Ok(summary) => summaries.push(summary),
                Err(reason) => unreadable.push((path, reason)),
            }
        }
        // Inserted oldest first, so for a duplicated id the newest row is the one kept.
        summaries.sort_by_key(|summary| summary.updated_at);
        (summaries, unreadable)
    }
}

pub(crate) fn summarize_in_parallel(files: &[PathBuf]) -> Vec<Result<ThreadSummary, String>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Result<ThreadSummary, String>> = files
        .iter()
        .map(|_| Err("reading it failed unexpectedly".to_owned()))
        .collect();
    let finished: Vec<(usize, Result<ThreadSummary, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(index) else {
                            break;
                        };
                        done.push((index, summarize_rollout(path).map_err(|e| e.to_string())));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    for (index, result) in finished {
        if let Some(slot) = results.get_mut(index) {
            *slot = result;
        }
    }
    results
}
