use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use baton_protocol::{RolloutItem, format_timestamp};
use chrono::Utc;
use serde::Serialize;

use crate::StoreError;
use crate::fsutil::open_private_append;

/// Appends lines to one rollout transcript.
///
/// Each line is written with a single `write` on a file opened with `O_APPEND`, so a crash
/// leaves at most one torn line at the end, never two records on one line.
#[derive(Debug)]
pub struct RolloutWriter {
    path: PathBuf,
    file: File,
    len: u64,
    /// Reused between appends so a long turn does not allocate a buffer per line.
    line: Vec<u8>,
}

/// The on-disk shape of a line: exactly `timestamp`, `type`, `payload`, in that order.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    #[serde(flatten)]
    item: &'a RolloutItem,
}

impl RolloutWriter {
    /// Creates a new transcript file (mode 0600); fails if it already exists.
    pub(crate) fn create_new(path: &Path) -> Result<RolloutWriter, StoreError> {
        let file = open_private_append(path, true, "create the transcript")?;
        Ok(RolloutWriter {
            path: path.to_path_buf(),
            file,
            len: 0,
            line: Vec::new(),
        })
    }

    /// Opens an existing rollout for appending. If its last line is torn (no trailing
    /// newline, a crash mid-write), a newline is written first so the next record starts on a
    /// fresh line.
    pub fn open_append(path: &Path) -> Result<RolloutWriter, StoreError> {
        let mut file = open_private_append(path, false, "open the transcript for appending")?;
        let mut len = file
            .metadata()
            .map_err(StoreError::io("read the size of", path))?
            .len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)
                .map_err(StoreError::io("read the end of", path))?;
            if last[0] != b'\n' {
                file.write_all(b"\n")
                    .map_err(StoreError::io("repair the torn last line of", path))?;
                len += 1;
            }
        }
        Ok(RolloutWriter {
            path: path.to_path_buf(),
            file,
            len,
            line: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"timestamp":…,"type":…,"payload":…}\n` in one write.
    pub fn append(&mut self, item: &RolloutItem) -> Result<(), StoreError> {
        self.line.clear();
        let line = Line {
            timestamp: format_timestamp(Utc::now()),
            item,
        };
        serde_json::to_writer(&mut self.line, &line).map_err(|source| StoreError::Serialize {
            path: self.path.clone(),
            source,
        })?;
        self.line.push(b'\n');
        // `write_all` is one `write` for a regular file in append mode; it only loops on a
        // short write, which a local filesystem reports as an error (disk full) instead.
        self.file
            .write_all(&self.line)
            .map_err(StoreError::io("append to the transcript", &self.path))?;
        self.len += self.line.len() as u64;
        Ok(())
    }

    /// Flushes the file to disk (fsync).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(StoreError::io("sync the transcript", &self.path))
    }

    /// Bytes in the file after our last write.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
