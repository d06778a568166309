//! Finding a transcript by file name alone: never opens a file, never follows a symlink out
//! of the tree it searches.

use std::fs;
use std::path::{Path, PathBuf};

use baton_protocol::ThreadId;
use chrono::{Datelike, Local, NaiveDate};

/// Files sit at `YYYY/MM/DD/<file>` under a sessions folder; Codex's `archived_sessions`
/// keeps them flat. Nothing deeper is looked at.
const MAX_DEPTH: usize = 4;

/// The file-name suffix every transcript of `id` has: `…-<id>.jsonl`.
pub(crate) struct NameSuffix(String);

impl NameSuffix {
    pub fn new(id: ThreadId) -> Self {
        Self(format!("-{id}.jsonl"))
    }

    pub fn matches(&self, path: &Path) -> bool {
        transcript_file_name(path).is_some_and(|name| name.to_ascii_lowercase().ends_with(&self.0))
    }
}

/// The file name of `path` if it can be a transcript: `*.jsonl` and not hidden. Hidden
/// names are how the store marks files that are not transcripts yet (a copy being written
/// under a temporary name).
fn transcript_file_name(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let is_candidate = !name.starts_with('.')
        && name.len() > ".jsonl".len()
        && name
            .get(name.len() - ".jsonl".len()..)
            .is_some_and(|extension| extension.eq_ignore_ascii_case(".jsonl"));
    is_candidate.then_some(name)
}

/// The thread id a transcript's file name ends with (`…-<uuid>.jsonl`).
pub(crate) fn thread_id_of_file(path: &Path) -> Option<ThreadId> {
    const UUID_LEN: usize = 36;
    let name = transcript_file_name(path)?;
    let stem = &name[..name.len() - ".jsonl".len()];
    let start = stem.len().checked_sub(UUID_LEN)?;
    if start > 0 && stem.as_bytes()[start - 1] != b'-' {
        return None;
    }
    ThreadId::parse(stem.get(start..)?).ok()
}

/// The folder of one local day under a sessions root.
pub(crate) fn day_folder(root: &Path, day: NaiveDate) -> PathBuf {
    root.join(format!("{:04}", day.year()))
        .join(format!("{:02}", day.month()))
        .join(format!("{:02}", day.day()))
}

/// Looks in the day folder that the UUID v7 timestamp names, in local time, and in the days
/// either side of it (the local offset may have differed when the file was written).
pub(crate) fn find_in_day_folders(root: &Path, id: ThreadId) -> Option<PathBuf> {
    let day = id.created_at()?.with_timezone(&Local).date_naive();
    let suffix = NameSuffix::new(id);
    [Some(day), day.pred_opt(), day.succ_opt()]
        .into_iter()
        .flatten()
        .find_map(|day| find_in_folder(&day_folder(root, day), &suffix))
}

fn find_in_folder(folder: &Path, suffix: &NameSuffix) -> Option<PathBuf> {
    let entries = fs::read_dir(folder).ok()?;
    entries.flatten().find_map(|entry| {
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
        (is_file && suffix.matches(&path)).then_some(path)
    })
}

/// Walks the whole tree under `root` by file name.
pub(crate) fn find_by_scan(root: &Path, id: ThreadId) -> Option<PathBuf> {
    let suffix = NameSuffix::new(id);
    let mut found = None;
    walk_files(root, &mut |path| {
        if suffix.matches(path) {
            found = Some(path.to_path_buf());
            false
        } else {
            true
        }
    });
    found
}

/// Every `*.jsonl` file under `root` (to the usual depth) except hidden ones, for a reindex.
pub(crate) fn all_transcripts(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk_files(root, &mut |path| {
        if transcript_file_name(path).is_some() {
            files.push(path.to_path_buf());
        }
        true
    });
    files
}

/// Calls `visit` with every regular file under `root` until it returns false. Symlinks are
/// neither followed nor reported; unreadable folders are skipped.
fn walk_files(root: &Path, visit: &mut dyn FnMut(&Path) -> bool) {
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_file() {
                if !visit(&entry.path()) {
                    return;
                }
            } else if kind.is_dir() && depth + 1 < MAX_DEPTH {
                pending.push((entry.path(), depth + 1));
            }
        }
    }
}
