use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use baton_protocol::{RolloutItem, SessionMeta, format_timestamp};
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
    /// The end of the last whole record: the file's length unless a failed write left a
    /// fragment that could not be cut off.
    len: u64,
    /// A failed write left a fragment after `len` that truncation could not remove: the next
    /// record starts with a newline so it is not glued onto that fragment.
    fence_next: bool,
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
            fence_next: false,
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
            fence_next: false,
            line: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `{"timestamp":…,"type":…,"payload":…}\n` in one write.
    ///
    /// If the write fails (disk full, file size limit), whatever part of the line reached
    /// the file is cut off again, so the transcript still ends with a whole record.
    pub fn append(&mut self, item: &RolloutItem) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(item))
    }

    /// Appends one line per item, all in one write, so that a process killed meanwhile
    /// leaves all of them or none (but a torn tail). A failed write is cut off as in `append`.
    pub fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        self.line.clear();
        if self.fence_next {
            self.line.push(b'\n');
        }
        for item in items {
            serialize_line(&mut self.line, item, &self.path)?;
        }
        // `write_all` is one `write` for a regular file in append mode; it only loops on a
        // short write, which happens when the disk or the file size limit is reached.
        if let Err(source) = self.file.write_all(&self.line) {
            self.cut_off_failed_write();
            return Err(StoreError::Io {
                doing: "append to the transcript",
                path: self.path.clone(),
                source,
            });
        }
        if self.fence_next {
            // The fragment before the fence has a length we never knew: ask the file.
            self.len = match self.file.metadata() {
                Ok(metadata) => metadata.len(),
                Err(_) => self.len + self.line.len() as u64,
            };
            self.fence_next = false;
        } else {
            self.len += self.line.len() as u64;
        }
        Ok(())
    }

    /// Removes what a failed write may have left after the last whole record. We hold the
    /// thread's lock, so nobody else wrote after `len`. When even that fails, the next
    /// record is fenced off with a newline instead.
    fn cut_off_failed_write(&mut self) {
        match self.file.set_len(self.len) {
            Ok(()) => self.fence_next = false,
            Err(error) => {
                tracing::warn!(
                    "could not cut a partly written line off {} ({error}); the next line \
                     starts on a fresh line instead",
                    self.path.display()
                );
                self.fence_next = true;
            }
        }
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

impl crate::TranscriptWriter for RolloutWriter {
    fn append_all(&mut self, items: &[RolloutItem]) -> Result<(), StoreError> {
        RolloutWriter::append_all(self, items)
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        RolloutWriter::sync(self)
    }

    fn len(&self) -> u64 {
        RolloutWriter::len(self)
    }

    fn path(&self) -> &Path {
        RolloutWriter::path(self)
    }
}

/// One transcript line for `item`, stamped now, without its newline: what another store
/// (a database row) keeps as the line.
pub fn rollout_line(item: &RolloutItem, path: &Path) -> Result<String, StoreError> {
    let mut out = Vec::new();
    serialize_line(&mut out, item, path)?;
    out.pop();
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Serialises one transcript line (with its trailing newline) onto `out`.
pub(crate) fn serialize_line(
    out: &mut Vec<u8>,
    item: &RolloutItem,
    path: &Path,
) -> Result<(), StoreError> {
    let line = Line {
        timestamp: format_timestamp(Utc::now()),
        item,
    };
    serde_json::to_writer(&mut *out, &line).map_err(|source| StoreError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    out.push(b'\n');
    Ok(())
}

/// Writes a whole transcript (`session_meta` first, then `items`) to a new file at `path`
/// (mode 0600) and fsyncs it. Used to build a copy under a temporary name before it is
/// renamed into place.
pub(crate) fn write_whole_transcript(
    path: &Path,
    meta: &SessionMeta,
    items: &[RolloutItem],
) -> Result<(), StoreError> {
    let file = open_private_append(path, true, "create the transcript")?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let meta_item = RolloutItem::SessionMeta(Box::new(meta.clone()));
    for item in std::iter::once(&meta_item).chain(items) {
        line.clear();
        serialize_line(&mut line, item, path)?;
        out.write_all(&line)
            .map_err(StoreError::io("write the transcript", path))?;
    }
    let file = out.into_inner().map_err(|error| StoreError::Io {
        doing: "write the transcript",
        path: path.to_path_buf(),
        source: error.into_error(),
    })?;
    file.sync_all()
        .map_err(StoreError::io("sync the transcript", path))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use baton_protocol::{EventMsg, RolloutItem};

    use super::RolloutWriter;

    fn agent_line(text: &str) -> RolloutItem {
        RolloutItem::EventMsg(EventMsg::AgentMessage {
            message: text.to_owned(),
        })
    }

    /// The failed-write path where even the truncation failed: the fragment stays, and the
    /// next record must not be glued onto it. (Truncation failing cannot be provoked from a
    /// test, so the state it leaves is set directly.)
    #[test]
    fn after_a_fragment_that_could_not_be_cut_off_the_next_record_starts_on_a_fresh_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rollout.jsonl");
        let mut writer = RolloutWriter::create_new(&path).expect("create");
        writer.append(&agent_line("before")).expect("append");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(br#"{"timestamp":"2026-01-01T00:00:00.000Z","ty"#)
            .expect("write the fragment");
        writer.fence_next = true;

        writer.append(&agent_line("after")).expect("append");
        writer.append(&agent_line("later")).expect("append");

        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].ends_with(r#""ty"#), "{text}");
        for (line, word) in [
            (lines[0], "before"),
            (lines[2], "after"),
            (lines[3], "later"),
        ] {
            let value: serde_json::Value = serde_json::from_str(line).expect("a whole record");
            assert_eq!(value["payload"]["message"], word);
        }
        assert_eq!(writer.len(), text.len() as u64);
        assert!(!writer.fence_next);
    }
}
