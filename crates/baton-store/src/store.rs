use std::collections::HashSet;
use std::path::{Path, PathBuf};

use baton_protocol::{RolloutItem, SessionMeta, ThreadId};
use chrono::{DateTime, Local, Utc};

use crate::api::{
    ListPage, ListQuery, ReindexReport, Store, ThreadGuard, TranscriptWriter, TurnRecord,
};
use crate::find::{
    NameSuffix, all_transcripts, day_folder, find_by_scan, find_in_day_folders, thread_id_of_file,
};
use crate::fsutil::{canonical_or_same, create_private_dir_all, is_file_inside, sync_dir};
use crate::index::{Cursor, Index, in_memory_with};
use crate::lines::parse_time;
use crate::parallel::summarize_in_parallel;
use crate::summary::summarize_rollout_quick;
use crate::writer::write_whole_transcript;
use crate::{
    LoadedRollout, RolloutWriter, StoreError, ThreadLock, ThreadOrigin, ThreadSummary,
    read_rollout, summarize_rollout,
};

/// The session store under one `BATON_HOME`: JSONL transcripts under `sessions/`, their
/// SQLite index `state.sqlite`, thread locks under `locks/`. The [`Store`] baton runs on.
///
/// Plain blocking IO; async callers use `spawn_blocking`. `Send + Sync`: share it in an `Arc`.
pub struct FileStore {
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

impl FileStore {
    /// Opens the store at `home`, creating `home` and `home/sessions` (mode 0700) if missing.
    /// The index is opened on first use.
    pub fn open(home: &Path) -> Result<FileStore, StoreError> {
        create_private_dir_all(home, "create the baton home folder")?;
        let sessions = home.join("sessions");
        create_private_dir_all(&sessions, "create the sessions folder")?;
        Ok(FileStore {
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
        let new = self.new_transcript_place(meta)?;
        let mut writer = RolloutWriter::create_new(&new.path)?;
        writer.append(&RolloutItem::SessionMeta(Box::new(meta.clone())))?;
        writer.sync()?;
        sync_dir(&new.folder)?;
        self.record_thread(&ThreadSummary {
            id: meta.id,
            path: new.path,
            cwd: meta.cwd.clone(),
            created_at: new.started,
            updated_at: Utc::now(),
            first_user_message: None,
            last_agent_message: None,
            model: meta.model.clone(),
            turns: 0,
            source: ThreadOrigin::of(meta),
            search_text: String::new(),
            owner: meta.owner.clone(),
        })?;
        Ok(writer)
    }

    /// Creates a thread that starts with a whole history (a Codex import, a fork) in one
    /// step: the transcript is written and fsynced under a temporary name that no lookup
    /// matches (`.rollout-…-<id>.jsonl.tmp`), then renamed into place. A crash part-way
    /// leaves at most that temporary file, never a truncated transcript that `locate` would
    /// find. The index row is summarised from the new file. Returns the transcript's path;
    /// continue it with [`RolloutWriter::open_append`].
    pub fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<PathBuf, StoreError> {
        self.place_whole_transcript(meta, |temp| write_whole_transcript(temp, meta, items))
    }

    /// [`Store::import_thread`]: the transcript's lines, byte for byte, in a new file.
    pub fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError> {
        let whole = whole_lines(transcript.as_bytes());
        let meta =
            crate::session_meta_from_bytes(Path::new("the imported transcript"), whole.as_bytes())?;
        if let Ok(existing) = self.locate(meta.id) {
            return Err(StoreError::Io {
                doing: "import the session: its thread id exists already at",
                path: existing.path,
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        self.place_whole_transcript(&meta, |temp| {
            let file = crate::fsutil::open_private_append(temp, true, "create the transcript")?;
            let mut file = std::io::BufWriter::new(file);
            std::io::Write::write_all(&mut file, whole.as_bytes())
                .and_then(|()| std::io::Write::flush(&mut file))
                .map_err(StoreError::io("write the transcript", temp))?;
            file.get_ref()
                .sync_all()
                .map_err(StoreError::io("sync the transcript", temp))
        })?;
        Ok(meta.id)
    }

    /// Writes a whole new transcript for `meta` with `write` under a temporary name, then
    /// renames it into place and indexes it: a crash part-way leaves nothing `locate` finds.
    fn place_whole_transcript(
        &self,
        meta: &SessionMeta,
        write: impl FnOnce(&Path) -> Result<(), StoreError>,
    ) -> Result<PathBuf, StoreError> {
        let new = self.new_transcript_place(meta)?;
        if std::fs::symlink_metadata(&new.path).is_ok() {
            return Err(StoreError::Io {
                doing: "create the transcript",
                path: new.path,
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let temp = temp_name_for(&new.path);
        // A leftover of an earlier attempt that crashed: it was never renamed, so no one
        // else is using it.
        if let Err(error) = std::fs::remove_file(&temp)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            return Err(StoreError::Io {
                doing: "remove the leftover temporary transcript",
                path: temp,
                source: error,
            });
        }
        let written = write(&temp).and_then(|()| {
            std::fs::rename(&temp, &new.path).map_err(StoreError::io(
                "move the new transcript into place at",
                &new.path,
            ))
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
        sync_dir(&new.folder)?;
        match summarize_rollout(&new.path) {
            Ok(summary) => self.record_thread(&summary)?,
            Err(error) => tracing::warn!(
                "could not summarise {} for the index: {error}",
                new.path.display()
            ),
        }
        Ok(new.path)
    }

    /// Where a new transcript for `meta` goes; creates its day folder.
    fn new_transcript_place(&self, meta: &SessionMeta) -> Result<NewTranscript, StoreError> {
        let started = parse_time(&meta.timestamp).unwrap_or_else(Utc::now);
        let local = started.with_timezone(&Local);
        let folder = day_folder(&self.sessions, local.date_naive());
        create_private_dir_all(&folder, "create the day folder")?;
        let path = folder.join(format!(
            "rollout-{}-{}.jsonl",
            local.format("%Y-%m-%dT%H-%M-%S"),
            meta.id
        ));
        Ok(NewTranscript {
            folder,
            path,
            started,
        })
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

    /// Updates the thread's index row after a turn, from what the turn added: the first
    /// prompt stays, the last answer is replaced when the turn produced one, `turns` grows by
    /// one per prompt, and the prompt and answer are added to the search text. A summary
    /// built from in-memory history would lose what a compaction dropped; this does not.
    ///
    /// When the index has no row for the thread (it was deleted or rebuilt while the thread
    /// was open), the row is summarised from the transcript instead, which already holds
    /// the turn. Like [`FileStore::record_thread`], an unusable index is logged, not returned.
    pub fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        match self.index.record_turn(turn, Utc::now()) {
            Ok(true) => {}
            Ok(false) => match summarize_rollout(&turn.path) {
                Ok(summary) => self.record_thread(&summary)?,
                Err(error) => tracing::warn!(
                    "could not summarise {} for the index: {error}",
                    turn.path.display()
                ),
            },
            Err(error) => tracing::warn!(
                "could not record a turn of thread {} in the index: {error}",
                turn.id
            ),
        }
        Ok(())
    }

    /// The ids of every transcript under `sessions/`, from file names alone (no file is
    /// opened): for filtering a list of candidates, such as Codex sessions, by whether baton
    /// already has them.
    pub fn thread_ids_on_disk(&self) -> HashSet<ThreadId> {
        all_transcripts(&self.sessions)
            .iter()
            .filter_map(|path| thread_id_of_file(path))
            .collect()
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

// The inherent methods of the same names return the concrete types (`RolloutWriter`,
// `ThreadLock`) that the store's own tests look into; these box them.
impl Store for FileStore {
    fn create_thread(&self, meta: &SessionMeta) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        Ok(Box::new(FileStore::create_thread(self, meta)?))
    }

    fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let path = FileStore::create_thread_with_history(self, meta, items)?;
        Ok(Box::new(RolloutWriter::open_append(&path)?))
    }

    fn append_to(&self, id: ThreadId) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let located = self.locate(id)?;
        Ok(Box::new(RolloutWriter::open_append(&located.path)?))
    }

    fn read_thread(&self, id: ThreadId) -> Result<LoadedRollout, StoreError> {
        read_rollout(&self.locate(id)?.path)
    }

    fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError> {
        FileStore::import_thread(self, transcript)
    }

    fn export_thread(&self, id: ThreadId) -> Result<String, StoreError> {
        let path = self.locate(id)?.path;
        let bytes = std::fs::read(&path).map_err(StoreError::io("read the transcript", &path))?;
        Ok(whole_lines(&bytes))
    }

    fn read_timeline(&self, id: ThreadId) -> Result<Vec<RolloutItem>, StoreError> {
        crate::read_timeline(&self.locate(id)?.path)
    }

    fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        FileStore::list(self, query)
    }

    fn thread_ids(&self) -> HashSet<ThreadId> {
        self.thread_ids_on_disk()
    }

    fn lock_thread(&self, id: ThreadId) -> Result<Box<dyn ThreadGuard>, StoreError> {
        Ok(Box::new(FileStore::lock_thread(self, id)?))
    }

    fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        FileStore::record_turn(self, turn)
    }

    fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError> {
        // The index is a cache: a lost note only means the task waits for its next `tasks/get`.
        if let Err(error) = self.index.record_open_task(thread, task) {
            tracing::warn!("could not note the task of thread {thread} in the index: {error}");
        }
        Ok(())
    }

    fn open_tasks(&self) -> Result<Vec<(ThreadId, String)>, StoreError> {
        Ok(self
            .index
            .open_tasks()?
            .into_iter()
            .filter_map(|(thread, task)| Some((ThreadId::parse(&thread).ok()?, task)))
            .collect())
    }

    fn reindex(&self) -> Result<ReindexReport, StoreError> {
        FileStore::reindex(self)
    }

    fn thread_meta(&self, id: ThreadId) -> Result<SessionMeta, StoreError> {
        let located = self.locate(id)?;
        crate::reader::read_session_meta(&located.path)
    }

    fn searched_location(&self) -> PathBuf {
        self.sessions_dir()
    }
}

/// The text of every whole line of a transcript: a torn last line (no newline yet) is left
/// out, as readers leave it out.
pub(crate) fn whole_lines(bytes: &[u8]) -> String {
    let end = memchr::memrchr(b'\n', bytes).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Where [`FileStore::new_transcript_place`] puts a new transcript.
struct NewTranscript {
    folder: PathBuf,
    path: PathBuf,
    started: DateTime<Utc>,
}

/// `.rollout-…-<id>.jsonl.tmp` next to `path`: neither `*.jsonl` nor `…-<id>.jsonl`, so no
/// scan or lookup ever takes it for a transcript.
fn temp_name_for(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}
