//! `apply_patch`: Codex's patch format applied to files, all or nothing as far as checks go.
//!
//! The whole patch is parsed, every path checked against the writable roots and every new file
//! content computed before the first byte is written; then each file is written atomically
//! (temporary file in the same directory, then rename), through directory descriptors that
//! never follow a symbolic link inside the writable roots (see `fs.rs`).

mod fs;
mod parser;
mod seek;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Component, Path, PathBuf};

use fs::{Links, Resolver};
use parser::{Chunk, FileOp, parse_patch};
use seek::seek_sequence;

/// What a patch changed. Paths are as written in the patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchReport {
    pub added: Vec<PathBuf>,
    pub modified: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    /// `(from, to)` of updates with `*** Move to:`.
    pub moved: Vec<(PathBuf, PathBuf)>,
}

impl PatchReport {
    /// The text the model receives, one `A`/`M`/`D` line per file as Codex prints it.
    pub fn summary(&self) -> String {
        let mut text = String::from("Success. Updated the following files:\n");
        for path in &self.added {
            text.push_str(&format!("A {}\n", path.display()));
        }
        for path in &self.modified {
            text.push_str(&format!("M {}\n", path.display()));
        }
        for (from, to) in &self.moved {
            text.push_str(&format!(
                "M {} (moved from {})\n",
                to.display(),
                from.display()
            ));
        }
        for path in &self.deleted {
            text.push_str(&format!("D {}\n", path.display()));
        }
        text
    }

    /// Every path the patch touched (both ends of a move), for events and transcripts.
    pub fn files(&self) -> Vec<String> {
        let moved = self.moved.iter().flat_map(|(from, to)| [from, to]);
        self.added
            .iter()
            .chain(&self.modified)
            .chain(moved)
            .chain(&self.deleted)
            .map(|path| path.display().to_string())
            .collect()
    }
}

/// Why a patch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid patch at line {line}: {message}")]
    Malformed { line: usize, message: String },
    #[error(
        "could not find the lines that patch line {patch_line} expects in {}; expected:\n{}",
        path.display(),
        expected.join("\n")
    )]
    ContextMismatch {
        path: PathBuf,
        patch_line: usize,
        expected: Vec<String>,
    },
    #[error(
        "could not find the context line `{context}` (patch line {patch_line}) in {}",
        path.display()
    )]
    ContextLineNotFound {
        path: PathBuf,
        patch_line: usize,
        context: String,
    },
    #[error("cannot {action} {}: the file does not exist", path.display())]
    FileMissing { action: &'static str, path: PathBuf },
    #[error(
        "{} is outside the writable roots ({}); nothing was changed",
        path.display(),
        roots.iter().map(|root| root.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    OutsideWritableRoots { path: PathBuf, roots: Vec<PathBuf> },
    #[error(
        "{} is inside {}, which stays read-only under workspace-write; nothing was changed \
         (run git commands for repository changes)",
        path.display(),
        git_dir.display()
    )]
    InsideGitDir { path: PathBuf, git_dir: PathBuf },
    #[error(
        "{} is inside baton's home {}, which a sandboxed edit may not change; nothing was \
         changed",
        path.display(),
        home.display()
    )]
    InsideBatonHome { path: PathBuf, home: PathBuf },
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PatchError + use<> {
    let path = path.to_path_buf();
    move |source| PatchError::Io {
        context,
        path,
        source,
    }
}

/// Applies `patch` with paths relative to `cwd`. With `writable_roots = Some(roots)`, every
/// touched path must lie inside one of `roots` (after resolving `..` and symlinks) but not in
/// a `.git` directory at any depth (read-only as in Codex), or nothing is
/// written; `None` means no restriction (`danger-full-access`). For `workspace-write` pass
/// [`crate::writable_roots`], which includes the cwd.
///
/// Files are then written through directory descriptors opened from the root down without
/// following symbolic links, so a link swapped into the tree after the check makes that write
/// fail instead of landing outside the roots.
pub fn apply_patch(
    patch: &str,
    cwd: &Path,
    writable_roots: Option<&[PathBuf]>,
) -> Result<PatchReport, PatchError> {
    apply_patch_protecting(patch, cwd, writable_roots, &[])
}

