//! One writer per thread across processes: an exclusive `flock` on `locks/<id>.lock`.
//!
//! `flock` locks belong to an open file description, so the OS drops the lock when the
//! holder exits (even by `kill -9`), and two opens in the same process exclude each other.
//! The holder writes its pid and start time into the file because the lock itself does not
//! say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_protocol::{ThreadId, format_timestamp};
use chrono::Utc;

use crate::StoreError;
use crate::fsutil::FILE_MODE;

/// Holds a thread for one writer; released when dropped.
#[derive(Debug)]
pub struct ThreadLock {
    id: ThreadId,
    path: PathBuf,
    // Kept open while the lock is held.
    file: File,
}

impl Drop for ThreadLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than only closing: a child forked meanwhile (to run a
        // command) holds a copy of this descriptor until it execs, and closing ours alone
        // would leave the lock held through that copy, so the next turn would see "busy".
        // SAFETY: `flock` only reads the descriptor number, which `self.file` keeps open.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl ThreadLock {
    /// Releases the lock and deletes its file: for an id that turned out to name no thread,
    /// so a typo leaves nothing behind. (Never for a real thread: a process that opened the
    /// old file could then lock it while another locks a new one.)
    pub fn release_unused(self) {
        let _ = std::fs::remove_file(&self.path);
    }

    pub fn id(&self) -> ThreadId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::ThreadGuard for ThreadLock {
    fn release_unused(self: Box<Self>) {
        ThreadLock::release_unused(*self);
    }
}

pub(crate) fn try_lock(locks_dir: &Path, id: ThreadId) -> Result<ThreadLock, StoreError> {
    let path = locks_dir.join(format!("{id}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(StoreError::io("open the thread lock", &path))?;
    match flock_exclusive_nonblocking(&file) {
        Ok(true) => {}
        Ok(false) => return Err(busy(&mut file, id)),
        Err(error) => return Err(StoreError::io("lock", &path)(error)),
    }
    let holder = format!("{} {}\n", std::process::id(), format_timestamp(Utc::now()));
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(holder.as_bytes()))
        .map_err(StoreError::io(
            "write the holder into the thread lock",
            &path,
        ))?;
    Ok(ThreadLock { id, path, file })
}

/// `Ok(false)` when another open file description holds the lock.
fn flock_exclusive_nonblocking(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: `flock` only reads the descriptor number, which `file` keeps open.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(error),
        }
    }
}

/// Reads who holds the lock. The holder writes right after locking, so an empty file only
/// means we looked in between; a few short retries cover that.
fn busy(file: &mut File, id: ThreadId) -> StoreError {
    let mut holder = (None, None);
    for _ in 0..20 {
        holder = read_holder(file);
        if holder.0.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    StoreError::Busy {
        id,
        pid: holder.0,
        host: None,
        since: holder.1,
    }
}

fn read_holder(file: &mut File) -> (Option<u32>, Option<String>) {
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.take(256).read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let mut fields = text.split_whitespace();
    let pid = fields.next().and_then(|pid| pid.parse().ok());
    let since = fields.next().map(str::to_owned);
    (pid, since)
}
