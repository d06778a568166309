//! The real `baton` binary on a PostgreSQL store (a private cluster from baton-test-support):
//! selected by `--store`, `BATON_STORE` or `store =` in config.toml; a session started there is
//! continued by another process with its whole history, is listed, and the password never
//! appears in anything baton prints. Skipped (saying so) without PostgreSQL, unless CI=true.

mod common;

use std::process::Output;

use baton_test_support::{PgCluster, ScriptedModelServer, Wire, default_script};
use common::{TestEnv, assert_success, stderr, stdout, thread_id_of};

fn assert_no_password(output: &Output) {
    for text in [stdout(output), stderr(output)] {
        assert!(
            !text.contains(PgCluster::PASSWORD),
            "the database password was printed: {text}"
        );
    }
}

#[test]
fn exec_and_resume_on_postgres_keep_the_whole_history_under_one_id() {
    let Some(cluster) = PgCluster::start_or_skip("exec_and_resume_on_postgres") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let url = cluster.url();

    // `--store URL`, with debug logging on: nothing may print the password.
    let first = env
        .baton()
        .env("RUST_LOG", "debug")
        .args(["--store", &url, "exec", "shell: echo first-output"])
        .output()
        .expect("run baton");
    assert_success(&first);
    assert_no_password(&first);
    let thread_id = thread_id_of(&first);

    // `BATON_STORE` in another process: the whole conversation comes back from the database.
    let resumed = env
        .baton()
        .env("BATON_STORE", &url)
        .args(["exec", "resume", &thread_id, "RECALL"])
        .output()
        .expect("run baton");
    assert_success(&resumed);
    assert_no_password(&resumed);
    assert_eq!(thread_id_of(&resumed), thread_id, "the id must not change");
    assert_eq!(
        stdout(&resumed).trim(),
        "recall: shell: echo first-output (1 tool outputs)"
    );

    // Nothing went to the files store.
    assert!(env.rollout_files().is_empty(), "{:?}", env.rollout_files());

    // `store =` in config.toml, the password from PGPASSWORD: the session is listed.
    let config = std::fs::read_to_string(env.home.join("config.toml")).expect("config");
    std::fs::write(
        env.home.join("config.toml"),
        format!("store = \"{}\"\n{config}", cluster.url_without_password()),
    )
    .expect("config");
    let listed = env
        .baton()
        .env("PGPASSWORD", PgCluster::PASSWORD)
        .args(["sessions", "list", "--json"])
        .output()
        .expect("run baton");
    assert_success(&listed);
    assert_no_password(&listed);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let row = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["id"] == thread_id.as_str()))
        .unwrap_or_else(|| panic!("{thread_id} is not listed: {rows}"));
    assert_eq!(row["turns"], 2, "{row}");
    assert_eq!(row["first_prompt"], "shell: echo first-output", "{row}");

    // The password from a .pgpass file (mode 0600), as libpq reads it.
    let pgpass = env.root.join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "127.0.0.1:{}:*:postgres:{}\n",
            cluster.port(),
            PgCluster::PASSWORD
        ),
    )
    .expect("pgpass");
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let listed = env
        .baton()
        .env("PGPASSFILE", &pgpass)
        .env_remove("PGPASSWORD")
        .args(["sessions", "list", "--json"])
        .output()
        .expect("run baton");
    assert_success(&listed);
    assert_no_password(&listed);
    assert!(stdout(&listed).contains(&thread_id));
}

/// `BATON_STORE` holds the password of a database URL: a command the model runs never gets
/// the variable, so the password reaches neither the model nor the stored lines.
#[test]
fn the_store_url_never_reaches_a_command_nor_the_model() {
    let Some(cluster) = PgCluster::start_or_skip("the_store_url_never_reaches_a_command") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let output = env
        .baton()
        .env("BATON_STORE", cluster.url())
        .args(["exec", "shell: env; echo done-listing"])
        .output()
        .expect("run baton");
    assert_success(&output);
    assert_no_password(&output);
    let answer = stdout(&output);
    // The command really ran and printed its environment.
    assert!(
        answer.contains("PATH=") && answer.contains("done-listing"),
        "{answer}"
    );
    assert!(!answer.contains("BATON_STORE"), "{answer}");
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        2,
        "the command's output went back to the model"
    );
    for request in &requests {
        assert!(
            !request.body.to_string().contains(PgCluster::PASSWORD),
            "the password reached the model: {}",
            request.body
        );
    }
    let leaked = cluster.psql(
        PgCluster::DATABASE,
        &format!(
            "SELECT count(*) FROM lines WHERE strpos(text, '{}') > 0",
            PgCluster::PASSWORD
        ),
    );
    assert_eq!(leaked, "0", "lines holding the password");
}