/// [`apply_patch`], refusing as well every path inside one of `protected` (baton's home) when
/// `writable_roots` restricts the edit: a sandboxed edit must not rewrite baton's config,
/// tokens or transcripts.
pub fn apply_patch_protecting(
    patch: &str,
    cwd: &Path,
    writable_roots: Option<&[PathBuf]>,
    protected: &[PathBuf],
) -> Result<PatchReport, PatchError> {
    let ops = parse_patch(patch)?;
    let mut guard = RootGuard::new(writable_roots);
    if guard.roots.is_some() {
        guard.protected = protected
            .iter()
            .map(|dir| (resolve_existing(dir), dir.clone()))
            .collect();
    }

    let mut report = PatchReport::default();
    let mut files = PlannedFiles::default();
    for op in ops {
        match op {
            FileOp::Add { path, contents } => {
                let target = guard.check(cwd, &path, LastLink::Follow)?;
                files.set(target, Some(contents));
                report.added.push(path);
            }
            FileOp::Delete { path } => {
                // Checked through a final symlink as well, as before; the link itself is what
                // gets removed.
                guard.check(cwd, &path, LastLink::Follow)?;
                let target = guard.check(cwd, &path, LastLink::Keep)?;
                if !files.exists(&target)? {
                    return Err(PatchError::FileMissing {
                        action: "delete",
                        path: target.path(),
                    });
                }
                files.set(target, None);
                report.deleted.push(path);
            }
            FileOp::Update {
                path,
                move_to,
                chunks,
            } => {
                let source = guard.check(cwd, &path, LastLink::Follow)?;
                let original = files.read(&source, "update")?;
                let updated = apply_chunks(&original, &chunks, &path)?;
                match move_to {
                    Some(destination_path) => {
                        let destination = guard.check(cwd, &destination_path, LastLink::Follow)?;
                        // A moved symlink goes away as a link; its target is left alone.
                        files.set(guard.check(cwd, &path, LastLink::Keep)?, None);
                        files.set(destination, Some(updated));
                        report.moved.push((path, destination_path));
                    }
                    None => {
                        files.set(source, Some(updated));
                        report.modified.push(path);
                    }
                }
            }
        }
    }
    files.write_all()?;
    Ok(report)
}

/// Whether a symlink as the last component of a path is resolved when checking it: yes for
/// files read or written (a link is edited at its target), no for deletes (the link goes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LastLink {
    Follow,
    Keep,
}

/// A checked path, split the way it is written: a writable root (resolved), the directory
/// below it and the file's name there (symlinks resolved at check time).
#[derive(Clone, Debug)]
struct Target {
    root: PathBuf,
    dir: PathBuf,
    name: OsString,
    /// `Refuse` inside writable roots: a link found at write time appeared after the check.
    links: Links,
}

impl Target {
    fn path(&self) -> PathBuf {
        self.root.join(&self.dir).join(&self.name)
    }

    /// The directory holding the file, opened from the root down; with `create`, missing
    /// directories are made.
    fn open_dir(&self, create: bool) -> io::Result<OwnedFd> {
        let resolver = Resolver::detect();
        let root = fs::open_absolute_dir(&self.root, create, self.links, resolver)?;
        fs::open_dir_below(root.as_fd(), &self.dir, create, self.links, resolver)
    }
}

/// Checks paths against the writable roots.
struct RootGuard {
    /// `None`: no restriction. Roots are resolved like the paths they are compared with.
    roots: Option<Vec<PathBuf>>,
    /// The roots as the caller gave them, for error messages.
    given: Vec<PathBuf>,
    /// Directories refused inside the roots: (resolved, as given).
    protected: Vec<(PathBuf, PathBuf)>,
}

impl RootGuard {
    fn new(roots: Option<&[PathBuf]>) -> Self {
        Self {
            roots: roots.map(|roots| roots.iter().map(|root| resolve_existing(root)).collect()),
            given: roots.map(<[PathBuf]>::to_vec).unwrap_or_default(),
            protected: Vec::new(),
        }
    }

