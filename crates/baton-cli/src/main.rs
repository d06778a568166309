//! The `baton` binary: command-line parsing, logging, and how errors are shown to a person.
//! Everything else lives in the library crates.

mod command_line;
mod migrate;
mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use baton_config::{ConfigOverrides, parse_cli_override};
use baton_core::{
    CoreError, ErrorKind, HttpModelClientFactory, ReplyToThread, StartThread, ThreadManager,
    ThreadManagerOptions, TurnHooks, TurnResult,
};
use baton_protocol::SessionSource;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "A coding agent served over MCP, whose sessions are never lost",
    long_about = "baton is a coding agent that other agents drive over MCP (`baton mcp-server`). \
Its sessions live in JSONL transcripts under BATON_HOME (default ~/.baton); any baton process \
continues any session by its id, at any later time."
)]
struct Cli {
    /// Override a config.toml value: `-c key=value`, the value in TOML syntax (repeatable).
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE", global = false)]
    config: Vec<String>,
    /// The model to use, overriding config.toml.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// A `[profiles.<name>]` of config.toml to apply.
    #[arg(long, short = 'p')]
    profile: Option<String>,
    /// Where sessions live: `files` (under BATON_HOME, the default) or a PostgreSQL URL
    /// (`postgres://user@host:port/db`, password from the URL or PGPASSWORD). Overrides
    /// BATON_STORE and `store` in config.toml.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve baton over MCP on stdio (tools baton, baton-reply, baton-sessions, baton-fork),
    /// or over Streamable HTTP with `--listen`.
    McpServer(McpServerArgs),
    /// Run one turn of a new session, or continue one with `exec resume`.
    Exec(ExecArgs),
    /// List, show, fork and reindex sessions.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Sandbox tools.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Manage the HTTP server's access tokens.
    #[command(subcommand)]
    Server(ServerCommand),
}

