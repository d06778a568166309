//! Finding a Codex CLI transcript by thread id, to continue it. Codex's files are only ever read.

use std::path::{Path, PathBuf};

use baton_protocol::ThreadId;
use rusqlite::{Connection, OpenFlags};

use crate::find::{NameSuffix, all_transcripts, find_by_scan, find_in_day_folders};
use crate::fsutil::{canonical_or_same, is_file_inside};
use crate::index::rollout_path_of;
use crate::parallel::summarize_in_parallel;
use crate::{StoreError, ThreadOrigin, ThreadSummary};

/// Finds the transcript of Codex thread `id` under `codex_home`: through Codex's own index
/// (`state_*.sqlite`, read-only) when it points at a file inside `codex_home`, else by file
/// name in `sessions/` (day folder first) and `archived_sessions/`.
pub fn find_codex_rollout(codex_home: &Path, id: ThreadId) -> Result<Option<PathBuf>, StoreError> {
    if !codex_home.is_dir() {
        return Ok(None);
    }
    let home = canonical_or_same(codex_home);
    let suffix = NameSuffix::new(id);
    let usable = |path: &Path| suffix.matches(path) && is_file_inside(path, &home);

    for database in codex_state_databases(codex_home) {
        match lookup_in_codex_state(&database, id) {
            Ok(Some(path)) if usable(&path) => return Ok(Some(path)),
            Ok(Some(path)) => tracing::debug!(
                "Codex index {} points {id} at {}, which is missing or outside {}; scanning",
                database.display(),
                path.display(),
                codex_home.display()
            ),
            Ok(None) => {}
            Err(error) => tracing::debug!(
                "could not read the Codex index {}: {error}",
                database.display()
            ),
        }
    }

    let sessions = codex_home.join("sessions");
    let archived = codex_home.join("archived_sessions");
    let found = find_in_day_folders(&sessions, id)
        .or_else(|| find_by_scan(&sessions, id))
        .or_else(|| find_by_scan(&archived, id));
    Ok(found.filter(|path| usable(path)))
}

/// Summaries of every Codex session under `codex_home` (`sessions/` and
/// `archived_sessions/`), newest update first. Files that cannot be read are skipped.
pub fn list_codex_sessions(codex_home: &Path) -> Vec<ThreadSummary> {
    let mut files = all_transcripts(&codex_home.join("sessions"));
    files.extend(all_transcripts(&codex_home.join("archived_sessions")));
    let mut summaries: Vec<ThreadSummary> = summarize_in_parallel(&files)
        .into_iter()
        .filter_map(Result::ok)
        .map(|mut summary| {
            summary.source = ThreadOrigin::Codex;
            summary
        })
        .collect();
    summaries.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
    summaries
}

/// `state_<n>.sqlite` files, newest schema number first.
fn codex_state_databases(codex_home: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(codex_home) else {
        return Vec::new();
    };
    let mut databases: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name
                .to_str()?
                .strip_prefix("state_")?
                .strip_suffix(".sqlite")?
                .parse()
                .ok()?;
            Some((number, entry.path()))
        })
        .collect();
    databases.sort_by(|a, b| b.cmp(a));
    databases.into_iter().map(|(_, path)| path).collect()
}

fn lookup_in_codex_state(database: &Path, id: ThreadId) -> rusqlite::Result<Option<PathBuf>> {
    rollout_path_of(&open_codex_state(database)?, id)
}

/// Opens Codex's index read-only without leaving anything behind in Codex's home.
///
/// Codex keeps `state_*.sqlite` in WAL mode, and SQLite opens the `-wal` and `-shm` files of
/// a WAL database even for a read-only connection, creating them when they are missing and
/// leaving them after a read-only close. When there is no `-wal` file, no Codex process has
/// the database open (Codex removes it on a clean close), so it is read as `immutable`: no
/// locks, no side files. While Codex runs (the `-wal` file exists), baton joins its WAL as an
/// ordinary reader, since that is the only way to see what Codex has committed.
fn open_codex_state(database: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        return Connection::open_with_flags(database, flags);
    }
    let uri = format!("file:{}?immutable=1", uri_path(database));
    Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
}

/// `path` percent-encoded for a `file:` URI: everything but unreserved characters and `/`.
fn uri_path(path: &Path) -> String {
    use std::fmt::Write;
    use std::os::unix::ffi::OsStrExt;
    let mut encoded = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}