    /// Where to write `path`, if it may be written.
    fn check(&self, cwd: &Path, path: &Path, last: LastLink) -> Result<Target, PatchError> {
        let absolute = normalize_lexically(&cwd.join(path));
        let resolved = match (last, absolute.parent(), absolute.file_name()) {
            (LastLink::Keep, Some(parent), Some(name)) => resolve_existing(parent).join(name),
            _ => resolve_existing(&absolute),
        };
        let Some(roots) = &self.roots else {
            return target(Path::new("/"), &resolved, Links::Follow, path);
        };
        if let Some((_, home)) = self
            .protected
            .iter()
            .find(|(resolved_home, _)| resolved.starts_with(resolved_home))
        {
            return Err(PatchError::InsideBatonHome {
                path: path.to_path_buf(),
                home: home.clone(),
            });
        }
        let mut git_dir = None;
        for root in roots {
            let Ok(inside) = resolved.strip_prefix(root) else {
                continue;
            };
            // Any `.git` on the way, not only the root's own: a nested repository's hooks run
            // outside the sandbox on the user's next git command.
            let mut prefix = root.clone();
            let mut nested_git = None;
            for component in inside.components() {
                prefix.push(component);
                if component == Component::Normal(".git".as_ref()) {
                    nested_git = Some(prefix.clone());
                    break;
                }
            }
            if let Some(dir) = nested_git {
                git_dir.get_or_insert(dir);
            } else {
                return target(root, &resolved, Links::Refuse, path);
            }
        }
        Err(match git_dir {
            Some(git_dir) => PatchError::InsideGitDir {
                path: path.to_path_buf(),
                git_dir,
            },
            None => PatchError::OutsideWritableRoots {
                path: path.to_path_buf(),
                roots: self.given.clone(),
            },
        })
    }
}

/// `resolved` (which lies inside `root`) split into a [`Target`].
fn target(root: &Path, resolved: &Path, links: Links, path: &Path) -> Result<Target, PatchError> {
    let inside = resolved.strip_prefix(root).unwrap_or(resolved);
    match (inside.parent(), inside.file_name()) {
        (Some(dir), Some(name)) if resolved.is_absolute() => Ok(Target {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            name: name.to_os_string(),
            links,
        }),
        _ => Err(PatchError::Io {
            context: "cannot write",
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "it does not name a file below an absolute directory",
            ),
        }),
    }
}

/// Removes `.` and resolves `..` without touching the filesystem.
fn normalize_lexically(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}

/// `path` with symlinks resolved in its longest existing prefix (the path itself included,
/// so a symlink pointing out of the roots is caught).
fn resolve_existing(path: &Path) -> PathBuf {
    let path = normalize_lexically(path);
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut resolved = canonical;
            resolved.extend(rest.iter().rev());
            return resolved;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.clone(),
        }
    }
}

/// The planned end state of every touched file: `None` means deleted. Later operations of
/// the same patch see the results of earlier ones.
#[derive(Default)]
struct PlannedFiles {
    contents: BTreeMap<PathBuf, Option<String>>,
    order: Vec<Target>,
}

impl PlannedFiles {
    fn set(&mut self, target: Target, contents: Option<String>) {
        let path = target.path();
        if !self.contents.contains_key(&path) {
            self.order.push(target);
        }
        self.contents.insert(path, contents);
    }

