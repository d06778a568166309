//! The SQLite index of threads: a cache over the transcript files.
//!
//! Anything wrong with the database file (missing, not a database, another schema, corrupt)
//! is repaired by moving the file aside and starting a new, empty index; callers fall back to
//! the file scan and refill it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use baton_protocol::ThreadId;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::api::{ListPage, ListQuery, TurnRecord};
use crate::summary::clip;
use crate::{StoreError, ThreadOrigin, ThreadSummary, push_search_text};

/// Bumped whenever the table layout changes; an index with another version is rebuilt,
/// except for the versions [`MIGRATIONS`] brings forward in place.
const SCHEMA_VERSION: i64 = 4;

/// In-place upgrades, append-only: `(from_version, sql)`. Each runs in the transaction that
/// sets the next version.
const MIGRATIONS: &[(i64, &str)] = &[
    // Version 3: the owner of threads started over HTTP with a token. Threads
    // indexed before had no owner, so NULL is their true value.
    (2, "ALTER TABLE threads ADD COLUMN owner TEXT;"),
    // Version 4: the unfinished durable task of a thread, for a server starting up.
    (
        3,
        "CREATE TABLE IF NOT EXISTS open_tasks (thread_id TEXT PRIMARY KEY, task_id TEXT NOT NULL);",
    ),
];

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS threads (
        id TEXT PRIMARY KEY,
        rollout_path TEXT NOT NULL,
        cwd TEXT,
        created_at INTEGER,
        updated_at INTEGER,
        first_user_message TEXT,
        last_agent_message TEXT,
        model TEXT,
        turns INTEGER,
        source TEXT,
        search_text TEXT,
        owner TEXT
    );
    CREATE INDEX IF NOT EXISTS threads_updated_at ON threads(updated_at DESC, id DESC);
    CREATE TABLE IF NOT EXISTS store_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS open_tasks (thread_id TEXT PRIMARY KEY, task_id TEXT NOT NULL);
";

/// Set once the table holds every transcript (after a reindex); a new or repaired index
/// lacks it, so the next listing rebuilds it from the files first.
const COMPLETE_KEY: &str = "complete";

pub(crate) struct Index {
    path: PathBuf,
    connection: Mutex<Option<Connection>>,
}

