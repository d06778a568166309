//! `baton sessions …`: list, show, export, import, migrate and reindex the session store.

use std::path::PathBuf;

use baton_core::{SessionQuery, SessionSummary, ThreadManager};

use crate::out;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(crate) enum SessionsCommand {
    /// List sessions, newest update first.
    List {
        /// Only sessions whose working directory is DIR.
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// At most N sessions.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Include the Codex CLI's sessions (from `codex_home`), marked `codex`.
        #[arg(long)]
        codex: bool,
    },
    /// Print a session's conversation.
    Show {
        /// The thread id (a UUID).
        thread_id: String,
        /// Print the conversation items as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index (state.sqlite) from the session files.
    Reindex,
    /// Write one session's transcript (Codex-format JSONL, byte for byte as stored).
    Export {
        /// The thread id (a UUID).
        thread_id: String,
        /// Write to FILE instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Add a session from a transcript written by `sessions export`, under the same id
    /// (refused if this store has that id already).
    Import {
        /// The JSONL transcript.
        file: PathBuf,
    },
    /// Copy every session of the current store into another one (files to PostgreSQL or
    /// back). Safe to run again: sessions already there are skipped, and an interrupted run
    /// is finished by the next one.
    Migrate {
        /// The destination: a PostgreSQL URL (postgres://user@host:port/db, password from the
        /// URL, PGPASSWORD or ~/.pgpass), `files` (this BATON_HOME) or `files:PATH` (the
        /// BATON_HOME at PATH).
        #[arg(long, value_name = "STORE")]
        to: String,
    },
    /// Start a new session from an existing one; the source is not changed.
    Fork {
        /// The thread id (a UUID).
        thread_id: String,
        /// Keep the first N turns (default: all).
        #[arg(long, value_name = "N")]
        at_turn: Option<u32>,
    },
}

pub(crate) async fn run(manager: &ThreadManager, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            cwd,
            limit,
            json,
            codex,
        } => {
            let page = manager
                .list_sessions(SessionQuery {
                    cwd: cwd.clone(),
                    limit,
                    include_codex: codex,
                    ..Default::default()
                })
                .await?;
            if json {
                let rows: Vec<_> = page.sessions.iter().map(summary_json).collect();
                out(&serde_json::Value::Array(rows).to_string())?;
            } else if page.sessions.is_empty() {
                match &cwd {
                    Some(dir) => out(&format!("no sessions in {}", dir.display()))?,
                    None => out("no sessions yet; start one with `baton exec \"…\"` or over MCP")?,
                }
            } else {
                for session in &page.sessions {
                    out(&format!(
                        "{}  {:5}  {}  {}  {}",
                        session.id,
                        session.source.as_str(),
                        session
                            .updated_at
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M"),
                        session.cwd.display(),
                        first_line(session.first_user_message.as_deref().unwrap_or(""), 60)
                    ))?;
                }
            }
        }
        SessionsCommand::Show { thread_id, json } => {
            if json {
                let loaded = manager.read_thread(&thread_id).await?;
                out(&json!({
                    "threadId": loaded.meta.id,
                    "cwd": loaded.meta.cwd,
                    "path": loaded.path,
                    "items": loaded.history,
                })
                .to_string())?;
            } else {
                out(manager.transcript_text(&thread_id).await?.trim_end())?;
            }
        }
        SessionsCommand::Fork { thread_id, at_turn } => {
            let result = manager.fork(&thread_id, at_turn).await?;
            eprintln!("thread: {}", result.thread_id);
            out(&result.message)?;
        }
        SessionsCommand::Export { thread_id, output } => {
            let id = baton_protocol::ThreadId::parse(&thread_id)?;
            let store = manager.store().clone();
            let text = tokio::task::spawn_blocking(move || store.export_thread(id)).await??;
            match output {
                Some(path) => fs_err::write(&path, text.as_bytes())?,
                None => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
            }
        }
        SessionsCommand::Import { file } => {
            let text = fs_err::read_to_string(&file)?;
            let store = manager.store().clone();
            let id = tokio::task::spawn_blocking(move || store.import_thread(&text)).await??;
            eprintln!("thread: {id}");
            out(&format!("imported session {id} from {}", file.display()))?;
        }
        SessionsCommand::Migrate { to } => {
            let home = baton_config::find_baton_home()?;
            let source = manager.store().clone();
            let (shown, report) = tokio::task::spawn_blocking(move || {
                let (destination, shown) = crate::migrate::open_destination(&to, &home)?;
                let report =
                    crate::migrate::migrate(source.as_ref(), destination.as_ref(), &shown)?;
                anyhow::Ok((shown, report))
            })
            .await??;
            crate::migrate::summarize(&report, &shown)?;
        }
        SessionsCommand::Reindex => {
            let store = manager.store().clone();
            let report = tokio::task::spawn_blocking(move || store.reindex()).await??;
            out(&format!("indexed {} sessions", report.found))?;
            for (path, why) in &report.unreadable {
                eprintln!("could not read {}: {why}", path.display());
            }
        }
    }
    Ok(())
}

fn summary_json(session: &SessionSummary) -> serde_json::Value {
    json!({
        "id": session.id,
        "updated_at": session.updated_at.to_rfc3339(),
        "created_at": session.created_at.to_rfc3339(),
        "cwd": session.cwd,
        "first_prompt": session.first_user_message,
        "last_message": session.last_agent_message,
        "model": session.model,
        "turns": session.turns,
        "source": session.source.as_str(),
        "path": session.path,
    })
}

/// The first line of `text`, shortened for a one-line listing.
fn first_line(text: &str, max: usize) -> String {
    baton_protocol::shorten(text.lines().next().unwrap_or(""), max)
}