    fn read(&self, target: &Target, action: &'static str) -> Result<String, PatchError> {
        let path = target.path();
        let missing = || PatchError::FileMissing {
            action,
            path: path.clone(),
        };
        if let Some(planned) = self.contents.get(&path) {
            return planned.clone().ok_or_else(missing);
        }
        let bytes = target
            .open_dir(false)
            .and_then(|dir| fs::read_file(dir.as_fd(), &target.name));
        match bytes {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| PatchError::Io {
                context: "cannot patch",
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(source) => Err(io_error("reading", &path)(source)),
        }
    }

    fn exists(&self, target: &Target) -> Result<bool, PatchError> {
        let path = target.path();
        if let Some(planned) = self.contents.get(&path) {
            return Ok(planned.is_some());
        }
        let found = target
            .open_dir(false)
            .and_then(|dir| fs::entry_exists(dir.as_fd(), &target.name));
        match found {
            Ok(found) => Ok(found),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(io_error("reading", &path)(source)),
        }
    }

    fn write_all(self) -> Result<(), PatchError> {
        for target in &self.order {
            let path = target.path();
            match &self.contents[&path] {
                Some(contents) => target
                    .open_dir(true)
                    .and_then(|dir| fs::write_file(dir.as_fd(), &target.name, contents.as_bytes()))
                    .map_err(io_error("cannot write", &path))?,
                None => match target.open_dir(false) {
                    Ok(dir) => fs::remove_file(dir.as_fd(), &target.name)
                        .map_err(io_error("cannot delete", &path))?,
                    // The directory is gone, and the file with it.
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(io_error("cannot delete", &path)(source)),
                },
            }
        }
        Ok(())
    }
}

/// The new content of a file after `chunks`; the result ends with a newline.
fn apply_chunks(original: &str, chunks: &[Chunk], path: &Path) -> Result<String, PatchError> {
    let crlf = original.contains("\r\n");
    let mut lines: Vec<String> = original
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_owned())
        .collect();
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }

    let mut replacements: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut cursor = 0;
    for chunk in chunks {
        if let Some(context) = &chunk.context {
            let found = seek_sequence(&lines, std::slice::from_ref(context), cursor, false)
                .ok_or_else(|| PatchError::ContextLineNotFound {
                    path: path.to_path_buf(),
                    patch_line: chunk.patch_line,
                    context: context.clone(),
                })?;
            cursor = found + 1;
        }
        if chunk.old_lines.is_empty() {
            // Pure insertion: right after the `@@` context line if there is one, else at the end.
            let at = if chunk.context.is_some() {
                cursor
            } else {
                lines.len()
            };
            replacements.push((at, 0, chunk.new_lines.clone()));
            continue;
        }
        let mut old: &[String] = &chunk.old_lines;
        let mut new: &[String] = &chunk.new_lines;
        let mut found = seek_sequence(&lines, old, cursor, chunk.at_end_of_file);
        if found.is_none() && old.last().is_some_and(String::is_empty) {
            // A trailing empty context line often stands for the end of the file.
            old = &old[..old.len() - 1];
            if new.last().is_some_and(String::is_empty) {
                new = &new[..new.len() - 1];
            }
            found = seek_sequence(&lines, old, cursor, chunk.at_end_of_file);
        }
        let start = found.ok_or_else(|| PatchError::ContextMismatch {
            path: path.to_path_buf(),
            patch_line: chunk.patch_line,
            expected: chunk.old_lines.clone(),
        })?;
        let new = new
            .iter()
            .zip(&chunk.context_of_new)
            .map(|(line, context)| match context {
                Some(index) if *index < old.len() => lines[start + index].clone(),
                _ => line.clone(),
            })
            .collect();
        replacements.push((start, old.len(), new));
        cursor = start + old.len();
    }

    replacements.sort_by_key(|(start, _, _)| *start);
    for (start, len, new) in replacements.into_iter().rev() {
        lines.splice(start..start + len, new);
    }
    let newline = if crlf { "\r\n" } else { "\n" };
    let mut text = lines.join(newline);
    text.push_str(newline);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(context: Option<&str>, old: &[&str], new: &[&str]) -> Chunk {
        Chunk {
            context: context.map(str::to_owned),
            old_lines: old.iter().map(|l| l.to_string()).collect(),
            new_lines: new.iter().map(|l| l.to_string()).collect(),
            context_of_new: vec![None; new.len()],
            at_end_of_file: false,
            patch_line: 3,
        }
    }

    #[test]
    fn chunks_apply_in_order_and_keep_crlf() {
        let original = "fn a() {\r\n    1\r\n}\r\nfn b() {\r\n    1\r\n}\r\n";
        let chunks = [
            chunk(Some("fn b() {"), &["    1"], &["    2"]),
            chunk(None, &[], &["// end"]),
        ];
        let updated = apply_chunks(original, &chunks, Path::new("f.rs")).expect("applies");
        assert_eq!(
            updated,
            "fn a() {\r\n    1\r\n}\r\nfn b() {\r\n    2\r\n}\r\n// end\r\n"
        );
    }

    #[test]
    fn insertion_after_context_line() {
        let updated = apply_chunks(
            "a\nb\nc\n",
            &[chunk(Some("a"), &[], &["x"])],
            Path::new("f"),
        )
        .expect("applies");
        assert_eq!(updated, "a\nx\nb\nc\n");
    }

    #[test]
    fn lexical_normalisation() {
        assert_eq!(
            normalize_lexically(Path::new("/a/./b/../../c/d")),
            PathBuf::from("/c/d")
        );
        assert_eq!(normalize_lexically(Path::new("/../x")), PathBuf::from("/x"));
    }
}