impl Index {
    /// Opening is lazy: the first use opens (and if needed repairs) the database.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection. If the database turns out to be broken, it is moved
    /// aside, recreated empty and `work` runs once more.
    pub fn with<T>(
        &self,
        mut work: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.lock();
        let mut repaired = false;
        loop {
            let attempt = match slot.as_mut() {
                Some(connection) => work(connection),
                None => match self.open() {
                    Ok(connection) => work(slot.insert(connection)),
                    Err(error) => Err(error),
                },
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(error) if !repaired && is_broken(&error) => {
                    *slot = None;
                    self.move_aside(&error);
                    repaired = true;
                }
                Err(source) => {
                    return Err(StoreError::Index {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        // A panic while holding the lock leaves at worst a half-done statement that SQLite
        // rolled back; the connection itself is still fine.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open(&self.path)?;
        restrict_permissions(&self.path);
        connection.busy_timeout(Duration::from_secs(5))?;
        let _mode: String =
            connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version == SCHEMA_VERSION {
            return Ok(connection);
        }
        if let Some(position) = MIGRATIONS.iter().position(|(from, _)| *from == version) {
            migrate(&connection, version, &MIGRATIONS[position..])?;
            return Ok(connection);
        }
        let tables: i64 = connection.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |row| row.get(0),
        )?;
        if version != 0 || tables > 0 {
            return Err(schema_mismatch(version));
        }
        // Another process may be creating the same schema: IF NOT EXISTS makes that harmless.
        connection.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        Ok(connection)
    }

    fn move_aside(&self, error: &rusqlite::Error) {
        let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3f");
        let aside = self.path.with_extension(format!("sqlite.broken-{stamp}"));
        tracing::warn!(
            "the session index {} is unusable ({error}); moving it to {} and starting a new one",
            self.path.display(),
            aside.display()
        );
        if let Err(rename_error) = std::fs::rename(&self.path, &aside) {
            tracing::warn!(
                "could not move {} aside ({rename_error}); deleting it",
                self.path.display()
            );
            let _ = std::fs::remove_file(&self.path);
        }
        // The journal files belong to the old database and would corrupt the new one.
        for suffix in ["-wal", "-shm"] {
            let mut journal = self.path.clone().into_os_string();
            journal.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(journal));
        }
    }

    pub fn lookup(&self, id: ThreadId) -> Result<Option<PathBuf>, StoreError> {
        self.with(|connection| rollout_path_of(connection, id))
    }

    pub fn upsert(&self, summary: &ThreadSummary) -> Result<(), StoreError> {
        self.with(|connection| upsert(connection, summary))
    }

    /// Applies one turn to the thread's row; false when there is no row to update.
    pub fn record_turn(&self, turn: &TurnRecord, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.with(|connection| record_turn(connection, turn, now))
    }

    pub fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError> {
        let id = thread.to_string();
        self.with(|connection| {
            match task {
                Some(task) => connection.execute(
                    "INSERT OR REPLACE INTO open_tasks (thread_id, task_id) VALUES (?1, ?2)",
                    [id.as_str(), task],
                ),
                None => connection.execute("DELETE FROM open_tasks WHERE thread_id = ?1", [&id]),
            }
            .map(drop)
        })
    }

    pub fn open_tasks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|connection| {
            let mut statement = connection
                .prepare("SELECT thread_id, task_id FROM open_tasks ORDER BY thread_id")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
    }

    /// Replaces the whole table with `summaries` in one transaction and marks it complete.
    pub fn replace_all(&self, summaries: &[ThreadSummary]) -> Result<(), StoreError> {
        self.with(|connection| {
            replace_all(connection, summaries)?;
            connection.execute(
                "INSERT OR REPLACE INTO store_state (key, value) VALUES (?1, '1')",
                [COMPLETE_KEY],
            )?;
            Ok(())
        })
    }

    pub fn is_complete(&self) -> Result<bool, StoreError> {
        self.with(|connection| {
            connection
                .query_row(
                    "SELECT value FROM store_state WHERE key = ?1",
                    [COMPLETE_KEY],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                .map(|value| value.is_some())
        })
    }

    pub fn list(&self, query: &ListQuery, after: Option<&Cursor>) -> Result<ListPage, StoreError> {
        self.with(|connection| list(connection, query, after))
    }
}

/// The transcript path recorded for `id`. Codex's `state_*.sqlite` has the same `threads`
/// table, so its lookup uses this too.
pub(crate) fn rollout_path_of(
    connection: &Connection,
    id: ThreadId,
) -> rusqlite::Result<Option<PathBuf>> {
    connection
        .query_row(
            "SELECT rollout_path FROM threads WHERE id = ?1",
            [id.to_string()],
            |row| row.get::<_, String>(0),
        )
        .optional()
        .map(|path| path.map(PathBuf::from))
}

/// Applies `steps` (starting at `version`) in one transaction. A concurrent process doing the
/// same is harmless: the version is re-read inside the write lock.
fn migrate(connection: &Connection, version: i64, steps: &[(i64, &str)]) -> rusqlite::Result<()> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let current: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if current != version {
            return Ok(());
        }
        for (from, sql) in steps {
            connection.execute_batch(sql)?;
            connection.pragma_update(None, "user_version", from + 1)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(err) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(err)
        }
    }
}

/// The index only holds what the transcripts hold, but those are private too.
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

const SCHEMA_MISMATCH: &str = "not baton's index layout";

fn schema_mismatch(version: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(format!(
            "{SCHEMA_MISMATCH}: schema version {version}, baton expects {SCHEMA_VERSION}"
        )),
    )
}

/// Errors that mean the file is not a usable index, as opposed to a busy or read-only one.
fn is_broken(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            matches!(
                failure.code,
                ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt
            ) || message.as_deref().is_some_and(|message| {
                message.starts_with(SCHEMA_MISMATCH)
                    || message.contains("no such table")
                    || message.contains("no such column")
            })
        }
        _ => false,
    }
}

