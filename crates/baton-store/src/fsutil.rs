//! Small filesystem helpers that apply baton's permissions: folders 0700, files 0600.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::StoreError;

pub(crate) const DIR_MODE: u32 = 0o700;
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode 0700 (existing folders keep their mode).
pub(crate) fn create_private_dir_all(path: &Path, doing: &'static str) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(StoreError::io(doing, path))
}

/// Opens an existing or new file for appending, mode 0600 when created.
pub(crate) fn open_private_append(
    path: &Path,
    create_new: bool,
    doing: &'static str,
) -> Result<File, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).mode(FILE_MODE);
    if create_new {
        options.create_new(true);
    }
    options.open(path).map_err(StoreError::io(doing, path))
}

/// Makes a new directory entry durable: fsync of the folder that holds it.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(StoreError::io("sync the folder", dir))
}

/// The canonical form of `path` when it exists, else `path` itself.
pub(crate) fn canonical_or_same(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// True when `candidate` is an existing regular file whose real location (symlinks resolved)
/// lies inside `root_canonical`.
pub(crate) fn is_file_inside(candidate: &Path, root_canonical: &Path) -> bool {
    match fs::canonicalize(candidate) {
        Ok(real) => real.starts_with(root_canonical) && real.is_file(),
        Err(_) => false,
    }
}

/// A lexical normal form for comparing cwds: no `.` components, no trailing slash.
pub(crate) fn normalize_lexically(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}