#[derive(Debug, Args)]
struct McpServerArgs {
    /// Serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio (port 0 picks a free
    /// one). Without tokens only loopback addresses are allowed.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Create an access token for OWNER: printed once on stdout; only its hash is stored in
    /// the tokens file (`[server] tokens_file`, default $BATON_HOME/tokens).
    AddToken {
        /// Who the token belongs to; sessions started with it are visible only to this owner.
        owner: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct ExecArgs {
    #[command(subcommand)]
    resume: Option<ExecCommand>,
    /// What to ask the agent.
    #[arg(required = true)]
    prompt: Option<String>,
    #[command(flatten)]
    options: ExecOptions,
}

#[derive(Debug, Args)]
struct ExecOptions {
    /// Working directory of the session (default: the current directory; for `resume`, the
    /// recorded one).
    #[arg(long = "cd", short = 'C', value_name = "DIR")]
    cd: Option<PathBuf>,
    /// Print JSONL events on stdout instead of the final message only.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ExecCommand {
    /// Run one more turn of an existing session (baton's or the Codex CLI's).
    Resume {
        /// The thread id (a UUID), as printed by `baton exec` or `baton sessions list`.
        thread_id: String,
        /// What to ask the agent.
        prompt: String,
        /// Summarize the older conversation before this turn (compaction).
        #[arg(long)]
        compact: bool,
        #[command(flatten)]
        options: ExecOptions,
    },
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// Print what this machine can enforce.
    Check,
}

/// An error that is the user's input at fault: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    command_line::hide_database_passwords();
    init_logging(matches!(cli.command, Command::McpServer(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Don't wait for lingering blocking tasks (a stuck read of stdin) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(exit_status(&err))
        }
    }
}

/// Logs go to stderr. The server logs warnings (its stderr is the client's log file) but not
/// rmcp's dump of every error response it sends; a command a person runs keeps stderr to the
/// one line that says what went wrong. `RUST_LOG` overrides both.
fn init_logging(server: bool) {
    let default = if server { "warn,rmcp=error" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal; MCP clients keep stderr in log files.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = global_overrides(&cli)?;
    let store = cli.store.clone();
    let store = store.as_deref();
    match cli.command {
        Command::McpServer(McpServerArgs { listen: None }) => {
            let manager = manager(store, overrides, SessionSource::Mcp)?;
            baton_mcp::serve_stdio(manager).await?;
            Ok(())
        }
        Command::McpServer(McpServerArgs {
            listen: Some(listen),
        }) => {
            // Built first: it also times the manager's model requests and store operations.
            let metrics = baton_mcp::http::HttpMetrics::default();
            let manager = observed_manager(store, overrides, &metrics)?;
            let options = http_options(&manager, &listen, metrics).await?;
            baton_mcp::serve_http(manager, options).await?;
            Ok(())
        }
        Command::Server(ServerCommand::AddToken { owner }) => {
            let home = baton_config::find_baton_home()?;
            let config = baton_config::Config::load(&home, &overrides)?;
            let path = &config.server.tokens_file;
            let token = baton_mcp::http::add_token(path, &owner).map_err(|err| match err {
                baton_mcp::http::TokensError::InvalidOwner(_) => {
                    anyhow::Error::new(UsageError(err.to_string()))
                }
                err => err.into(),
            })?;
            out(&token)?;
            eprintln!(
                "added a token for {owner} to {}; it is shown only now: give it to {owner} and keep it secret",
                path.display()
            );
            Ok(())
        }
        Command::Exec(args) => exec(store, overrides, args).await,
        Command::Sessions(command) => {
            let manager = manager(store, overrides, SessionSource::Exec)?;
            sessions::run(&manager, command).await
        }
        Command::Sandbox(SandboxCommand::Check) => {
            out(&baton_exec::sandbox_capabilities().to_string())
        }
    }
}

/// The HTTP server's settings: `--listen` and `[server]` in config.toml.
async fn http_options(
    manager: &ThreadManager,
    listen: &str,
    metrics: baton_mcp::http::HttpMetrics,
) -> anyhow::Result<baton_mcp::HttpOptions> {
    let listen_addr = tokio::net::lookup_host(listen)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            UsageError(format!(
                "--listen {listen}: expected HOST:PORT, e.g. 127.0.0.1:8080 (port 0 picks a free one)"
            ))
        })?;
    let server = manager.config(None)?.server;
    let tokens = baton_mcp::http::TokenTable::load(&server.tokens_file)?;
    let roots = match server.workspace_roots {
        Some(roots) => roots,
        None => vec![std::env::current_dir().context("cannot read the current directory")?],
    };
    let mut workspace_roots = Vec::new();
    for root in roots {
        workspace_roots.push(std::fs::canonicalize(&root).map_err(|err| {
            UsageError(format!(
                "workspace root {} under [server] cannot be used: {err}",
                root.display()
            ))
        })?);
    }
    let options = baton_mcp::HttpOptions {
        listen: listen_addr,
        tokens,
        allowed_hosts: server.allowed_hosts,
        allowed_origins: server.allowed_origins,
        workspace_roots,
        allow_danger_full_access: server.allow_danger_full_access,
        max_request_bytes: server.max_request_bytes,
        max_running_turns: server.max_running_turns,
        shutdown_grace: server.shutdown_grace,
        metrics,
    };
    baton_mcp::http::check_listen(&options).map_err(|err| UsageError(err.to_string()))?;
    Ok(options)
}

fn global_overrides(cli: &Cli) -> anyhow::Result<ConfigOverrides> {
    let mut values = Vec::new();
    for text in &cli.config {
        values.push(parse_cli_override(text).map_err(|msg| UsageError(format!("-c {msg}")))?);
    }
    Ok(ConfigOverrides {
        values,
        profile: cli.profile.clone(),
        model: cli.model.clone(),
        ..Default::default()
    })
}

fn manager(
    store: Option<&str>,
    overrides: ConfigOverrides,
    source: SessionSource,
) -> anyhow::Result<Arc<ThreadManager>> {
    let home = baton_config::find_baton_home()?;
    let serving = source == SessionSource::Mcp;
    let store = open_store(store, &home, &overrides, serving)?;
    let options = ThreadManagerOptions {
        home,
        overrides,
        source,
    };
    let models = Arc::new(HttpModelClientFactory::default());
    let manager = match store {
        Some(store) => ThreadManager::with_store(options, models, store)?,
        None => ThreadManager::new(options, models)?,
    };
    Ok(Arc::new(manager))
}

/// The HTTP server's manager: its model factory and store wrapped by `metrics`.
fn observed_manager(
    store: Option<&str>,
    overrides: ConfigOverrides,
    metrics: &baton_mcp::http::HttpMetrics,
) -> anyhow::Result<Arc<ThreadManager>> {
    let home = baton_config::find_baton_home()?;
    let store = match open_store(store, &home, &overrides, true)? {
        Some(store) => store,
        None => Arc::new(baton_store::FileStore::open(&home)?),
    };
    let manager = ThreadManager::with_store(
        ThreadManagerOptions {
            home,
            overrides,
            source: SessionSource::Mcp,
        },
        metrics.models(Arc::new(HttpModelClientFactory::default())),
        metrics.store(store),
    )?;
    Ok(Arc::new(manager))
}

/// The store `--store`, else `BATON_STORE`, else config.toml's `store` names; `None` for the
/// default files store under BATON_HOME. A server (`serving`) starts even while PostgreSQL
/// cannot be reached, and its calls reach the database once it is back.
fn open_store(
    flag: Option<&str>,
    home: &std::path::Path,
    overrides: &ConfigOverrides,
    serving: bool,
) -> anyhow::Result<Option<Arc<dyn baton_store::Store>>> {
    let from_env = std::env::var(baton_config::STORE_ENV)
        .ok()
        .filter(|value| !value.is_empty());
    let chosen = match flag.map(str::to_owned).or(from_env) {
        Some(chosen) => chosen,
        None => baton_config::Config::load(home, overrides)?.store,
    };
    if chosen == "files" {
        return Ok(None);
    }
    if baton_store::is_database_url(&chosen) {
        let store = if serving {
            baton_store_pg::PgStore::open_for_server(&chosen)?
        } else {
            baton_store_pg::PgStore::open_in_background(&chosen)?
        };
        return Ok(Some(Arc::new(store)));
    }
    Err(UsageError(format!(
        "store `{}`: expected `files` or a PostgreSQL URL (postgres://user@host:port/db)",
        baton_store_pg::redact_url(&chosen)
    ))
    .into())
}

async fn exec(
    store: Option<&str>,
    overrides: ConfigOverrides,
    args: ExecArgs,
) -> anyhow::Result<()> {
    let manager = manager(store, overrides, SessionSource::Exec)?;
    let json = match &args.resume {
        Some(ExecCommand::Resume { options, .. }) => options.json,
        None => args.options.json,
    };
    let observer = Arc::new(ExecObserver {
        json,
        announced: std::sync::atomic::AtomicBool::new(false),
    });
    let (options, outcome) = match args.resume {
        Some(ExecCommand::Resume {
            thread_id,
            prompt,
            compact,
            options,
        }) => {
            let hooks = hooks(observer.clone());
            let request = ReplyToThread {
                thread_id,
                prompt,
                cwd: options.cd.clone(),
                compact,
                access: Default::default(),
            };
            let outcome = manager.reply(request, hooks).await;
            (options, outcome)
        }
        None => {
            let options = args.options;
            let prompt = args
                .prompt
                .context("a prompt is required: baton exec \"what to do\"")?;
            let request = StartThread {
                prompt,
                cwd: options.cd.clone(),
                ..Default::default()
            };
            let outcome = manager.start_thread(request, hooks(observer.clone())).await;
            (options, outcome)
        }
    };
    let TurnResult {
        thread_id,
        message,
        usage,
        plan,
    } = match outcome {
        Ok(result) => result,
        Err(err) => {
            // The thread exists (its first turn failed): say which, as on success.
            if let CoreError::FirstTurnFailed { id, .. } = &err {
                observer.announce(*id);
            }
            if options.json {
                print_event(
                    serde_json::json!({"type": "turn.failed", "error": {"message": err.to_string()}}),
                );
            }
            return Err(err.into());
        }
    };
    observer.announce(thread_id);
    if options.json {
        print_event(
            serde_json::json!({"type": "turn.completed", "thread_id": thread_id, "message": message,
                "usage": usage, "plan": plan}),
        );
    } else {
        out(&message)?;
    }
    Ok(())
}

/// Ctrl-C cancels the turn cleanly (the transcript records the abort).
fn hooks(observer: Arc<ExecObserver>) -> TurnHooks {
    let hooks = TurnHooks {
        progress: Some(observer as Arc<dyn baton_core::ProgressSink>),
        ..Default::default()
    };
    let cancel = hooks.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    hooks
}

/// Follows an `exec` turn: `thread: <id>` on stderr as soon as the thread is known (so a
/// person who interrupts a long turn still has the id), and with `--json` the turn as JSONL
/// events: `thread.started`, `progress`, `item.completed` (the item as recorded), then
/// `turn.completed` or `turn.failed`.
struct ExecObserver {
    json: bool,
    announced: std::sync::atomic::AtomicBool,
}

impl ExecObserver {
    /// Prints `thread: <id>` once.
    fn announce(&self, thread_id: baton_protocol::ThreadId) {
        if !self
            .announced
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            eprintln!("thread: {thread_id}");
        }
    }
}

