//! baton's session store on PostgreSQL: the [`Store`] trait over `tokio-postgres`, for a team
//! whose baton servers on several machines share their sessions (the shared store for serving
//! a team over HTTP).
//!
//! Each row of `lines` is exactly one transcript line as the files store writes it, so a
//! thread exports to the same Codex-format JSONL, and reading a thread back goes through
//! baton-store's own parser ([`baton_store::parse_rollout`]): one set of history rules.
//! `threads` is the listing (owner, cwd, times, prompts, turns, search text), kept up to date
//! by every write. A thread's writer lock is a PostgreSQL advisory lock held on a connection
//! of its own, so it is released when the holding process or machine dies.
//!
//! The [`Store`] trait blocks; this crate runs its queries on a small tokio runtime of its
//! own and waits for them on a channel, so it can be called from any thread (a
//! `spawn_blocking` worker, `block_in_place`, or plain sync code) without nesting runtimes.
//!
//! Architecture invariant: the password never leaves the connection config. Everything shown
//! to people names the database by [`location_of`] (user, host, port, database).

mod migrations;
mod pool;
mod queries;
mod tls;
mod url;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use baton_protocol::{RolloutItem, SessionMeta, ThreadId, format_timestamp};
use baton_store::{
    ListCursor, ListPage, ListQuery, LoadedRollout, ReindexReport, Store, StoreError, ThreadGuard,
    ThreadOrigin, ThreadSummary, TranscriptWriter, TurnRecord, parse_rollout, push_search_text,
    rollout_line, session_meta_from_bytes, summarize_bytes,
};
use chrono::{DateTime, Utc};
use tokio_postgres::Client;
use tokio_postgres::config::{Config, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use uuid::Uuid;

pub use url::{location_of, passwords_in_url, redact_url};

use pool::Pool;

/// Prompts and answers kept in the listing are cut to this many bytes, as in the files
/// store's index.
const SUMMARY_TEXT_LIMIT: usize = baton_store::SUMMARY_TEXT_LIMIT;

/// How many more times (10 ms apart) a busy thread's holder row is looked for when the lock
/// is taken but the row is not there yet.
const HOLDER_LOOKUPS: usize = 50;

/// A [`Store`] on a PostgreSQL database (see the crate docs).
pub struct PgStore {
    shared: Arc<Shared>,
}

/// What queries need, shared with the futures that run them and with lock guards.
struct Shared {
    runtime: pool::Runtime,
    pool: Pool,
    /// The database as people see it: no password.
    location: String,
    /// This machine and process, recorded with every lock taken.
    host: String,
    pid: u32,
    /// The connection holding each thread lock this process has. A thread's lines are
    /// appended on it, so a lost lock (the database restarted under a running turn) fails the
    /// next append instead of letting this turn write beside another server's.
    held: std::sync::Mutex<HashMap<ThreadId, Arc<Client>>>,
    /// The schema was found current (or brought there). Until then every operation checks it
    /// first: a server that started while the database was down (see
    /// [`PgStore::open_for_server`]) gets there at its first call after the database is back.
    schema_ready: AtomicBool,
    /// The schema check [`PgStore::open_in_background`] started, until an operation takes it
    /// to wait for it.
    schema_check_started: tokio::sync::Mutex<Option<tokio::task::JoinHandle<OpResult<()>>>>,
}

/// A failure inside one store operation, before it is named for a person.
enum OpError {
    Pg(tokio_postgres::Error),
    Store(StoreError),
    /// Connecting got no answer in this long (the server accepted and went silent).
    Unanswered(std::time::Duration),
}

impl From<tokio_postgres::Error> for OpError {
    fn from(error: tokio_postgres::Error) -> Self {
        OpError::Pg(error)
    }
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        OpError::Store(error)
    }
}

type OpResult<T> = Result<T, OpError>;

