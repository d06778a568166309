//! `baton sessions migrate --to STORE`: copies every session of the current store into another
//! one (files to PostgreSQL or back), byte for byte.
//!
//! Idempotent and resumable without any bookkeeping of its own: each session is copied with
//! `Store::import_thread`, which is all or nothing in both stores (one transaction on
//! PostgreSQL, a temp file renamed into place on files), so after an interruption the
//! destination holds whole sessions only, and a second run skips every session the destination
//! already holds identically.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_protocol::ThreadId;
use baton_store::{FileStore, Store, StoreError};

use crate::UsageError;

/// Set to `1`, and with stderr not a terminal, one line per session (`copied 3/1000 <id>`) in
/// place of the progress bar: for tests that interrupt a migration half-way. Not documented.
const PROGRESS_LINES_VAR: &str = "BATON_MIGRATE_PROGRESS_LINES";

/// The destination `--to` names: `files` (this BATON_HOME), `files:PATH` (the BATON_HOME at
/// PATH) or a PostgreSQL URL.
pub(crate) fn open_destination(to: &str, home: &Path) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let files_home = if to == "files" {
        Some(home.to_path_buf())
    } else {
        to.strip_prefix("files:").map(PathBuf::from)
    };
    if let Some(path) = files_home {
        if path.as_os_str().is_empty() {
            return Err(UsageError(
                "--to files:PATH needs a path (the BATON_HOME to copy into)".into(),
            )
            .into());
        }
        let shown = format!("files:{}", path.display());
        return Ok((Arc::new(FileStore::open(&path)?), shown));
    }
    if baton_store::is_database_url(to) {
        let store = baton_store_pg::PgStore::open(to)?;
        let shown = store.location().to_owned();
        return Ok((Arc::new(store), shown));
    }
    Err(UsageError(format!(
        "--to {}: expected `files` (this BATON_HOME), `files:PATH` (another BATON_HOME) or a \
         PostgreSQL URL (postgres://user@host:port/db)",
        baton_store_pg::redact_url(to)
    ))
    .into())
}

/// What happened to one session.
enum Outcome {
    Copied,
    /// The destination holds it already, line for line.
    AlreadyThere,
    Failed(String),
}

/// What a whole run did.
#[derive(Default)]
pub(crate) struct Report {
    pub copied: usize,
    pub already_there: usize,
    pub failed: Vec<(ThreadId, String)>,
}

impl Report {
    fn total(&self) -> usize {
        self.copied + self.already_there + self.failed.len()
    }
}

/// Copies every session of `source` into `destination`, showing progress on stderr.
pub(crate) fn migrate(
    source: &dyn Store,
    destination: &dyn Store,
    shown: &str,
) -> anyhow::Result<Report> {
    if same_place(
        &source.searched_location(),
        &destination.searched_location(),
    ) {
        return Err(UsageError(format!(
            "--to {shown} is the store baton is using now; name another one"
        ))
        .into());
    }
    let mut ids: Vec<ThreadId> = source.try_thread_ids()?.into_iter().collect();
    // UUID v7 ids sort by creation time: oldest first, the order a person expects to watch.
    ids.sort();
    let present = destination.try_thread_ids()?;
    let progress = Mutex::new((Progress::new(ids.len()), Report::default()));
    let next = AtomicUsize::new(0);
    // A few sessions at a time: each copy mostly waits (fsync, a database round trip).
    std::thread::scope(|scope| {
        for _ in 0..WORKERS.min(ids.len()) {
            scope.spawn(|| {
                while let Some(&id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = copy_one(source, destination, &present, id);
                    let mut state = progress
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let (progress, report) = &mut *state;
                    progress.record(id, &outcome);
                    match outcome {
                        Outcome::Copied => report.copied += 1,
                        Outcome::AlreadyThere => report.already_there += 1,
                        Outcome::Failed(reason) => report.failed.push((id, reason)),
                    }
                }
            });
        }
    });
    let (progress, mut report) = progress
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    progress.finish();
    report.failed.sort_by_key(|(id, _)| *id);
    Ok(report)
}

/// Sessions copied at the same time.
const WORKERS: usize = 4;

