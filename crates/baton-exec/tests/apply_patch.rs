//! `apply_patch` on real files: every operation, error texts, and the writable-root check
//! that refuses a whole patch before anything is written.

use std::path::{Path, PathBuf};

use baton_exec::{PatchError, apply_patch, apply_patch_protecting};

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read")
}

#[test]
fn adds_a_file_creating_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = apply_patch(
        "*** Begin Patch\n*** Add File: src/new.txt\n+hello\n+world\n*** End Patch\n",
        dir.path(),
        Some(&[dir.path().to_path_buf()]),
    )
    .expect("applies");
    assert_eq!(read(&dir.path().join("src/new.txt")), "hello\nworld\n");
    assert_eq!(report.added, vec![PathBuf::from("src/new.txt")]);
    assert_eq!(report.files(), vec!["src/new.txt".to_owned()]);
    assert!(
        report.summary().contains("A src/new.txt"),
        "{}",
        report.summary()
    );
}

#[test]
fn updates_a_file_with_several_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lib.py");
    write(
        &file,
        "import os\n\ndef a():\n    return 1\n\ndef b():\n    return 1\n\ndef c():\n    return 1\n",
    );
    let report = apply_patch(
        "*** Begin Patch\n\
         *** Update File: lib.py\n\
         @@\n \
         import os\n\
         +import sys\n\
         @@ def b():\n\
         -    return 1\n\
         +    return 2\n\
         @@ def c():\n\
         -    return 1\n\
         +    return 3\n\
         *** End of File\n\
         *** End Patch",
        dir.path(),
        None,
    )
    .expect("applies");
    assert_eq!(
        read(&file),
        "import os\nimport sys\n\ndef a():\n    return 1\n\ndef b():\n    return 2\n\ndef c():\n    return 3\n"
    );
    assert_eq!(report.modified, vec![PathBuf::from("lib.py")]);
    assert!(report.summary().contains("M lib.py"));
}

#[test]
fn fuzzy_matching_tolerates_whitespace_differences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.txt");
    write(&file, "  alpha  \nbeta\t\n");
    apply_patch(
        "*** Begin Patch\n*** Update File: a.txt\n@@\n alpha\n-beta\n+gamma\n*** End Patch",
        dir.path(),
        None,
    )
    .expect("applies");
    assert_eq!(read(&file), "  alpha  \ngamma\n");
}

#[test]
fn moves_and_edits_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("old/name.txt"), "one\ntwo\n");
    std::fs::set_permissions(
        dir.path().join("old/name.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let report = apply_patch(
        "*** Begin Patch\n*** Update File: old/name.txt\n*** Move to: new/name.txt\n@@\n one\n-two\n+2\n*** End Patch",
        dir.path(),
        None,
    )
    .expect("applies");
    assert!(!dir.path().join("old/name.txt").exists());
    assert_eq!(read(&dir.path().join("new/name.txt")), "one\n2\n");
    assert_eq!(
        report.moved,
        vec![(PathBuf::from("old/name.txt"), PathBuf::from("new/name.txt"))]
    );
    assert_eq!(report.files(), vec!["old/name.txt", "new/name.txt"]);
}

#[test]
fn update_keeps_the_file_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("run.sh");
    write(&script, "echo 1\n");
    std::fs::set_permissions(&script, PermissionsExt::from_mode(0o755)).expect("chmod");
    apply_patch(
        "*** Begin Patch\n*** Update File: run.sh\n-echo 1\n+echo 2\n*** End Patch",
        dir.path(),
        None,
    )
    .expect("applies");
    assert_eq!(read(&script), "echo 2\n");
    let mode = std::fs::metadata(&script)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn deletes_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("gone.txt"), "bye\n");
    let report = apply_patch(
        "*** Begin Patch\n*** Delete File: gone.txt\n*** End Patch",
        dir.path(),
        Some(&[dir.path().to_path_buf()]),
    )
    .expect("applies");
    assert!(!dir.path().join("gone.txt").exists());
    assert_eq!(report.deleted, vec![PathBuf::from("gone.txt")]);
    assert!(report.summary().contains("D gone.txt"));
}