/// The in-memory fallback used when the index file cannot be used at all.
pub(crate) fn in_memory_with(summaries: &[ThreadSummary]) -> rusqlite::Result<Connection> {
    let mut connection = Connection::open_in_memory()?;
    connection.execute_batch(SCHEMA)?;
    replace_all(&mut connection, summaries)?;
    Ok(connection)
}

fn replace_all(connection: &mut Connection, summaries: &[ThreadSummary]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    transaction.execute("DELETE FROM threads", [])?;
    for summary in summaries {
        upsert(&transaction, summary)?;
    }
    transaction.commit()
}

/// Read, extend and write the row in one transaction: the search text is cut in bytes on a
/// character boundary, which SQL's `substr` (characters) cannot do.
fn record_turn(
    connection: &mut Connection,
    turn: &TurnRecord,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let id = turn.id.to_string();
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<Option<String>> = transaction
        .query_row(
            "SELECT search_text FROM threads WHERE id = ?1",
            [&id],
            |row| row.get(0),
        )
        .optional()?;
    let Some(search_text) = existing else {
        return Ok(false);
    };
    let mut search_text = search_text.unwrap_or_default();
    for text in [&turn.user_message, &turn.agent_message]
        .into_iter()
        .flatten()
    {
        push_search_text(&mut search_text, text);
    }
    transaction
        .prepare_cached(
            "UPDATE threads SET
                 rollout_path = ?2, cwd = ?3,
                 created_at = coalesce(created_at, ?4), updated_at = ?5,
                 first_user_message = coalesce(first_user_message, ?6),
                 last_agent_message = coalesce(?7, last_agent_message),
                 model = coalesce(?8, model),
                 turns = coalesce(turns, 0) + ?9,
                 source = ?10, search_text = ?11
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            turn.path.to_string_lossy(),
            crate::fsutil::normalize_lexically(&turn.cwd).to_string_lossy(),
            turn.created_at.timestamp_millis(),
            now.timestamp_millis(),
            turn.user_message.clone().map(clip),
            turn.agent_message.clone().map(clip),
            turn.model,
            i64::from(turn.user_message.is_some()),
            turn.source.as_str(),
            search_text,
        ])?;
    transaction.commit()?;
    Ok(true)
}

fn upsert(connection: &Connection, summary: &ThreadSummary) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "INSERT INTO threads (id, rollout_path, cwd, created_at, updated_at,
                 first_user_message, last_agent_message, model, turns, source, search_text,
                 owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(id) DO UPDATE SET
                 rollout_path = excluded.rollout_path, cwd = excluded.cwd,
                 created_at = excluded.created_at, updated_at = excluded.updated_at,
                 first_user_message = excluded.first_user_message,
                 last_agent_message = excluded.last_agent_message,
                 model = excluded.model, turns = excluded.turns, source = excluded.source,
                 search_text = excluded.search_text, owner = excluded.owner",
        )?
        .execute(params![
            summary.id.to_string(),
            summary.path.to_string_lossy(),
            crate::fsutil::normalize_lexically(&summary.cwd).to_string_lossy(),
            summary.created_at.timestamp_millis(),
            summary.updated_at.timestamp_millis(),
            summary.first_user_message,
            summary.last_agent_message,
            summary.model,
            summary.turns,
            summary.source.as_str(),
            summary.search_text,
            summary.owner,
        ])?;
    Ok(())
}

/// Where the previous page ended, in the listing order (newest update first, then id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub updated_at_ms: i64,
    pub id: String,
}

impl Cursor {
    const PREFIX: &'static str = "v1.";

    /// The encoded cursor of the page after `threads` (one page of a listing), or `None` when
    /// no thread follows them.
    pub fn after_page(threads: &[ThreadSummary], more: bool) -> Option<String> {
        let last = threads.last().filter(|_| more)?;
        Some(
            Cursor {
                updated_at_ms: last.updated_at.timestamp_millis(),
                id: last.id.to_string(),
            }
            .encode(),
        )
    }