impl OpError {
    /// What went wrong, for a person: never the password.
    fn describe(&self) -> String {
        match self {
            OpError::Pg(error) => describe(error),
            OpError::Store(error) => error.to_string(),
            OpError::Unanswered(deadline) => format!(
                "the server accepted the connection but did not answer within {} s \
                 (the URL's connect_timeout)",
                deadline.as_secs()
            ),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url`, creates or migrates baton's schema, and refuses a
    /// schema newer than this baton knows. The password comes from the URL or `PGPASSWORD`.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = Self::configure(url)?;
        // Every operation checks the schema first until it is current: this one does only that.
        store
            .shared
            .run("create or migrate the schema", async { Ok(()) })?;
        Ok(store)
    }

    /// [`PgStore::open`] for a short command: connecting and checking the schema start in the
    /// background and this returns at once, so the connection (TCP, authentication, a new
    /// server process: most of what a `baton exec resume` pays for PostgreSQL) overlaps the
    /// command's own start. The first operation waits for that and fails with its error (an
    /// unreachable database, a schema newer than this baton); what the URL gets wrong is an
    /// error here.
    pub fn open_in_background(url: &str) -> Result<PgStore, StoreError> {
        let store = Self::configure(url)?;
        let shared = store.shared.clone();
        let check = store
            .shared
            .runtime
            .spawn(async move { shared.check_schema().await });
        // Nothing else has the store yet, so the lock is free.
        if let Ok(mut started) = store.shared.schema_check_started.try_lock() {
            *started = check;
        }
        Ok(store)
    }

    /// [`PgStore::open`] for a server, which must start and keep serving while the database
    /// is down: a database that cannot be reached now is not an error (a warning is logged);
    /// the schema is checked at the first operation instead, and at each one until that
    /// succeeds, each failing with the same clear error meanwhile. What waiting cannot fix
    /// (a malformed URL, a schema newer than this baton) is still an error here.
    pub fn open_for_server(url: &str) -> Result<PgStore, StoreError> {
        let store = Self::configure(url)?;
        let checked = store.shared.runtime.block_on({
            let shared = store.shared.clone();
            async move { shared.check_schema().await }
        });
        match checked {
            Some(Err(error @ (OpError::Pg(_) | OpError::Unanswered(_)))) => {
                tracing::warn!(
                    "the session database {} cannot be reached now ({}); serving anyway, each \
                     call retries it",
                    store.shared.location,
                    error.describe()
                );
                Ok(store)
            }
            Some(Err(OpError::Store(error))) => Err(error),
            Some(Ok(())) => Ok(store),
            None => Err(StoreError::Database {
                doing: "create or migrate the schema",
                location: store.shared.location.clone(),
                source: "the database worker stopped".into(),
            }),
        }
    }

    /// The store for `url`, not connected yet.
    fn configure(url: &str) -> Result<PgStore, StoreError> {
        let shown = redact_url(url);
        if has_unencoded_at_in_userinfo(url) {
            // tokio-postgres (like libpq) ends the user info at the first `@`: the rest of
            // the password would become the host name and be shown in every error.
            return Err(StoreError::Database {
                doing: "parse the database URL",
                location: shown,
                source: "the URL has more than one `@` before its host: write an `@` in the \
                         user name or password as `%40`"
                    .into(),
            });
        }
        let (url, tls_settings) = tls::split_tls_settings(url);
        let mut config = Config::from_str(&url).map_err(|error| StoreError::Database {
            doing: "parse the database URL",
            location: shown.clone(),
            source: Box::new(error),
        })?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".to_owned());
            config.user(user);
        }
        if config.get_password().is_none() {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
                _ => "localhost".to_owned(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let user = config.get_user().unwrap_or_default().to_owned();
            let database = config.get_dbname().unwrap_or(&user).to_owned();
            if let Some(password) = url::pgpass_password(&host, port, &database, &user) {
                config.password(password);
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let location = location_of(&config);
        let tls = match config.get_ssl_mode() {
            SslMode::Require => {
                Some(tls::MakeRustlsConnect::new(&tls_settings).map_err(|error| {
                    StoreError::Database {
                        doing: "connect over TLS",
                        location: location.clone(),
                        source: Box::new(error),
                    }
                })?)
            }
            // libpq's `prefer` tries TLS and falls back; baton connects in the clear, as it
            // would after the fallback. Ask for `require` to get TLS.
            _ => None,
        };
        let runtime = pool::Runtime::new().map_err(|error| StoreError::Database {
            doing: "start the database worker",
            location: location.clone(),
            source: Box::new(error),
        })?;
        let shared = Arc::new(Shared {
            runtime,
            pool: Pool::new(config, tls),
            location,
            host: host_name(),
            pid: std::process::id(),
            held: std::sync::Mutex::new(HashMap::new()),
            schema_ready: AtomicBool::new(false),
            schema_check_started: tokio::sync::Mutex::new(None),
        });
        Ok(PgStore { shared })
    }

    /// The database as people see it (no password).
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// Runs `op` on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, doing: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: Future<Output = OpResult<T>> + Send + 'static,
    {
        self.shared.run(doing, op(self.shared.clone()))
    }

    fn path_of(&self, id: ThreadId) -> PathBuf {
        self.shared.path_of(id)
    }

    fn create(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let path = self.path_of(meta.id);
        let meta_item = RolloutItem::SessionMeta(Box::new(meta.clone()));
        let mut lines = Vec::with_capacity(items.len() + 1);
        let mut bytes = Vec::new();
        let mut compaction_seq = None;
        let mut turn_context_seq = None;
        for (seq, item) in std::iter::once(&meta_item).chain(items).enumerate() {
            let line = rollout_line(item, &path)?;
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            match item {
                RolloutItem::Compacted(_) => compaction_seq = Some(seq as i64),
                RolloutItem::TurnContext(_) => turn_context_seq = Some(seq as i64),
                _ => {}
            }
            lines.push(line);
        }
        let total = self.insert_lines(meta.id, lines, bytes, compaction_seq, turn_context_seq)?;
        Ok(self.writer(meta.id, total as u64))
    }

    /// A writer that appends to thread `id`, whose transcript is `len` bytes long now.
    fn writer(&self, id: ThreadId, len: u64) -> Box<dyn TranscriptWriter> {
        Box::new(PgWriter {
            shared: self.shared.clone(),
            id,
            path: self.path_of(id),
            len,
        })
    }

    /// Inserts a new thread with its `lines` (`bytes` is them as JSONL), all or nothing.
    /// Returns the transcript's length in bytes.
    fn insert_lines(
        &self,
        id: ThreadId,
        lines: Vec<String>,
        bytes: Vec<u8>,
        compaction_seq: Option<i64>,
        turn_context_seq: Option<i64>,
    ) -> Result<i64, StoreError> {
        let summary = summarize_bytes(&self.path_of(id), &bytes, Some(Utc::now()))?;
        let total = bytes.len() as i64;
        self.run("create the thread", move |shared| async move {
            let mut client = shared.pool.get().await?;
            let result = insert_thread(
                &mut client,
                &summary,
                &lines,
                compaction_seq,
                turn_context_seq,
                total,
            )
            .await;
            shared.pool.put(client);
            match result {
                Err(OpError::Pg(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(OpError::Store(StoreError::Io {
                        doing: "create the thread: its thread id exists already at",
                        path: shared.path_of(id),
                        source: std::io::ErrorKind::AlreadyExists.into(),
                    }))
                }
                other => other,
            }
        })?;
        Ok(total)
    }
}

impl Shared {
    /// Runs `future` on the store's runtime and waits for it, the schema checked first if it
    /// has not been yet.
    fn run<T: Send + 'static>(
        self: &Arc<Self>,
        doing: &'static str,
        future: impl Future<Output = OpResult<T>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = self.clone();
        let result = self
            .runtime
            .block_on(async move {
                if !shared.schema_ready.load(Ordering::Acquire) {
                    shared.wait_for_schema().await?;
                }
                future.await
            })
            .ok_or_else(|| StoreError::Database {
                doing,
                location: self.location.clone(),
                source: "the database worker stopped".into(),
            })?;
        result.map_err(|error| match error {
            OpError::Store(error) => error,
            other => StoreError::Database {
                doing,
                location: self.location.clone(),
                source: other.describe().into(),
            },
        })
    }

    fn path_of(&self, id: ThreadId) -> PathBuf {
        PathBuf::from(format!("{}/threads/{id}", self.location))
    }

    /// Waits for the schema check [`PgStore::open_in_background`] started while it runs
    /// (operations that arrive meanwhile wait for it too, and find it done), else checks the
    /// schema now. A failed check is reported to the operation that waited for it, not
    /// retried at once: a database that cannot be reached would cost its connect timeout
    /// twice.
    async fn wait_for_schema(&self) -> OpResult<()> {
        let mut started = self.schema_check_started.lock().await;
        if self.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        match started.take() {
            Some(check) => check.await.unwrap_or_else(|error| {
                Err(OpError::Store(StoreError::Database {
                    doing: "create or migrate the schema",
                    location: self.location.clone(),
                    source: format!("the schema check stopped: {error}").into(),
                }))
            }),
            None => {
                // Checks after a failed one run side by side, each bounded by its timeout.
                drop(started);
                self.check_schema().await
            }
        }
    }

    /// Creates or migrates the schema, or refuses a newer one; remembers success.
    async fn check_schema(&self) -> OpResult<()> {
        let mut client = self.pool.get().await?;
        let result = migrations::apply(&mut client, &self.location).await;
        self.pool.put(client);
        result?;
        self.schema_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn held_locks(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Arc<Client>>> {
        pool::lock(&self.held)
    }

    fn not_found(&self, id: ThreadId) -> StoreError {
        StoreError::NotFound {
            id,
            searched: PathBuf::from(&self.location),
        }
    }

    /// Runs a read on a pooled connection, once more on a fresh one if the pooled one turned
    /// out to be dead (the database restarted since it was last used).
    async fn read<T, F>(self: &Arc<Self>, op: F) -> OpResult<T>
    where
        F: for<'c> Fn(&'c Client) -> pool::BoxFuture<'c, OpResult<T>>,
    {
        let client = self.pool.get().await?;
        let result = op(&client).await;
        if matches!(result, Err(OpError::Pg(_))) && client.is_closed() {
            let fresh = self.pool.connect().await?;
            let again = op(&fresh).await;
            self.pool.put(fresh);
            return again;
        }
        self.pool.put(client);
        result
    }

    /// A read of thread `id` by the turn that holds its lock in this process runs on the
    /// lock's connection (one connection per turn, not two: a `baton exec resume` opens one);
    /// any other read, or one whose lock connection is gone, runs as [`Shared::read`] does.
    async fn read_as_holder<T, F>(self: &Arc<Self>, id: ThreadId, op: F) -> OpResult<T>
    where
        F: for<'c> Fn(&'c Client) -> pool::BoxFuture<'c, OpResult<T>>,
    {
        let held = self.held_locks().get(&id).cloned();
        if let Some(client) = held.filter(|client| !client.is_closed()) {
            let result = op(&client).await;
            if !(matches!(result, Err(OpError::Pg(_))) && client.is_closed()) {
                return result;
            }
        }
        self.read(op).await
    }
}

async fn insert_thread(
    client: &mut Client,
    summary: &ThreadSummary,
    lines: &[String],
    compaction_seq: Option<i64>,
    turn_context_seq: Option<i64>,
    total: i64,
) -> OpResult<()> {
    let transaction = client.transaction().await?;
    let uuid = uuid_of(summary.id);
    transaction
        .execute(
            queries::INSERT_THREAD,
            &[
                &uuid,
                &summary.owner,
                &summary.cwd.to_string_lossy().as_ref(),
                &summary.created_at,
                &summary.updated_at,
                &summary.first_user_message.as_deref().map(clip),
                &summary.last_agent_message.as_deref().map(clip),
                &(summary.turns as i32),
                &summary.model,
                &summary.source.as_str(),
                &compaction_seq,
                &turn_context_seq,
                &(lines.len() as i64),
                &total,
                &summary.search_text,
            ],
        )
        .await?;
    let insert = transaction.prepare(queries::INSERT_LINE).await?;
    for (seq, line) in lines.iter().enumerate() {
        transaction
            .execute(&insert, &[&uuid, &(seq as i64), line])
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

impl Store for PgStore {
    fn create_thread(&self, meta: &SessionMeta) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.create(meta, &[])
    }

    fn create_thread_with_history(
        &self,
        meta: &SessionMeta,
        items: &[RolloutItem],
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        self.create(meta, items)
    }

    fn append_to(&self, id: ThreadId) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        let uuid = uuid_of(id);
        let len = self.run("open the thread", move |shared| async move {
            let row = shared
                .read_as_holder(id, |client| {
                    Box::pin(async move {
                        Ok(client
                            .query_typed_opt(queries::THREAD_BYTES, &[(&uuid, Type::UUID)])
                            .await?)
                    })
                })
                .await?;
            match row {
                Some(row) => Ok(row.try_get::<_, i64>(0)?),
                None => Err(OpError::Store(shared.not_found(id))),
            }
        })?;
        Ok(self.writer(id, len as u64))
    }

    fn append_after_read(
        &self,
        id: ThreadId,
        len: u64,
    ) -> Result<Box<dyn TranscriptWriter>, StoreError> {
        // The caller holds the lock and read `len` bytes: nobody appended since.
        Ok(self.writer(id, len))
    }

    fn read_thread(&self, id: ThreadId) -> Result<LoadedRollout, StoreError> {
        let uuid = uuid_of(id);
        let (total, bytes) = self.run("read the thread", move |shared| async move {
            let rows = shared
                .read_as_holder(id, |client| {
                    Box::pin(async move {
                        Ok(client
                            .query_typed(queries::READ_FROM_COMPACTION, &[(&uuid, Type::UUID)])
                            .await?)
                    })
                })
                .await?;
            let Some(first) = rows.first() else {
                return Err(OpError::Store(shared.not_found(id)));
            };
            let total: i64 = first.try_get(0)?;
            Ok((total, joined_lines(&rows, 1)?))
        })?;
        let mut loaded = parse_rollout(&self.path_of(id), &bytes)?;
        // The transcript's whole length, not the part read: a reader compares it with what
        // writers report to notice appends by another process.
        loaded.file_len = total as u64;
        Ok(loaded)
    }

    fn thread_meta(&self, id: ThreadId) -> Result<SessionMeta, StoreError> {
        let uuid = uuid_of(id);
        let line = self.run("read the thread's session_meta", move |shared| async move {
            let row = shared
                .read(|client| {
                    Box::pin(async move {
                        Ok(client
                            .query_typed_opt(queries::FIRST_LINE, &[(&uuid, Type::UUID)])
                            .await?)
                    })
                })
                .await?;
            match row {
                Some(row) => Ok(row.try_get::<_, String>(0)?),
                None => Err(OpError::Store(shared.not_found(id))),
            }
        })?;
        session_meta_from_bytes(&self.path_of(id), format!("{line}\n").as_bytes())
    }

    fn import_thread(&self, transcript: &str) -> Result<ThreadId, StoreError> {
        // Whole lines only: a torn last line (no newline) is left out, as readers do.
        let end = transcript.rfind('\n').map_or(0, |i| i + 1);
        let whole = &transcript[..end];
        let meta = session_meta_from_bytes(Path::new("the imported transcript"), whole.as_bytes())?;
        let mut compaction_seq = None;
        let mut turn_context_seq = None;
        let mut lines = Vec::new();
        // Split at `\n` only: `lines()` would also drop a `\r` before it, and the rows would
        // no longer be the file's bytes.
        for (seq, line) in whole.split_terminator('\n').enumerate() {
            match line_type(line).as_deref() {
                Some("compacted") => compaction_seq = Some(seq as i64),
                Some("turn_context") => turn_context_seq = Some(seq as i64),
                _ => {}
            }
            lines.push(line.to_owned());
        }
        self.insert_lines(
            meta.id,
            lines,
            whole.as_bytes().to_vec(),
            compaction_seq,
            turn_context_seq,
        )?;
        Ok(meta.id)
    }

    fn export_thread(&self, id: ThreadId) -> Result<String, StoreError> {
        let uuid = uuid_of(id);
        self.run("export the thread", move |shared| async move {
            let rows = shared
                .read(|client| {
                    Box::pin(async move { Ok(client.query(queries::ALL_LINES, &[&uuid]).await?) })
                })
                .await?;
            if rows.is_empty() {
                return Err(OpError::Store(shared.not_found(id)));
            }
            let bytes = joined_lines(&rows, 0)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    }

    fn list(&self, query: &ListQuery) -> Result<ListPage, StoreError> {
        let after = query
            .cursor
            .as_deref()
            .map(ListCursor::decode)
            .transpose()?;
        let limit = if query.limit == 0 {
            ListQuery::DEFAULT_LIMIT
        } else {
            query.limit
        };
        let cwd = query
            .cwd
            .as_deref()
            .map(|cwd| cwd.to_string_lossy().into_owned());
        let pattern = query
            .text
            .as_deref()
            .filter(|text| !text.is_empty())
            .map(|text| format!("%{}%", escape_like(text)));
        let (after_time, after_id) = match &after {
            Some(cursor) => (
                DateTime::<Utc>::from_timestamp_millis(cursor.updated_at_ms),
                Uuid::parse_str(&cursor.id).ok(),
            ),
            None => (None, None),
        };
        let (updated_after, updated_before) = (query.updated_after, query.updated_before);
        let owner = query.owner.clone();
        let rows = self.run("list the threads", move |shared| async move {
            let params = (
                cwd,
                pattern,
                after_time,
                after_id,
                updated_after,
                updated_before,
                owner,
                limit as i64 + 1,
            );
            shared
                .read(|client| {
                    let params = params.clone();
                    Box::pin(async move {
                        Ok(client
                            .query(
                                queries::LIST,
                                &[
                                    &params.0, &params.1, &params.2, &params.3, &params.4,
                                    &params.5, &params.6, &params.7,
                                ],
                            )
                            .await?)
                    })
                })
                .await
        })?;
        let mut threads = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            threads.push(self.summary_of(row).map_err(|error| StoreError::Database {
                doing: "read the thread listing",
                location: self.shared.location.clone(),
                source: Box::new(error),
            })?);
        }
        let next_cursor = ListCursor::after_page(&threads, rows.len() > limit);
        Ok(ListPage {
            threads,
            next_cursor,
        })
    }

    fn thread_ids(&self) -> HashSet<ThreadId> {
        self.try_thread_ids().unwrap_or_else(|error| {
            tracing::warn!("{error}");
            HashSet::new()
        })
    }

    fn try_thread_ids(&self) -> Result<HashSet<ThreadId>, StoreError> {
        self.run("list the thread ids", |shared| async move {
            let rows = shared
                .read(|client| {
                    Box::pin(async move { Ok(client.query(queries::THREAD_IDS, &[]).await?) })
                })
                .await?;
            let mut ids = HashSet::with_capacity(rows.len());
            for row in rows {
                ids.insert(ThreadId::from_uuid(row.try_get::<_, Uuid>(0)?));
            }
            Ok(ids)
        })
    }

    fn record_open_task(&self, thread: ThreadId, task: Option<&str>) -> Result<(), StoreError> {
        let uuid = uuid_of(thread);
        let task = task.map(str::to_owned);
        let result = self.run("note the thread's task", move |shared| async move {
            let client = shared.pool.get().await?;
            let result = match &task {
                Some(task) => {
                    client
                        .execute(queries::NOTE_OPEN_TASK, &[&uuid, task])
                        .await
                }
                None => client.execute(queries::FORGET_OPEN_TASK, &[&uuid]).await,
            };
            shared.pool.put(client);
            result.map(drop).map_err(Into::into)
        });
        // Like the listing: a lost note only means the task waits for its next `tasks/get`.
        if let Err(error) = result {
            tracing::warn!("could not note the task of thread {thread}: {error}");
        }
        Ok(())
    }

    fn open_tasks(&self) -> Result<Vec<(ThreadId, String)>, StoreError> {
        self.run("list the open tasks", |shared| async move {
            let client = shared.pool.get().await?;
            let rows = client.query(queries::OPEN_TASKS, &[]).await;
            shared.pool.put(client);
            let mut tasks = Vec::new();
            for row in rows? {
                tasks.push((
                    ThreadId::from_uuid(row.try_get::<_, Uuid>(0)?),
                    row.try_get::<_, String>(1)?,
                ));
            }
            Ok(tasks)
        })
    }

    fn lock_thread(&self, id: ThreadId) -> Result<Box<dyn ThreadGuard>, StoreError> {
        let uuid = uuid_of(id);
        let key = lock_key(id);
        let client = self.run("lock the thread", move |shared| async move {
            let client = shared.pool.get().await?;
            let taken = match try_lock(&shared, &client, key, uuid).await {
                Err(OpError::Pg(error)) if client.is_closed() => {
                    drop(error);
                    let fresh = shared.pool.connect().await?;
                    let taken = try_lock(&shared, &fresh, key, uuid).await?;
                    return finish_lock(&shared, fresh, taken, uuid, id).await;
                }
                // The lock may have been taken before the statement failed; closing the
                // connection (dropping it) releases it.
                result => result?,
            };
            finish_lock(&shared, client, taken, uuid, id).await
        })?;
        let client = Arc::new(client);
        self.shared.held_locks().insert(id, client.clone());
        Ok(Box::new(PgGuard {
            shared: self.shared.clone(),
            id,
            client: Some(client),
        }))
    }

    fn record_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        let turn = turn.clone();
        let id = turn.id;
        let result = self.run("record the turn", move |shared| async move {
            let held = shared.held_locks().get(&id).cloned();
            if let Some(client) = held.filter(|client| !client.is_closed()) {
                return record_turn(&client, &turn).await;
            }
            let client = shared.pool.get().await?;
            let result = record_turn(&client, &turn).await;
            shared.pool.put(client);
            result
        });
        // The listing is kept with the lines, but a failed update of it loses no line.
        if let Err(error) = result {
            tracing::warn!("could not record a turn of thread {id} in the listing: {error}");
        }
        Ok(())
    }

    fn reindex(&self) -> Result<ReindexReport, StoreError> {
        let ids = self.run("list the thread ids", |shared| async move {
            let client = shared.pool.get().await?;
            let rows = client.query(queries::THREAD_IDS, &[]).await;
            shared.pool.put(client);
            let mut ids = Vec::new();
            for row in rows? {
                ids.push(ThreadId::from_uuid(row.try_get::<_, Uuid>(0)?));
            }
            Ok(ids)
        })?;
        let mut report = ReindexReport {
            found: 0,
            unreadable: Vec::new(),
        };
        for id in ids {
            match self.reindex_one(id) {
                Ok(()) => report.found += 1,
                Err(error) => report
                    .unreadable
                    .push((self.path_of(id), error.to_string())),
            }
        }
        Ok(report)
    }

    fn searched_location(&self) -> PathBuf {
        PathBuf::from(&self.shared.location)
    }
}

impl PgStore {
    fn summary_of(
        &self,
        row: &tokio_postgres::Row,
    ) -> Result<ThreadSummary, tokio_postgres::Error> {
        let id = ThreadId::from_uuid(row.try_get::<_, Uuid>(0)?);
        let source: String = row.try_get(8)?;
        Ok(ThreadSummary {
            id,
            path: self.path_of(id),
            cwd: PathBuf::from(row.try_get::<_, String>(1)?),
            created_at: row.try_get(2)?,
            updated_at: row.try_get(3)?,
            first_user_message: row.try_get(4)?,
            last_agent_message: row.try_get(5)?,
            model: row.try_get(6)?,
            turns: row.try_get::<_, i32>(7)?.max(0) as u32,
            source: ThreadOrigin::parse(&source).unwrap_or(ThreadOrigin::Baton),
            search_text: String::new(),
            owner: row.try_get(9)?,
        })
    }

    /// Rebuilds one thread's listing row and compaction position from its lines.
    fn reindex_one(&self, id: ThreadId) -> Result<(), StoreError> {
        let text = self.export_thread(id)?;
        let path = self.path_of(id);
        let summary = summarize_bytes(&path, text.as_bytes(), Some(Utc::now()))?;
        let mut compaction_seq = None;
        let mut turn_context_seq = None;
        for (seq, line) in text.lines().enumerate() {
            match line_type(line).as_deref() {
                Some("compacted") => compaction_seq = Some(seq as i64),
                Some("turn_context") => turn_context_seq = Some(seq as i64),
                _ => {}
            }
        }
        let uuid = uuid_of(id);
        let count = text.lines().count() as i64;
        let total = text.len() as i64;
        self.run("reindex the thread", move |shared| async move {
            let client = shared.pool.get().await?;
            let result = client
                .execute(
                    queries::REINDEX_THREAD,
                    &[
                        &uuid,
                        &summary.first_user_message.as_deref().map(clip),
                        &summary.last_agent_message.as_deref().map(clip),
                        &(summary.turns as i32),
                        &summary.search_text,
                        &compaction_seq,
                        &turn_context_seq,
                        &count,
                        &total,
                        &summary.updated_at,
                    ],
                )
                .await;
            shared.pool.put(client);
            result?;
            Ok(())
        })
    }
}

/// Records a finished turn in the listing, from any connection: one statement, unless the
/// search text reaches its limit with this turn and is cut here, exactly as the files store
/// and `reindex` cut it (`push_search_text`).
async fn record_turn(client: &Client, turn: &TurnRecord) -> OpResult<()> {
    let uuid = uuid_of(turn.id);
    let cwd = turn.cwd.to_string_lossy();
    let prompt = turn.user_message.as_deref().map(clip);
    let answer = turn.agent_message.as_deref().map(clip);
    let turns = i32::from(turn.user_message.is_some());
    let searchable: Vec<&str> = [&turn.user_message, &turn.agent_message]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .filter(|text| !text.is_empty())
        .collect();
    let addition = searchable.join("\n");
    // Longer than the whole limit, it cannot fit whole: no need to send it twice.
    let addition = (addition.len() < baton_store::SEARCH_TEXT_LIMIT).then_some(addition);
    let limit = i32::try_from(baton_store::SEARCH_TEXT_LIMIT).unwrap_or(i32::MAX);
    let row = client
        .query_typed_opt(
            queries::RECORD_TURN,
            &[
                (&uuid, Type::UUID),
                (&cwd.as_ref(), Type::TEXT),
                (&prompt, Type::TEXT),
                (&answer, Type::TEXT),
                (&turn.model, Type::TEXT),
                (&turns, Type::INT4),
                (&turn.source.as_str(), Type::TEXT),
                (&addition, Type::TEXT),
                (&limit, Type::INT4),
            ],
        )
        .await?;
    let done = match row {
        Some(row) => row.try_get::<_, bool>(0)?,
        None => true, // no such thread (yet): nothing to record
    };
    if done {
        return Ok(());
    }
    // Rare: a few turns per thread, when its prompts and answers reach 64 KiB. After three
    // lost races with other processes the text waits for `reindex`: it is only a cache.
    // (Without a transaction, so that it also runs on the lock's shared connection.)
    for _ in 0..3 {
        let Some(row) = client
            .query_typed_opt(queries::SEARCH_TEXT, &[(&uuid, Type::UUID)])
            .await?
        else {
            return Ok(());
        };
        let mut search_text: String = row.try_get(0)?;
        let read_bytes = i32::try_from(search_text.len()).unwrap_or(i32::MAX);
        for text in &searchable {
            push_search_text(&mut search_text, text);
        }
        let updated = client
            .execute_typed(
                queries::SET_SEARCH_TEXT,
                &[
                    (&uuid, Type::UUID),
                    (&search_text, Type::TEXT),
                    (&read_bytes, Type::INT4),
                ],
            )
            .await?;
        if updated > 0 {
            return Ok(());
        }
    }
    tracing::warn!(
        "thread {}: its search text kept changing under this turn's update; `baton sessions \
         reindex` rebuilds it",
        turn.id
    );
    Ok(())
}

/// Tries `key`'s advisory lock on `client` and, when taken, records this process as the
/// holder of thread `uuid`: one round trip.
async fn try_lock(shared: &Shared, client: &Client, key: i64, uuid: Uuid) -> OpResult<bool> {
    let pid = shared.pid as i32;
    let row = client
        .query_typed_one(
            queries::LOCK,
            &[
                (&key, Type::INT8),
                (&uuid, Type::UUID),
                (&shared.host, Type::TEXT),
                (&pid, Type::INT4),
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}

async fn finish_lock(
    shared: &Arc<Shared>,
    client: Client,
    taken: bool,
    uuid: Uuid,
    id: ThreadId,
) -> OpResult<Client> {
    if taken {
        return Ok(client);
    }
    // The holder's row commits with the statement that took the lock, a moment after the
    // lock itself: a loser that raced it looks again for a moment rather than name no one.
    let mut holder = client.query_opt(queries::HOLDER, &[&uuid]).await;
    for _ in 0..HOLDER_LOOKUPS {
        if !matches!(holder, Ok(None)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        holder = client.query_opt(queries::HOLDER, &[&uuid]).await;
    }
    shared.pool.put(client);
    let (host, pid, since) = match holder? {
        Some(row) => {
            let since: DateTime<Utc> = row.try_get(2)?;
            (
                Some(row.try_get::<_, String>(0)?),
                u32::try_from(row.try_get::<_, i32>(1)?).ok(),
                Some(format_timestamp(since)),
            )
        }
        None => (None, None, None),
    };
    Err(OpError::Store(StoreError::Busy {
        id,
        pid,
        host,
        since,
    }))
}

/// Appends to one thread: each line is one committed row.
struct PgWriter {
    shared: Arc<Shared>,
    id: ThreadId,
    path: PathBuf,
    len: u64,
}

impl TranscriptWriter for PgWriter {
    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let lines = items
            .iter()
            .map(|item| rollout_line(item, &self.path))
            .collect::<Result<Vec<String>, StoreError>>()?;
        let uuid = uuid_of(self.id);
        let added: i64 = lines.iter().map(|line| line.len() as i64 + 1).sum();
        let newest = |is: fn(&RolloutItem) -> bool| -> i64 {
            items.iter().rposition(is).map_or(-1, |index| index as i64)
        };
        let compaction = newest(|item| matches!(item, RolloutItem::Compacted(_)));
        let turn_context = newest(|item| matches!(item, RolloutItem::TurnContext(_)));
        let id = self.id;
        // One statement: the rows and the thread's counters commit together or not at all, so
        // a failed append leaves no line and no gap. Not retried: a lost reply may hide a
        // commit, and a retry would then write the lines twice.
        let shared = self.shared.clone();
        let held = self.shared.held_locks().get(&id).cloned();
        let total = self.shared.run("append a line", async move {
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 5] = [
                (&uuid, Type::UUID),
                (&lines, Type::TEXT_ARRAY),
                (&added, Type::INT8),
                (&compaction, Type::INT8),
                (&turn_context, Type::INT8),
            ];
            let result = match held {
                // Under this process's lock: on the connection that holds it, or not at all.
                Some(client) if client.is_closed() => {
                    return Err(OpError::Store(lock_lost(&shared, id)));
                }
                Some(client) => match client.query_typed(queries::APPEND_LINES, &params).await {
                    Err(_) if client.is_closed() => {
                        return Err(OpError::Store(lock_lost(&shared, id)));
                    }
                    result => result,
                },
                None => {
                    let client = shared.pool.get().await?;
                    let result = client.query_typed(queries::APPEND_LINES, &params).await;
                    shared.pool.put(client);
                    result
                }
            };
            match result?.first() {
                Some(row) => Ok(row.try_get::<_, i64>(0)?),
                None => Err(OpError::Store(shared.not_found(id))),
            }
        })?;
        self.len = total as u64;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // Every append is committed before it returns.
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// The error of an append whose thread lock went with its connection: the turn must stop, as
/// another server may hold the thread now.
fn lock_lost(shared: &Shared, id: ThreadId) -> StoreError {
    StoreError::Database {
        doing: "append a line",
        location: shared.location.clone(),
        source: format!(
            "the connection holding thread {id}'s lock was lost (did the database restart?), \
             so this turn stops here; the lines written so far are kept, and the next call \
             continues the session"
        )
        .into(),
    }
}

/// Holds a thread's advisory lock on its own connection (shared with the thread's appends);
/// dropping it unlocks and returns the connection to the pool.
struct PgGuard {
    shared: Arc<Shared>,
    id: ThreadId,
    client: Option<Arc<Client>>,
}

impl std::fmt::Debug for PgGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgGuard({})", self.id)
    }
}

impl ThreadGuard for PgGuard {
    fn release_unused(self: Box<Self>) {}
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        self.shared.held_locks().remove(&self.id);
        let uuid = uuid_of(self.id);
        let key = lock_key(self.id);
        let id = self.id;
        // Waited for, so the next `lock_thread` (in this process or another) finds it free.
        let shared = self.shared.clone();
        let result = self.shared.run("unlock the thread", async move {
            let pid = shared.pid as i32;
            let unlocked = client
                .query_typed(
                    queries::UNLOCK,
                    &[
                        (&uuid, Type::UUID),
                        (&shared.host, Type::TEXT),
                        (&pid, Type::INT4),
                        (&key, Type::INT8),
                    ],
                )
                .await;
            // Reused only when no writer still shares it (a writer outliving its guard).
            if unlocked.is_ok()
                && let Ok(client) = Arc::try_unwrap(client)
            {
                shared.pool.put(client);
            }
            unlocked?;
            Ok(())
        });
        if let Err(error) = result {
            // A dead connection has released the lock with it.
            tracing::debug!("unlocking thread {id}: {error}");
        }
    }
}

/// Whether a `postgres://` URL has two `@` before its query: an unencoded `@` in the user
/// name or password.
fn has_unencoded_at_in_userinfo(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let before_query = rest.split('?').next().unwrap_or(rest);
    before_query.matches('@').count() > 1
}

/// A database error with its causes ("error connecting to server" alone does not say that
/// the connection was refused), and what to do when the database cannot be reached.
fn describe(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    // tokio-postgres does not expose the kind of a connect error, only its text.
    if error.as_db_error().is_none() && (error.is_closed() || text.contains("connecting")) {
        text.push_str(
            " (is PostgreSQL running and reachable there? the next command or call connects again)",
        );
    }
    text
}

/// The advisory lock key of a thread. Both halves of the UUID are folded in: a v7 id's first
/// 8 bytes are mostly its timestamp, so two threads started in the same millisecond would
/// otherwise often share a key.
fn lock_key(id: ThreadId) -> i64 {
    let bytes = id.as_uuid().as_bytes();
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&bytes[..8]);
    low.copy_from_slice(&bytes[8..]);
    i64::from_be_bytes(high) ^ i64::from_be_bytes(low)
}

fn uuid_of(id: ThreadId) -> Uuid {
    *id.as_uuid()
}

/// The `text` column (at `column`) of every row, as JSONL.
fn joined_lines(rows: &[tokio_postgres::Row], column: usize) -> OpResult<Vec<u8>> {
    let mut bytes = Vec::new();
    for row in rows {
        if let Some(text) = row.try_get::<_, Option<&str>>(column)? {
            bytes.extend_from_slice(text.as_bytes());
            bytes.push(b'\n');
        }
    }
    Ok(bytes)
}

fn line_type(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Kind>(line)
        .ok()
        .map(|kind| kind.kind)
}

/// `text` as a literal inside a LIKE pattern.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn clip(text: &str) -> String {
    let mut cut = text.len().min(SUMMARY_TEXT_LIMIT);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_match_the_text_literally() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn threads_started_in_the_same_millisecond_get_different_lock_keys() {
        let a = ThreadId::parse("019c0000-0000-7000-8000-000000000001").expect("id");
        let b = ThreadId::parse("019c0000-0000-7000-8000-000000000002").expect("id");
        assert_ne!(lock_key(a), lock_key(b));
    }
}
