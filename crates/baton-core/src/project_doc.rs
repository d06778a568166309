//! Project instructions, read as Codex reads them: `$BATON_HOME/AGENTS.md`, then
//! one file per directory from the repository root down to the cwd, sent to the model as one
//! user message at the start of a session.
//!
//! In each directory `AGENTS.override.md` wins over `AGENTS.md`, and the configured fallback
//! names (`project_doc_fallback_filenames`, e.g. `CLAUDE.md`) are tried when neither exists.
//! An empty or unreadable file counts as absent (an unreadable one with a warning): project
//! notes never stop a session from starting.

use std::path::{Path, PathBuf};

use baton_protocol::ResponseItem;

/// How the instructions message starts; Codex-trained models expect exactly this shape.
pub(crate) const HEADER_PREFIX: &str = "# AGENTS.md instructions for ";

const OVERRIDE_NAME: &str = "AGENTS.override.md";
const DEFAULT_NAME: &str = "AGENTS.md";

/// What to read: from config (`project_doc_max_bytes`, `project_doc_fallback_filenames`).
#[derive(Debug, Clone)]
pub(crate) struct ProjectDocOptions {
    pub max_bytes: usize,
    pub fallback_filenames: Vec<String>,
}

/// The instructions message for a session in `cwd`, or `None` when there are no files (or
/// `max_bytes` is 0).
pub(crate) fn instructions_message(
    baton_home: &Path,
    cwd: &Path,
    options: &ProjectDocOptions,
) -> Option<ResponseItem> {
    let text = collect(baton_home, cwd, options)?;
    Some(ResponseItem::user_message(format!(
        "{HEADER_PREFIX}{}\n\n<INSTRUCTIONS>\n{text}\n</INSTRUCTIONS>",
        cwd.display()
    )))
}

/// Whether `item` is an instructions message made by [`instructions_message`] (or Codex).
pub(crate) fn is_instructions_message(item: &ResponseItem) -> bool {
    matches!(item.message_text(), Some(("user", text)) if text.starts_with(HEADER_PREFIX))
}

/// The files' texts joined by blank lines, capped at `max_bytes` with the cut said in words.
fn collect(baton_home: &Path, cwd: &Path, options: &ProjectDocOptions) -> Option<String> {
    if options.max_bytes == 0 {
        return None;
    }
    let mut parts: Vec<(PathBuf, String)> = Vec::new();
    // The home file is the person's own, for every project; no fallbacks there.
    if let Some(part) = first_readable(baton_home, &[OVERRIDE_NAME, DEFAULT_NAME]) {
        parts.push(part);
    }
    let mut names: Vec<&str> = vec![OVERRIDE_NAME, DEFAULT_NAME];
    names.extend(options.fallback_filenames.iter().map(String::as_str));
    // A repository may hold BATON_HOME itself; its file is read once, as the home's.
    for dir in dirs_from_root(cwd)
        .into_iter()
        .filter(|dir| dir != baton_home)
    {
        if let Some(part) = first_readable(&dir, &names) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        return None;
    }
    let joined = parts
        .iter()
        .map(|(_, text)| text.trim_end())
        .collect::<Vec<_>>()
        .join("\n\n");
    if joined.len() <= options.max_bytes {
        return Some(joined);
    }
    let mut cut = options.max_bytes;
    while !joined.is_char_boundary(cut) {
        cut -= 1;
    }
    // Which files lost text, so the model (and a person reading the transcript) knows.
    let mut start = 0;
    let mut cut_files = Vec::new();
    for (path, text) in &parts {
        let end = start + text.trim_end().len();
        if end > cut {
            cut_files.push(path.display().to_string());
        }
        start = end + 2;
    }
    Some(format!(
        "{}\n\n[baton: the project instructions were cut here: {} of {} bytes exceed \
         project_doc_max_bytes = {}; the rest of {} was not sent]",
        &joined[..cut],
        joined.len() - cut,
        joined.len(),
        options.max_bytes,
        cut_files.join(", ")
    ))
}

/// The repository root (the nearest directory at or above `cwd` holding `.git`) and every
/// directory below it down to `cwd`, root first; only `cwd` outside a repository.
fn dirs_from_root(cwd: &Path) -> Vec<PathBuf> {
    let mut chain: Vec<PathBuf> = Vec::new();
    for dir in cwd.ancestors() {
        chain.push(dir.to_path_buf());
        if dir.join(".git").exists() {
            chain.reverse();
            return chain;
        }
    }
    vec![cwd.to_path_buf()]
}