#[test]
fn context_mismatch_names_the_file_and_the_expected_lines_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("a.txt"), "one\ntwo\n");
    let error = apply_patch(
        "*** Begin Patch\n\
         *** Add File: first.txt\n\
         +x\n\
         *** Update File: a.txt\n\
         @@\n \
         one\n\
         -three\n\
         +four\n\
         *** End Patch",
        dir.path(),
        None,
    )
    .expect_err("must not apply");
    assert!(
        matches!(error, PatchError::ContextMismatch { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("a.txt"), "{message}");
    assert!(message.contains("expected:\none\nthree"), "{message}");
    assert!(
        !dir.path().join("first.txt").exists(),
        "an earlier file was written"
    );
    assert_eq!(read(&dir.path().join("a.txt")), "one\ntwo\n");
}

#[test]
fn missing_context_line_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("a.txt"), "one\n");
    let error = apply_patch(
        "*** Begin Patch\n*** Update File: a.txt\n@@ fn nowhere()\n-one\n+two\n*** End Patch",
        dir.path(),
        None,
    )
    .expect_err("must not apply");
    assert!(error.to_string().contains("`fn nowhere()`"), "{error}");
}

#[test]
fn updating_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = apply_patch(
        "*** Begin Patch\n*** Update File: nope.txt\n-a\n+b\n*** End Patch",
        dir.path(),
        None,
    )
    .expect_err("must not apply");
    assert!(error.to_string().contains("does not exist"), "{error}");
}

#[test]
fn paths_outside_the_writable_roots_refuse_the_whole_patch() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let roots = [root.path().to_path_buf()];
    let escaping = [
        "../escape.txt".to_owned(),
        outside.path().join("abs.txt").display().to_string(),
        "sub/../../escape.txt".to_owned(),
    ];
    for path in escaping {
        let patch = format!(
            "*** Begin Patch\n*** Add File: inside.txt\n+ok\n*** Add File: {path}\n+no\n*** End Patch"
        );
        let error = apply_patch(&patch, root.path(), Some(&roots)).expect_err("must refuse");
        assert!(
            matches!(error, PatchError::OutsideWritableRoots { .. }),
            "{path}: {error:?}"
        );
        assert!(
            error.to_string().contains("outside the writable roots"),
            "{error}"
        );
        assert!(
            !root.path().join("inside.txt").exists(),
            "{path}: wrote before refusing"
        );
    }
    assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);

    // An absolute path inside a root is fine.
    let inside = root.path().join("abs-inside.txt");
    let patch = format!(
        "*** Begin Patch\n*** Add File: {}\n+ok\n*** End Patch",
        inside.display()
    );
    apply_patch(&patch, root.path(), Some(&roots)).expect("inside a root");
    assert_eq!(read(&inside), "ok\n");
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path(), root.path().join("link")).expect("symlink");
    let error = apply_patch(
        "*** Begin Patch\n*** Add File: link/evil.txt\n+no\n*** End Patch",
        root.path(),
        Some(&[root.path().to_path_buf()]),
    )
    .expect_err("must refuse");
    assert!(
        matches!(error, PatchError::OutsideWritableRoots { .. }),
        "{error:?}"
    );
    assert!(!outside.path().join("evil.txt").exists());
}

#[test]
fn read_only_roots_refuse_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = apply_patch(
        "*** Begin Patch\n*** Add File: a.txt\n+x\n*** End Patch",
        dir.path(),
        Some(&[]),
    )
    .expect_err("must refuse");
    assert!(
        matches!(error, PatchError::OutsideWritableRoots { .. }),
        "{error:?}"
    );
}

#[test]
fn malformed_patch_names_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = apply_patch(
        "*** Begin Patch\n*** Update File: a.txt\n@@\n-x\n+y\n*** Explode: b\n*** End Patch",
        dir.path(),
        None,
    )
    .expect_err("must fail");
    let message = error.to_string();
    assert!(message.starts_with("invalid patch at line 6:"), "{message}");
    let error = apply_patch("just text", dir.path(), None).expect_err("must fail");
    assert!(error.to_string().contains("*** Begin Patch"), "{error}");
}