/// Copies one session, holding its writer lock in the source so that no turn adds lines while
/// it is read (a session in a turn is reported busy, to be copied by the next run).
fn copy_one(
    source: &dyn Store,
    destination: &dyn Store,
    present: &HashSet<ThreadId>,
    id: ThreadId,
) -> Outcome {
    let result = (|| -> Result<Outcome, StoreError> {
        let guard = source.lock_thread(id)?;
        let transcript = source.export_thread(id)?;
        drop(guard);
        if present.contains(&id) {
            return compare(destination, id, &transcript);
        }
        match destination.import_thread(&transcript) {
            Ok(_) => Ok(Outcome::Copied),
            // Imported since the listing was taken (another migrate running at the same time).
            Err(error)
                if destination
                    .try_thread_ids()
                    .is_ok_and(|ids| ids.contains(&id)) =>
            {
                tracing::debug!("import of {id} refused: {error}");
                compare(destination, id, &transcript)
            }
            Err(error) => Err(error),
        }
    })();
    result.unwrap_or_else(|error| Outcome::Failed(error.to_string()))
}

/// A session the destination has already: skipped when it is the same, line for line.
fn compare(destination: &dyn Store, id: ThreadId, transcript: &str) -> Result<Outcome, StoreError> {
    let there = destination.export_thread(id)?;
    if there == transcript {
        return Ok(Outcome::AlreadyThere);
    }
    Ok(Outcome::Failed(format!(
        "the destination has a different copy of it ({} lines there, {} here: it was continued \
         in one of the stores since it was copied); left unchanged",
        there.lines().count(),
        transcript.lines().count()
    )))
}

fn same_place(a: &Path, b: &Path) -> bool {
    let canonical =
        |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    canonical(a) == canonical(b)
}

/// Progress on stderr: one updating line on a terminal; otherwise nothing until the summary
/// (or one line per session with [`PROGRESS_LINES_VAR`]). Failures are always printed.
struct Progress {
    total: usize,
    done: usize,
    copied: usize,
    already_there: usize,
    failed: usize,
    terminal: bool,
    per_session: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A terminal is redrawn at most this often, so a fast copy is not slowed by its bar.
    const REDRAW: Duration = Duration::from_millis(100);

    fn new(total: usize) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Self {
            total,
            done: 0,
            copied: 0,
            already_there: 0,
            failed: 0,
            terminal,
            per_session: !terminal
                && std::env::var(PROGRESS_LINES_VAR).is_ok_and(|value| value == "1"),
            drawn: None,
        }
    }

    fn record(&mut self, id: ThreadId, outcome: &Outcome) {
        self.done += 1;
        let mut stderr = std::io::stderr().lock();
        let word = match outcome {
            Outcome::Copied => {
                self.copied += 1;
                "copied"
            }
            Outcome::AlreadyThere => {
                self.already_there += 1;
                "already there"
            }
            Outcome::Failed(reason) => {
                self.failed += 1;
                if self.terminal {
                    // Clear the bar so the failure stands on a line of its own.
                    let _ = write!(stderr, "\r\x1b[2K");
                }
                let _ = writeln!(stderr, "failed {id}: {reason}");
                self.drawn = None;
                "failed"
            }
        };
        if self.per_session {
            let _ = writeln!(stderr, "{word} {}/{} {id}", self.done, self.total);
        } else if self.terminal
            && (self.done == self.total || self.drawn.is_none_or(|at| at.elapsed() >= Self::REDRAW))
        {
            let _ = write!(stderr, "\r\x1b[2K{}", self.bar());
            self.drawn = Some(Instant::now());
        }
        let _ = stderr.flush();
    }

    fn bar(&self) -> String {
        const WIDTH: usize = 30;
        let filled = (self.done * WIDTH).checked_div(self.total).unwrap_or(WIDTH);
        format!(
            "migrating [{}{}] {}/{}: {} copied, {} already there, {} failed",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            self.done,
            self.total,
            self.copied,
            self.already_there,
            self.failed
        )
    }

    fn finish(&self) {
        if self.terminal && self.drawn.is_some() {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr);
            let _ = stderr.flush();
        }
    }
}

/// The summary line on stdout; an error (exit status 1) when some session could not be copied.
pub(crate) fn summarize(report: &Report, shown: &str) -> anyhow::Result<()> {
    crate::out(&format!(
        "migrated {} sessions to {shown}: {} copied, {} already there, {} failed",
        report.total(),
        report.copied,
        report.already_there,
        report.failed.len()
    ))?;
    if report.failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} sessions could not be migrated (each is named above with the reason); fix that \
             and run migrate again: sessions already copied are skipped",
            report.failed.len()
        )
    }
}
