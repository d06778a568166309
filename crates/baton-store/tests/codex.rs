mod common;

use std::path::Path;

use baton_protocol::ThreadId;
use baton_store::{find_codex_rollout, read_rollout};
use common::{meta_line, user_item, write_file};

fn fake_state_db(codex_home: &Path, id: ThreadId, rollout_path: &Path) {
    let connection = rusqlite::Connection::open(codex_home.join("state_5.sqlite")).expect("sqlite");
    connection
        .execute_batch(
            "CREATE TABLE threads (id TEXT PRIMARY KEY, rollout_path TEXT NOT NULL, title TEXT);",
        )
        .expect("schema");
    connection
        .execute(
            "INSERT INTO threads (id, rollout_path) VALUES (?1, ?2)",
            [id.to_string(), rollout_path.to_string_lossy().into_owned()],
        )
        .expect("row");
}

fn codex_transcript(codex_home: &Path, folder: &str, id: ThreadId) -> std::path::PathBuf {
    write_file(
        &codex_home
            .join(folder)
            .join(format!("rollout-2025-06-01T10-00-00-{id}.jsonl")),
        (meta_line(id, "/codex/project") + &user_item("hello codex")).as_bytes(),
    )
}

#[test]
fn uses_a_valid_path_from_the_codex_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let id = ThreadId::new();
    // A folder the scan would never look in, so only the index can find it.
    let path = codex_transcript(home, "elsewhere/deep/er/still/more", id);
    fake_state_db(home, id, &path);
    assert_eq!(
        find_codex_rollout(home, id).expect("lookup"),
        Some(path.clone())
    );
    let loaded = read_rollout(&path).expect("codex files are readable");
    assert_eq!(loaded.meta.id, id);
    assert_eq!(loaded.meta.originator, "codex_exec");
}

#[test]
fn a_stale_absolute_path_falls_back_to_the_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("copied-codex-home");
    let id = ThreadId::new();
    let path = codex_transcript(&home, "sessions/2025/06/01", id);
    // The index still names the original location of a copied home.
    let stale = dir
        .path()
        .join("original-home/sessions/2025/06/01")
        .join(path.file_name().expect("name"));
    fake_state_db(&home, id, &stale);
    assert_eq!(find_codex_rollout(&home, id).expect("lookup"), Some(path));
}

#[test]
fn an_index_path_outside_codex_home_is_not_used_even_if_it_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("codex");
    std::fs::create_dir_all(&home).expect("home");
    let id = ThreadId::new();
    let outside = codex_transcript(dir.path(), "outside", id);
    fake_state_db(&home, id, &outside);
    assert_eq!(find_codex_rollout(&home, id).expect("lookup"), None);
}

#[test]
fn finds_archived_flat_files_and_tolerates_other_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let id = ThreadId::new();
    let path = codex_transcript(home, "archived_sessions", id);
    let connection = rusqlite::Connection::open(home.join("state_7.sqlite")).expect("sqlite");
    connection
        .execute_batch("CREATE TABLE unrelated (x INTEGER);")
        .expect("schema");
    drop(connection);
    std::fs::write(home.join("state_6.sqlite"), b"garbage, not sqlite").expect("garbage");
    assert_eq!(find_codex_rollout(home, id).expect("lookup"), Some(path));
}

#[test]
fn the_codex_index_is_opened_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();
    let id = ThreadId::new();
    let path = codex_transcript(home, "sessions/2025/06/01", id);
    fake_state_db(home, id, &path);
    let database = home.join("state_5.sqlite");
    let before = std::fs::read(&database).expect("read db");
    let mut permissions = std::fs::metadata(&database).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o400);
    std::fs::set_permissions(&database, permissions).expect("chmod");
    assert_eq!(find_codex_rollout(home, id).expect("lookup"), Some(path));
    assert_eq!(std::fs::read(&database).expect("read db"), before);
}

#[test]
fn missing_codex_home_is_simply_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        find_codex_rollout(&dir.path().join("nope"), ThreadId::new()).expect("lookup"),
        None
    );
}