#[test]
fn paths_in_git_are_refused_under_workspace_write() {
    let root = tempfile::tempdir().expect("tempdir");
    write(&root.path().join(".git/config"), "[core]\n");
    let roots = [root.path().to_path_buf()];
    let patches = [
        "*** Begin Patch\n*** Add File: ok.txt\n+ok\n*** Add File: .git/hooks/pre-commit\n+evil\n*** End Patch",
        "*** Begin Patch\n*** Update File: .git/config\n@@\n-[core]\n+[core]\n+\tbare = true\n*** End Patch",
        "*** Begin Patch\n*** Add File: sub/../.git/x\n+no\n*** End Patch",
        "*** Begin Patch\n*** Delete File: .git/config\n*** End Patch",
    ];
    for patch in patches {
        let error = apply_patch(patch, root.path(), Some(&roots)).expect_err("must refuse");
        assert!(
            matches!(error, PatchError::InsideGitDir { .. }),
            "{patch}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("stays read-only under workspace-write"),
            "{error}"
        );
    }
    assert!(
        !root.path().join("ok.txt").exists(),
        "wrote before refusing"
    );
    assert!(!root.path().join(".git/hooks").exists());
    assert_eq!(read(&root.path().join(".git/config")), "[core]\n");

    // A name that merely starts with `.git` is an ordinary file.
    apply_patch(
        "*** Begin Patch\n*** Add File: .gitignore\n+target\n*** End Patch",
        root.path(),
        Some(&roots),
    )
    .expect(".gitignore is writable");

    // danger-full-access: no restriction.
    apply_patch(
        "*** Begin Patch\n*** Add File: .git/x\n+ok\n*** End Patch",
        root.path(),
        None,
    )
    .expect("unrestricted");
    assert_eq!(read(&root.path().join(".git/x")), "ok\n");
}