#[async_trait::async_trait]
impl baton_core::ProgressSink for ExecObserver {
    async fn progress(&self, message: String) {
        if self.json {
            print_event(serde_json::json!({"type": "progress", "message": message}));
        }
    }

    async fn thread_started(&self, thread_id: baton_protocol::ThreadId) {
        self.announce(thread_id);
        if self.json {
            print_event(serde_json::json!({"type": "thread.started", "thread_id": thread_id}));
        }
    }

    async fn item_completed(&self, item: &baton_protocol::ResponseItem) {
        if self.json {
            print_event(serde_json::json!({"type": "item.completed", "item": item}));
        }
    }
}

fn print_event(event: serde_json::Value) {
    let _ = out(&event.to_string());
}

/// stdout closed by its reader (`baton sessions list | head -1`): stop quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
struct StdoutClosed;

/// Writes one line to stdout; a closed pipe is [`StdoutClosed`], not a panic.
pub(crate) fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}

fn one_line(err: &anyhow::Error) -> String {
    err.to_string().replace('\n', " ")
}

/// 2 for input the user must fix (a broken config, a bad flag), 1 for everything else.
fn exit_status(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<baton_config::ConfigError>().is_some()
        || err.downcast_ref::<baton_mcp::http::TokensError>().is_some()
        || err
            .downcast_ref::<CoreError>()
            .is_some_and(|core| core.kind() == ErrorKind::Config)
    {
        2
    } else {
        1
    }
}