/// The first of `names` in `dir` that is a readable file with some text.
fn first_readable(dir: &Path, names: &[&str]) -> Option<(PathBuf, String)> {
    names.iter().find_map(|name| {
        let path = dir.join(name);
        if !path.is_file() {
            return None;
        }
        match fs_err::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                (!text.trim().is_empty()).then_some((path, text))
            }
            Err(err) => {
                tracing::warn!("skipping project instructions: {err}");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ProjectDocOptions {
        ProjectDocOptions {
            max_bytes: 32 * 1024,
            fallback_filenames: Vec::new(),
        }
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dirs");
        }
        std::fs::write(path, text).expect("write");
    }

    /// A home, a repository `repo` with `.git`, and a cwd `repo/a/b`.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let repo = dir.path().join("repo");
        let cwd = repo.join("a/b");
        std::fs::create_dir_all(&home).expect("home");
        std::fs::create_dir_all(repo.join(".git")).expect(".git");
        std::fs::create_dir_all(&cwd).expect("cwd");
        (dir, home, repo, cwd)
    }

    #[test]
    fn home_then_root_down_to_cwd_with_overrides_winning() {
        let (dir, home, repo, cwd) = layout();
        write(&home.join("AGENTS.md"), "home rules\n");
        write(
            &dir.path().join("AGENTS.md"),
            "above the repository: never read",
        );
        write(&repo.join("AGENTS.md"), "root rules\n");
        write(&repo.join("a/AGENTS.md"), "a rules: replaced");
        write(&repo.join("a/AGENTS.override.md"), "a override");
        write(&cwd.join("AGENTS.md"), "b rules");
        let text = collect(&home, &cwd, &options()).expect("instructions");
        assert_eq!(text, "home rules\n\nroot rules\n\na override\n\nb rules");
        // A home inside the repository is not read twice.
        let text = collect(&repo.join("a"), &cwd, &options()).expect("instructions");
        assert_eq!(text, "a override\n\nroot rules\n\nb rules");
    }

    #[test]
    fn outside_a_repository_only_the_cwd_counts_and_fallbacks_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let cwd = dir.path().join("p/q");
        std::fs::create_dir_all(&cwd).expect("cwd");
        write(
            &dir.path().join("p/AGENTS.md"),
            "parent: not a repository root",
        );
        assert_eq!(collect(&home, &cwd, &options()), None);
        write(&cwd.join("CLAUDE.md"), "claude notes");
        assert_eq!(
            collect(&home, &cwd, &options()),
            None,
            "no fallback configured"
        );
        let with_fallback = ProjectDocOptions {
            fallback_filenames: vec!["CLAUDE.md".into()],
            ..options()
        };
        assert_eq!(
            collect(&home, &cwd, &with_fallback).as_deref(),
            Some("claude notes")
        );
        // AGENTS.md beats a fallback; an empty file counts as absent.
        write(&cwd.join("AGENTS.md"), "  \n");
        assert_eq!(
            collect(&home, &cwd, &with_fallback).as_deref(),
            Some("claude notes")
        );
        write(&cwd.join("AGENTS.md"), "agents notes");
        assert_eq!(
            collect(&home, &cwd, &with_fallback).as_deref(),
            Some("agents notes")
        );
    }

    #[test]
    fn the_cap_cuts_and_says_so() {
        let (_dir, home, repo, cwd) = layout();
        write(&repo.join("AGENTS.md"), &"r".repeat(60));
        write(&cwd.join("AGENTS.md"), &"c".repeat(60));
        let capped = ProjectDocOptions {
            max_bytes: 100,
            ..options()
        };
        let text = collect(&home, &cwd, &capped).expect("instructions");
        let (kept, note) = text.split_once("\n\n[baton:").expect("a note");
        assert_eq!(kept.len(), 100);
        assert!(kept.starts_with(&"r".repeat(60)));
        assert!(
            note.contains("22 of 122 bytes exceed project_doc_max_bytes = 100"),
            "{note}"
        );
        assert!(note.contains("a/b/AGENTS.md"), "{note}");
        assert!(!note.contains("repo/AGENTS.md"), "{note}");
        let off = ProjectDocOptions {
            max_bytes: 0,
            ..options()
        };
        assert_eq!(collect(&home, &cwd, &off), None);
    }

    #[cfg(unix)]
    #[test]
    fn an_unreadable_file_is_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, home, repo, cwd) = layout();
        let locked = repo.join("AGENTS.md");
        write(&locked, "secret");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        write(&cwd.join("AGENTS.md"), "readable");
        // Root can read anything; the rule is still exercised for everyone else.
        let expected = if std::fs::read(&locked).is_ok() {
            "secret\n\nreadable"
        } else {
            "readable"
        };
        assert_eq!(collect(&home, &cwd, &options()).as_deref(), Some(expected));
    }

    #[test]
    fn the_message_has_codexs_shape() {
        let (_dir, home, _repo, cwd) = layout();
        write(&cwd.join("AGENTS.md"), "use tabs");
        let item = instructions_message(&home, &cwd, &options()).expect("message");
        let (role, text) = item.message_text().expect("a message");
        assert_eq!(role, "user");
        assert_eq!(
            text,
            format!(
                "# AGENTS.md instructions for {}\n\n<INSTRUCTIONS>\nuse tabs\n</INSTRUCTIONS>",
                cwd.display()
            )
        );
        assert!(is_instructions_message(&item));
        assert!(!is_instructions_message(&ResponseItem::user_message("hi")));
    }
}