/// A password given in `--store` is masked in baton's command line, which any local user
/// and any command the model runs can read (`/proc/PID/cmdline`): the command below searches
/// every process's command line for it and finds nothing.
#[test]
fn a_password_in_the_store_flag_is_not_readable_in_any_command_line() {
    let Some(cluster) = PgCluster::start_or_skip("password_not_in_command_lines") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    // Built from two halves at run time, so that the command's own text does not hold it.
    let (head, tail) = PgCluster::PASSWORD.split_at(4);
    let search = format!(
        "shell: p={head}; p=${{p}}{tail}; n=0; for f in /proc/[0-9]*/cmdline; do          c=$(tr '\\0' ' ' < $f 2>/dev/null); n=$((n+1));          case \"$c\" in *\"$p\"*) echo \"FOUND in $f: $c\";; esac; done; echo \"searched $n\""
    );
    let output = env
        .baton()
        .args(["--store", &cluster.url(), "exec", &search])
        .output()
        .expect("run baton");
    assert_success(&output);
    let answer = stdout(&output);
    assert!(answer.contains("searched "), "{answer}");
    assert!(!answer.contains("FOUND"), "{answer}");
    assert_no_password(&output);
    for request in server.requests() {
        assert!(
            !request.body.to_string().contains(PgCluster::PASSWORD),
            "the password reached the model: {}",
            request.body
        );
    }
}

/// An unknown thread on PostgreSQL is reported in the words of a database, by every command.
#[test]
fn an_unknown_thread_on_postgres_names_the_database_not_session_files() {
    let Some(cluster) = PgCluster::start_or_skip("unknown_thread_on_postgres") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let url = cluster.url();
    let unknown = "01a23a0d-0000-7000-8000-000000000000";
    for args in [
        vec!["--store", url.as_str(), "sessions", "show", unknown],
        vec!["--store", url.as_str(), "exec", "resume", unknown, "hi"],
    ] {
        let output = env.run(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(unknown), "{err}");
        assert!(err.contains("in the session database postgres://"), "{err}");
        assert!(!err.contains("session files"), "{err}");
        assert_no_password(&output);
    }
}

#[test]
fn an_unreachable_database_is_a_clear_error_naming_host_and_port_not_the_password() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port")
        .port();
    let url = format!(
        "postgres://baton:{}@127.0.0.1:{port}/baton",
        PgCluster::PASSWORD
    );
    let output = env.run(&["--store", &url, "sessions", "list"]);
    assert!(!output.status.success());
    assert_no_password(&output);
    let err = stderr(&output);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn an_unknown_store_is_a_usage_error() {
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let output = env.run(&["--store", "mysql://u:hunter2@h/db", "sessions", "list"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("expected `files` or a PostgreSQL URL"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_session_exported_from_files_imports_into_postgres_and_back_byte_for_byte() {
    let Some(cluster) = PgCluster::start_or_skip("export_import_between_stores") else {
        return;
    };
    let server = ScriptedModelServer::start_blocking(default_script).expect("scripted server");
    let env = TestEnv::new(&server, Wire::Responses);
    let url = cluster.url();
    let (thread_id, _) = env.exec_ok("shell: echo moved");
    env.resume_ok(&thread_id, "and then");
    let file_transcript = std::fs::read(env.rollout_of(&thread_id)).expect("transcript");

    // files → a file → PostgreSQL.
    let exported = env.root.join("exported.jsonl");
    let exported_arg = exported.display().to_string();
    assert_success(&env.run(&["sessions", "export", &thread_id, "-o", &exported_arg]));
    assert_eq!(std::fs::read(&exported).expect("exported"), file_transcript);
    let imported = env.run(&["--store", &url, "sessions", "import", &exported_arg]);
    assert_success(&imported);
    assert_no_password(&imported);
    assert_eq!(thread_id_of(&imported), thread_id);

    // The same id again is refused, naming it.
    let again = env.run(&["--store", &url, "sessions", "import", &exported_arg]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains(&thread_id), "{}", stderr(&again));
    assert_no_password(&again);

    // Both stores show the same conversation, and PostgreSQL exports the same bytes.
    let items = |output: &Output| -> serde_json::Value {
        assert_success(output);
        let shown: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        shown["items"].clone()
    };
    let show_files = env.run(&["sessions", "show", "--json", &thread_id]);
    let show_pg = env.run(&["--store", &url, "sessions", "show", "--json", &thread_id]);
    assert_eq!(items(&show_pg), items(&show_files));
    let from_pg = env.run(&["--store", &url, "sessions", "export", &thread_id]);
    assert_success(&from_pg);
    assert_eq!(from_pg.stdout, file_transcript);

    // PostgreSQL → files on another machine (a fresh home) → resumed there.
    let other = TestEnv::new(&server, Wire::Responses);
    let back = other.root.join("back.jsonl");
    std::fs::write(&back, &from_pg.stdout).expect("write");
    assert_success(&other.run(&["sessions", "import", &back.display().to_string()]));
    assert_eq!(
        std::fs::read(other.rollout_of(&thread_id)).expect("transcript"),
        file_transcript
    );
    assert_eq!(
        other.resume_ok(&thread_id, "RECALL").trim(),
        "recall: shell: echo moved | and then (1 tool outputs)"
    );
}