/// A command left running after its turn swaps `project/d` between a directory and a symlink
/// to a directory outside the workspace (an atomic `RENAME_EXCHANGE`, as fast as it can) while
/// patches add files under `d/`. Each patch may succeed or be refused; none may write outside,
/// not even a temporary file.
#[test]
fn a_symlink_swapped_in_during_patches_never_lets_a_write_out() {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let workspace = tempfile::tempdir().expect("tempdir");
    let project = workspace.path().join("project");
    let outside = workspace.path().join("outside");
    std::fs::create_dir_all(project.join("d")).expect("mkdir d");
    std::fs::create_dir(&outside).expect("mkdir outside");
    std::os::unix::fs::symlink(&outside, project.join("swap")).expect("symlink");

    let c_path = |path: PathBuf| CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    let (d, swap) = (c_path(project.join("d")), c_path(project.join("swap")));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut swaps = 0u64;
            // Bounded in case the patches below never finish.
            while !stop.load(Ordering::Relaxed) && swaps < 20_000_000 {
                // SAFETY: both paths are NUL-terminated strings.
                let exchanged = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        d.as_ptr(),
                        libc::AT_FDCWD,
                        swap.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(exchanged, 0, "{}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        }
    });

    let roots = [project.clone()];
    let (mut applied, mut refused, mut failed) = (0, 0, Vec::new());
    for n in 0..200 {
        let patch = format!("*** Begin Patch\n*** Add File: d/pwn{n}.txt\n+x\n*** End Patch\n");
        match apply_patch(&patch, &project, Some(&roots)) {
            Ok(_) => applied += 1,
            Err(PatchError::OutsideWritableRoots { .. }) => refused += 1,
            Err(error) => failed.push(error.to_string()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    let refused = refused + failed.len();

    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("ls")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let leaked = names(&outside);
    assert!(
        leaked.is_empty(),
        "written outside the workspace: {leaked:?} ({applied} applied, {refused} refused, {swaps} swaps)"
    );
    // Every patch that succeeded wrote its file inside, whichever name the directory has now.
    let inside_dir = if project.join("d").is_symlink() {
        project.join("swap")
    } else {
        project.join("d")
    };
    let inside = names(&inside_dir);
    assert_eq!(inside.len(), applied, "{inside:?}");
    assert!(
        inside.iter().all(|name| name.starts_with("pwn")),
        "{inside:?}"
    );
    // A write stopped by the swap says why.
    for error in failed {
        assert!(error.contains("symbolic link"), "{error}");
    }
    eprintln!("{applied} applied, {refused} refused, {swaps} swaps");
}

#[test]
fn new_files_and_directories_honour_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: PathBuf| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = [dir.path().to_path_buf()];
    // The umask is process-wide; no other test in this binary looks at a mode it did not set.
    for (umask, file_mode, dir_mode) in [(0o022, 0o644, 0o755), (0o007, 0o660, 0o770)] {
        // SAFETY: umask(2) cannot fail.
        let previous = unsafe { libc::umask(umask) };
        let result = apply_patch(
            &format!("*** Begin Patch\n*** Add File: m{umask:o}/new.txt\n+x\n*** End Patch\n"),
            dir.path(),
            Some(&roots),
        );
        // SAFETY: as above.
        unsafe { libc::umask(previous) };
        result.expect("applies");
        let new_dir = dir.path().join(format!("m{umask:o}"));
        assert_eq!(mode(new_dir.join("new.txt")), file_mode, "umask {umask:o}");
        assert_eq!(mode(new_dir), dir_mode, "umask {umask:o}");
    }
}

#[test]
fn deleting_a_symlink_removes_the_link_and_binary_files_can_be_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roots = [dir.path().to_path_buf()];
    write(&dir.path().join("real.txt"), "keep\n");
    std::os::unix::fs::symlink("real.txt", dir.path().join("link.txt")).expect("symlink");
    std::fs::write(dir.path().join("blob.bin"), [0xff, 0xfe, 0]).expect("write");
    apply_patch(
        "*** Begin Patch\n*** Delete File: link.txt\n*** Delete File: blob.bin\n*** End Patch",
        dir.path(),
        Some(&roots),
    )
    .expect("applies");
    assert!(!dir.path().join("link.txt").is_symlink());
    assert!(!dir.path().join("blob.bin").exists());
    assert_eq!(read(&dir.path().join("real.txt")), "keep\n");
}

#[test]
fn paths_in_a_nested_git_are_refused_under_workspace_write() {
    let root = tempfile::tempdir().expect("tempdir");
    write(&root.path().join("nested/.git/config"), "[core]\n");
    let roots = [root.path().to_path_buf()];
    for patch in [
        "*** Begin Patch\n*** Add File: nested/.git/hooks/post-checkout\n+evil\n*** End Patch",
        "*** Begin Patch\n*** Add File: a/b/.git/hooks/post-commit\n+evil\n*** End Patch",
        "*** Begin Patch\n*** Delete File: nested/.git/config\n*** End Patch",
    ] {
        let error = apply_patch(patch, root.path(), Some(&roots)).expect_err("must refuse");
        assert!(
            matches!(error, PatchError::InsideGitDir { .. }),
            "{patch}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("stays read-only under workspace-write"),
            "{error}"
        );
    }
    assert!(!root.path().join("nested/.git/hooks").exists());
    assert!(!root.path().join("a").exists());
    assert_eq!(read(&root.path().join("nested/.git/config")), "[core]\n");
}

#[test]
fn paths_in_baton_home_are_refused_under_workspace_write() {
    let root = tempfile::tempdir().expect("tempdir");
    let home = root.path().join(".baton");
    write(&home.join("config.toml"), "model = \"m\"\n");
    let roots = [root.path().to_path_buf()];
    let protected = [home.clone()];
    for patch in [
        "*** Begin Patch\n*** Add File: .baton/tokens\n+alice sha256:00\n*** End Patch",
        "*** Begin Patch\n*** Update File: .baton/config.toml\n@@\n-model = \"m\"\n+model = \"x\"\n*** End Patch",
        "*** Begin Patch\n*** Add File: sub/../.baton/sessions/x.jsonl\n+{}\n*** End Patch",
    ] {
        let error = apply_patch_protecting(patch, root.path(), Some(&roots), &protected)
            .expect_err("must refuse");
        assert!(
            matches!(error, PatchError::InsideBatonHome { .. }),
            "{patch}: {error:?}"
        );
        assert!(error.to_string().contains("baton's home"), "{error}");
    }
    assert!(!home.join("tokens").exists());
    assert!(!home.join("sessions").exists());
    assert_eq!(read(&home.join("config.toml")), "model = \"m\"\n");
    apply_patch_protecting(
        "*** Begin Patch\n*** Add File: ok.txt\n+ok\n*** End Patch",
        root.path(),
        Some(&roots),
        &protected,
    )
    .expect("the rest of the workspace is writable");
}
