//! File operations relative to directory descriptors, so that the path checked against the
//! writable roots is the path written even while a sandboxed command keeps changing the tree.
//!
//! A path string is resolved again by the kernel at every call: check `d/x`, then write it, and
//! `d` may have become a symbolic link to somewhere else in between (a command left running in
//! the background can swap it in a loop). So every directory is opened once, from its parent's
//! descriptor, refusing symbolic links (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`,
//! or `openat` with `O_NOFOLLOW` one component at a time on kernels without it), and the file
//! operations (`openat`, `renameat`, `unlinkat`) then name only one entry of that directory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Whether symbolic links are followed on the way to a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Links {
    /// A symbolic link anywhere on the way is an error (writes confined to writable roots).
    Refuse,
    /// Links are followed (`danger-full-access`: there is no root to stay inside).
    Follow,
}

/// How a directory is opened below another without following symbolic links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6 and newer).
    Openat2,
    /// `openat(O_NOFOLLOW | O_DIRECTORY)`, one component at a time.
    Walk,
}

impl Resolver {
    /// `Openat2` where the kernel (and any seccomp filter around baton) allows it.
    pub(super) fn detect() -> Self {
        static DETECTED: AtomicU8 = AtomicU8::new(0);
        match DETECTED.load(Ordering::Relaxed) {
            1 => Self::Openat2,
            2 => Self::Walk,
            _ => {
                let root = c"/";
                let detected = match openat2(libc::AT_FDCWD, root, libc::O_PATH, 0) {
                    Err(error) if is_unsupported(&error) => Self::Walk,
                    _ => Self::Openat2,
                };
                let code = if detected == Self::Openat2 { 1 } else { 2 };
                DETECTED.store(code, Ordering::Relaxed);
                detected
            }
        }
    }
}

/// Opens the directory `path` (absolute, without `.` or `..`). With `create`, missing
/// directories are made (mode 0777 less the umask, as `mkdir -p` does).
pub(super) fn open_absolute_dir(
    path: &Path,
    create: bool,
    links: Links,
    resolver: Resolver,
) -> io::Result<OwnedFd> {
    let rel = path
        .strip_prefix("/")
        .map_err(|_| io::Error::other(format!("{} is not an absolute path", path.display())))?;
    let root = open_raw(libc::AT_FDCWD, c"/", libc::O_DIRECTORY)?;
    open_dir_below(root.as_fd(), rel, create, links, resolver)
}

/// Opens the directory `rel` below `start`, which it may not leave. `rel` holds plain names
/// only. A symbolic link on the way (with `Links::Refuse`) or a file where a directory should
/// be is an error that names the component.
pub(super) fn open_dir_below(
    start: BorrowedFd<'_>,
    rel: &Path,
    create: bool,
    links: Links,
    resolver: Resolver,
) -> io::Result<OwnedFd> {
    if links == Links::Refuse && resolver == Resolver::Openat2 && !rel.as_os_str().is_empty() {
        // The whole path in one call; only a missing directory needs the walk below.
        match openat2(
            start.as_raw_fd(),
            &c_path(rel.as_os_str())?,
            DIR_FLAGS,
            BENEATH,
        ) {
            Ok(fd) => return Ok(fd),
            Err(error) if create && error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(explain_walk_error(error, rel)),
        }
    }
    let mut current = start.try_clone_to_owned()?;
    for component in rel.components() {
        let Component::Normal(name) = component else {
            return Err(io::Error::other(format!(
                "{} is not a plain relative path",
                rel.display()
            )));
        };
        let name = c_path(name)?;
        let opened = match open_component(current.as_fd(), &name, links, resolver) {
            Err(error) if create && error.kind() == io::ErrorKind::NotFound => {
                // SAFETY: `name` is a NUL-terminated string; the descriptor is open.
                let made = unsafe { libc::mkdirat(current.as_raw_fd(), name.as_ptr(), 0o777) };
                if made != 0 {
                    let error = io::Error::last_os_error();
                    // Someone else made it first: open what is there (checked like any other).
                    if error.kind() != io::ErrorKind::AlreadyExists {
                        return Err(error);
                    }
                }
                open_component(current.as_fd(), &name, links, resolver)
            }
            other => other,
        };
        current = opened.map_err(|error| explain_walk_error(error, rel))?;
    }
    Ok(current)
}

/// The contents of the file `name` in `dir`; a symbolic link there is an error.
pub(super) fn read_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let fd = open_raw(
        dir.as_raw_fd(),
        &c_path(name)?,
        libc::O_RDONLY | libc::O_NOFOLLOW,
    )
    .map_err(explain_symlink(name))?;
    let mut bytes = Vec::new();
    File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether `dir` has an entry `name` (of any kind, a symbolic link included).
