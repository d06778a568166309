//! A write that fails part-way (here: the file size limit, as a full disk would) must not
//! leave a fragment that the next record is glued onto.
//!
//! The limit applies to the whole process, so the failing part runs in a child process: this
//! test binary started again for this one test, with an environment variable saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use baton_protocol::{ResponseItem, RolloutItem, ThreadId};
use baton_store::{FileStore, read_rollout};
use common::meta;

const TEST_NAME: &str = "a_write_that_fails_part_way_is_cut_off_before_the_next_record";
const CHILD_DIR_ENV: &str = "BATON_STORE_TEST_FSIZE_CHILD_DIR";

#[test]
fn a_write_that_fails_part_way_is_cut_off_before_the_next_record() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        run_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .expect("run the child");
    let report = format!(
        "child {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{report}");
    // The child writes this only after all its checks passed, so a filter that matched no
    // test cannot pass for it.
    let transcript = std::fs::read_to_string(dir.path().join("transcript-path"))
        .unwrap_or_else(|error| panic!("the child did not finish ({error}); {report}"));

    let loaded = read_rollout(Path::new(&transcript)).expect("read");
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert_eq!(
        loaded.history,
        vec![ResponseItem::user_message("after the failure")]
    );
}

fn run_child(dir: &Path) {
    let store = FileStore::open(&dir.join("home")).expect("open store");
    let id = ThreadId::new();
    let mut writer = store
        .create_thread(&meta(id, Path::new("/p")))
        .expect("create thread");
    let path: PathBuf = writer.path().to_path_buf();
    let good_len = writer.len();

    // From here on no file of this process may grow past `good_len + 600` bytes.
    let previous = set_file_size_limit(good_len + 600);
    let too_long = "x".repeat(4000);
    let error = writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message(
            too_long,
        )))
        .expect_err("the limit stops this line part-way");
    assert!(
        error.to_string().contains("append to the transcript"),
        "{error}"
    );
    assert_eq!(writer.len(), good_len);
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        good_len,
        "the partly written line is still there"
    );
    writer
        .append(&RolloutItem::ResponseItem(ResponseItem::user_message(
            "after the failure",
        )))
        .expect("a short line still fits");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), writer.len());
    restore_file_size_limit(previous);

    std::fs::write(
        dir.join("transcript-path"),
        path.to_str().expect("utf-8 path"),
    )
    .expect("write the marker");
}

fn set_file_size_limit(bytes: u64) -> libc::rlimit {
    // SAFETY: plain libc calls on valid pointers to stack values. Ignoring SIGXFSZ makes a
    // write past the limit fail with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut previous = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut previous), 0);
        let limit = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: previous.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        previous
    }
}

fn restore_file_size_limit(previous: libc::rlimit) {
    // SAFETY: as above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &previous), 0);
    }
}