    pub fn encode(&self) -> String {
        format!("{}{}.{}", Self::PREFIX, self.updated_at_ms, self.id)
    }

    pub fn decode(text: &str) -> Result<Cursor, StoreError> {
        let invalid = || StoreError::InvalidCursor {
            cursor: text.chars().take(80).collect(),
        };
        let rest = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
        let (millis, id) = rest.split_once('.').ok_or_else(invalid)?;
        let updated_at_ms = millis.parse().map_err(|_| invalid())?;
        let id = ThreadId::parse(id).map_err(|_| invalid())?;
        Ok(Cursor {
            updated_at_ms,
            id: id.to_string(),
        })
    }
}

pub(crate) fn list(
    connection: &Connection,
    query: &ListQuery,
    after: Option<&Cursor>,
) -> rusqlite::Result<ListPage> {
    let limit = query.effective_limit();
    let cwd = query.cwd.as_deref().map(|cwd| {
        crate::fsutil::normalize_lexically(cwd)
            .to_string_lossy()
            .into_owned()
    });
    let text = query.text.as_deref().filter(|text| !text.is_empty());
    let mut statement = connection.prepare_cached(
        "SELECT id, rollout_path, cwd, created_at, updated_at, first_user_message,
                last_agent_message, model, turns, source, owner
         FROM threads
         WHERE (?1 IS NULL OR cwd = ?1)
           AND (?2 IS NULL
                OR instr(lower(coalesce(first_user_message, '')), lower(?2)) > 0
                OR instr(lower(coalesce(last_agent_message, '')), lower(?2)) > 0
                OR instr(lower(coalesce(search_text, '')), lower(?2)) > 0)
           AND (?3 IS NULL OR updated_at < ?3 OR (updated_at = ?3 AND id < ?4))
           AND (?6 IS NULL OR updated_at >= ?6)
           AND (?7 IS NULL OR updated_at < ?7)
           AND (?8 IS NULL OR owner = ?8)
         ORDER BY updated_at DESC, id DESC
         LIMIT ?5",
    )?;
    let rows = statement.query_map(
        params![
            cwd,
            text,
            after.map(|cursor| cursor.updated_at_ms),
            after.map(|cursor| cursor.id.as_str()),
            i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1),
            query.updated_after.map(|t| t.timestamp_millis()),
            query.updated_before.map(|t| t.timestamp_millis()),
            query.owner.as_deref(),
        ],
        row_to_summary,
    )?;
    let mut threads = Vec::new();
    let mut more = false;
    for row in rows {
        if threads.len() == limit {
            more = true;
            break;
        }
        match row? {
            Some(summary) => threads.push(summary),
            None => tracing::warn!("skipped an index row with an invalid thread id"),
        }
    }
    let next_cursor = Cursor::after_page(&threads, more);
    Ok(ListPage {
        threads,
        next_cursor,
    })
}

fn row_to_summary(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ThreadSummary>> {
    let Ok(id) = ThreadId::parse(&row.get::<_, String>(0)?) else {
        return Ok(None);
    };
    let time = |index: usize| -> rusqlite::Result<DateTime<Utc>> {
        let millis: Option<i64> = row.get(index)?;
        Ok(millis
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_default())
    };
    Ok(Some(ThreadSummary {
        id,
        path: PathBuf::from(row.get::<_, String>(1)?),
        cwd: PathBuf::from(row.get::<_, Option<String>>(2)?.unwrap_or_default()),
        created_at: time(3)?,
        updated_at: time(4)?,
        first_user_message: row.get(5)?,
        last_agent_message: row.get(6)?,
        model: row.get(7)?,
        turns: row.get::<_, Option<u32>>(8)?.unwrap_or(0),
        source: row
            .get::<_, Option<String>>(9)?
            .as_deref()
            .and_then(ThreadOrigin::parse)
            .unwrap_or(ThreadOrigin::Baton),
        // Listing does not need it; search reads it in SQL.
        search_text: String::new(),
        owner: row.get(10)?,
    }))
}