pub(super) fn entry_exists(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match lstat_at(dir, name) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Replaces (or creates) the file `name` in `dir` with `contents`, atomically: a temporary
/// file in the same directory, then `renameat`. A new file gets mode 0666 less the umask, a
/// replaced one keeps its mode. The temporary file is removed on every error.
pub(super) fn write_file(dir: BorrowedFd<'_>, name: &OsStr, contents: &[u8]) -> io::Result<()> {
    let existing_mode = match lstat_at(dir, name) {
        Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFLNK => {
            // Links were resolved when the patch was checked; one here appeared since.
            return Err(symlink_error(name));
        }
        Ok(stat) => Some(stat.st_mode & 0o7777),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let mut temp = TempFile::create(dir)?;
    temp.file.write_all(contents)?;
    if let Some(mode) = existing_mode {
        // SAFETY: plain syscall on an open descriptor.
        if unsafe { libc::fchmod(temp.file.as_raw_fd(), mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    temp.file.sync_all()?;
    temp.rename_to(name)
}

/// Removes the entry `name` (a symbolic link itself, never its target) from `dir`; a missing
/// entry is not an error.
pub(super) fn remove_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let name = c_path(name)?;
    // SAFETY: `name` is NUL-terminated; the descriptor is open.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        error if error.kind() == io::ErrorKind::NotFound => Ok(()),
        error => Err(error),
    }
}

/// A temporary file inside the target directory, unlinked when dropped unless renamed.
struct TempFile<'dir> {
    dir: BorrowedFd<'dir>,
    name: CString,
    file: File,
    renamed: bool,
}

impl<'dir> TempFile<'dir> {
    fn create(dir: BorrowedFd<'dir>) -> io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let mut attempts = 0;
        loop {
            // Unpredictable enough for O_EXCL: pid, a counter and the clock's nanoseconds.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or_default();
            let count = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = CString::new(format!(".baton-patch-{pid}-{count}-{nanos:08x}"))
                .map_err(io::Error::other)?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
            match open_raw_mode(dir.as_raw_fd(), &name, flags, 0o666) {
                Ok(fd) => {
                    return Ok(Self {
                        dir,
                        name,
                        file: File::from(fd),
                        renamed: false,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn rename_to(mut self, name: &OsStr) -> io::Result<()> {
        let target = c_path(name)?;
        let raw = self.dir.as_raw_fd();
        // SAFETY: both names are NUL-terminated; the descriptor is open.
        if unsafe { libc::renameat(raw, self.name.as_ptr(), raw, target.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            // SAFETY: the name is NUL-terminated; the descriptor is open.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) };
        }
    }
}

const DIR_FLAGS: libc::c_int = libc::O_DIRECTORY | libc::O_RDONLY;
const BENEATH: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;

fn open_component(
    dir: BorrowedFd<'_>,
    name: &CString,
    links: Links,
    resolver: Resolver,
) -> io::Result<OwnedFd> {
    match (links, resolver) {
        (Links::Refuse, Resolver::Openat2) => openat2(dir.as_raw_fd(), name, DIR_FLAGS, BENEATH),
        (Links::Refuse, Resolver::Walk) => {
            open_raw(dir.as_raw_fd(), name, DIR_FLAGS | libc::O_NOFOLLOW)
        }
        (Links::Follow, _) => open_raw(dir.as_raw_fd(), name, DIR_FLAGS),
    }
}

/// `struct open_how` of `linux/openat2.h` (libc's is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(
    dir: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is NUL-terminated and `how` is a valid `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn open_raw(dir: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    open_raw_mode(dir, path, flags, 0)
}

fn open_raw_mode(
    dir: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    mode: libc::c_uint,
) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; `mode` is only read with O_CREAT.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let name = c_path(name)?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `stat` points to writable memory of the right type.
    let result = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded, so it filled the struct.
    Ok(unsafe { stat.assume_init() })
}

fn c_path(path: &OsStr) -> io::Result<CString> {
    CString::new(path.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))
}

/// `openat2` missing from the kernel, or refused by a seccomp filter (some container runtimes
/// answer EPERM for syscalls they do not know).
fn is_unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

/// ELOOP (a link refused), EXDEV (`RESOLVE_BENEATH` escaped) and ENOTDIR (a file, or on the
/// `O_NOFOLLOW` walk a link, where a directory should be) in words that say what to check.
fn explain_walk_error(error: io::Error, rel: &Path) -> io::Error {
    match error.raw_os_error() {
        Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR) => io::Error::other(format!(
            "a component of {} is a symbolic link or not a directory (did the tree change \
             while the patch was applied?)",
            rel.display()
        )),
        _ => error,
    }
}

fn explain_symlink(name: &OsStr) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |error| match error.raw_os_error() {
        Some(libc::ELOOP) => symlink_error(name),
        _ => error,
    }
}

fn symlink_error(name: &OsStr) -> io::Error {
    io::Error::other(format!(
        "{} is now a symbolic link (did the tree change while the patch was applied?)",
        Path::new(name).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_by_both_resolvers() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("symlink");
        for resolver in RESOLVERS {
            if resolver == Resolver::Openat2 && Resolver::detect() == Resolver::Walk {
                continue;
            }
            let base =
                open_absolute_dir(root.path(), false, Links::Refuse, resolver).expect("root");
            for (rel, create) in [("link", false), ("link/a/b", true), ("link/a/b", false)] {
                let error = open_dir_below(
                    base.as_fd(),
                    Path::new(rel),
                    create,
                    Links::Refuse,
                    resolver,
                )
                .expect_err("must refuse");
                assert!(
                    error.to_string().contains("symbolic link"),
                    "{resolver:?} {rel}: {error}"
                );
            }
            // The root's own path may not hold a link either.
            let error =
                open_absolute_dir(&root.path().join("link"), false, Links::Refuse, resolver)
                    .expect_err("must refuse");
            assert!(
                error.to_string().contains("symbolic link"),
                "{resolver:?}: {error}"
            );
        }
        assert!(names(outside.path()).is_empty());
        // danger-full-access follows links.
        let base =
            open_absolute_dir(root.path(), false, Links::Follow, Resolver::Walk).expect("root");
        open_dir_below(
            base.as_fd(),
            Path::new("link/a"),
            true,
            Links::Follow,
            Resolver::Walk,
        )
        .expect("follows");
        assert_eq!(names(outside.path()), ["a"]);
    }

    #[test]
    fn missing_directories_are_created_by_both_resolvers() {
        let root = tempfile::tempdir().expect("tempdir");
        for resolver in RESOLVERS {
            let rel = format!("{resolver:?}/x/y");
            let base =
                open_absolute_dir(root.path(), false, Links::Refuse, resolver).expect("root");
            let dir = open_dir_below(base.as_fd(), Path::new(&rel), true, Links::Refuse, resolver)
                .expect("creates");
            write_file(dir.as_fd(), OsStr::new("f"), b"hi").expect("write");
            assert_eq!(
                std::fs::read(root.path().join(&rel).join("f")).expect("read"),
                b"hi"
            );
        }
    }

    #[test]
    fn the_temporary_file_is_removed_when_the_rename_fails() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("taken")).expect("mkdir");
        let dir =
            open_absolute_dir(root.path(), false, Links::Refuse, Resolver::Walk).expect("root");
        write_file(dir.as_fd(), OsStr::new("taken"), b"x").expect_err("a directory is in the way");
        assert_eq!(names(root.path()), ["taken"]);
    }

    /// The fallback walk under the same race as `tests/apply_patch.rs` (which runs `openat2`
    /// on kernels that have it): `d` swapped between a directory and a link to `outside`.
    #[test]
    fn the_walk_never_follows_a_swapped_in_symlink() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        let workspace = tempfile::tempdir().expect("tempdir");
        let project = workspace.path().join("project");
        let outside = workspace.path().join("outside");
        std::fs::create_dir_all(project.join("d")).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, project.join("swap")).expect("symlink");
        let d = c_path(project.join("d").as_os_str()).expect("path");
        let swap = c_path(project.join("swap").as_os_str()).expect("path");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) && swaps < 20_000_000 {
                    // SAFETY: NUL-terminated paths.
                    let exchanged = unsafe {
                        libc::renameat2(
                            libc::AT_FDCWD,
                            d.as_ptr(),
                            libc::AT_FDCWD,
                            swap.as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                    assert_eq!(exchanged, 0, "{}", io::Error::last_os_error());
                    swaps += 1;
                }
            }
        });
        let mut written = 0;
        for n in 0..500 {
            let Ok(base) = open_absolute_dir(&project, false, Links::Refuse, Resolver::Walk) else {
                continue;
            };
            let opened = open_dir_below(
                base.as_fd(),
                Path::new("d/sub"),
                true,
                Links::Refuse,
                Resolver::Walk,
            );
            if let Ok(dir) = opened {
                write_file(dir.as_fd(), OsStr::new(&format!("f{n}")), b"x").expect("write");
                written += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("swapper");
        assert!(
            names(&outside).is_empty(),
            "{:?} ({written} written)",
            names(&outside)
        );
    }
}
