//! `baton-bench`: measures what issue 8 asks of baton (session lookup among 100 000
//! sessions, rehydration of long transcripts, MCP server start and memory, and `exec resume`
//! side by side with Codex), prints the table and writes `BENCHMARKS.md` at the repo root.
//!
//! Usage: `cargo run --release -p baton-bench [-- [stores] [--sessions N] [--no-codex] [--baton PATH]]`;
//! `stores` runs only the files-vs-PostgreSQL section (`stores.rs`) and rewrites only its part.
//! Generated stores are cached under `target/` (keyed by a version string), so reruns skip
//! the generation. Everything is measured against an in-process scripted model server.

mod codex;
mod generate;
mod lookup;
mod machine;
mod mcp;
mod process;
mod rehydrate;
mod report;
mod rng;
mod stats;
mod stores;
mod tasks;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, bail};
use baton_test_support::{ScriptedModelServer, Wire, default_script};

use crate::machine::Machine;
use crate::report::Report;

/// The environment variable the scripted provider reads its (dummy) key from.
const KEY_VAR: &str = "BATON_BENCH_API_KEY";

struct Options {
    /// `baton-bench stores`: only the files-vs-PostgreSQL section, into its part of
    /// BENCHMARKS.md.
    stores_only: bool,
    /// `baton-bench tasks`: only the durable-tasks section, printed (not written).
    tasks_only: bool,
    sessions: usize,
    codex: bool,
    baton: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(process::PEAK_RSS_COMMAND) {
        return match process::peak_rss_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("baton-bench peak RSS wrapper: {err:#}");
                ExitCode::from(1)
            }
        };
    }
    if args.first().map(String::as_str) == Some(rehydrate::CHILD_COMMAND) {
        return match rehydrate::child_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("baton-bench rehydration child: {err:#}");
                ExitCode::from(1)
            }
        };
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("baton-bench: {err:#}");
            eprintln!(
                "usage: baton-bench [stores | tasks] [--sessions N] [--no-codex] [--baton PATH]"
            );
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("baton-bench: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        stores_only: false,
        tasks_only: false,
        sessions: 100_000,
        codex: true,
        baton: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sessions" => {
                let value = args.next().context("--sessions needs a number")?;
                options.sessions = value
                    .parse()
                    .with_context(|| format!("--sessions {value}: not a number"))?;
                if options.sessions < 10 {
                    bail!("--sessions must be at least 10");
                }
            }
            "stores" => options.stores_only = true,
            "tasks" => options.tasks_only = true,
            "--no-codex" => options.codex = false,
            "--baton" => {
                options.baton = Some(PathBuf::from(args.next().context("--baton needs a path")?));
            }
            other => bail!("unexpected argument `{other}`"),
        }
    }
    Ok(options)
}

/// What every section needs: where things are, the baton binary, the model server.
pub struct Bench {
    pub repo: PathBuf,
    pub target: PathBuf,
    /// Scratch space, emptied at the start of a run.
    pub scratch: PathBuf,
    pub baton: PathBuf,
    pub sessions: usize,
    pub server: ModelServer,
}

impl Bench {
    /// `baton` with `home` as BATON_HOME, an empty CODEX_HOME unless the config names one,
    /// the dummy key, and `cwd` as working directory.
    pub fn baton(&self, home: &Path, cwd: &Path) -> Command {
        let mut command = Command::new(&self.baton);
        command
            .env("BATON_HOME", home)
            .env("CODEX_HOME", self.scratch.join("no-codex-home"))
            .env(KEY_VAR, "dummy-key-not-a-secret")
            .env_remove("RUST_LOG")
            .env_remove("OPENAI_BASE_URL")
            .current_dir(cwd);
        command
    }

    /// Writes `home/config.toml` pointing the default provider at the scripted server.
    pub fn write_config(&self, home: &Path, codex_home: Option<&Path>) -> anyhow::Result<()> {
        fs_err::create_dir_all(home)?;
        let codex_home = codex_home
            .map(|path| format!("codex_home = \"{}\"\n", path.display()))
            .unwrap_or_default();
        let config = format!(
            "model = \"{}\"\nmodel_provider = \"{}\"\napproval_policy = \"never\"\n{codex_home}\n{}env_key = \"{KEY_VAR}\"\nrequest_max_retries = 1\n",
            generate::MODEL,
            generate::PROVIDER,
            self.server
                .inner
                .provider_toml(generate::PROVIDER, Wire::Responses),
        );
        fs_err::write(home.join("config.toml"), config)?;
        Ok(())
    }
}

/// The scripted model server, also noting when each model request arrived (to time a
/// client to its first request).
pub struct ModelServer {
    pub inner: ScriptedModelServer,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl ModelServer {
    fn start() -> anyhow::Result<Self> {
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let noted = Arc::clone(&arrivals);
        let inner = ScriptedModelServer::start_blocking(move |request| {
            noted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Instant::now());
            default_script(request)
        })
        .context("start the scripted model server")?;
        Ok(Self { inner, arrivals })
    }

    /// When the first model request after `since` arrived.
    pub fn first_request_after(&self, since: Instant) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .filter(|at| *at >= since)
            .min()
    }
}

fn run(options: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .context("the repo root above crates/baton-bench")?
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"));
    let baton = match options.baton {
        Some(path) => path,
        None => build_baton(&repo, &target)?,
    };
    let scratch = target.join("bench-scratch");
    if scratch.exists() {
        fs_err::remove_dir_all(&scratch)?;
    }
    fs_err::create_dir_all(scratch.join("no-codex-home"))?;
    let bench = Bench {
        repo: repo.clone(),
        target,
        scratch,
        baton,
        sessions: options.sessions,
        server: ModelServer::start()?,
    };

    if options.stores_only {
        return run_stores(&bench, started);
    }
    if options.tasks_only {
        let mut report = Report::default();
        tasks::run(&bench, &mut report)?;
        println!("{}", report.table());
        return Ok(());
    }
    let mut report = Report::default();
    report.note(format!(
        "Peak RSS of a whole process is measured in a separate run through a small intermediate \
process (`ru_maxrss` from `wait4`); its floor on this machine (a trivial child) is {}.",
        stats::memory_kb(process::peak_rss_floor_kb()?)
    ));
    eprintln!("1. lookup among {} sessions", bench.sessions);
    lookup::run(&bench, &mut report)?;
    eprintln!("2. rehydration");
    rehydrate::run(&bench, &mut report)?;
    eprintln!("3. MCP server start and memory");
    mcp::run(&bench, &mut report)?;
    eprintln!("4. durable tasks");
    tasks::run(&bench, &mut report)?;
    eprintln!("5. side by side with Codex");
    if options.codex {
        codex::run(&bench, &mut report)?;
    } else {
        report.add(
            "codex",
            "codex exec resume vs baton exec resume",
            "—",
            "faster than codex",
            report::Verdict::Skipped,
        );
        report.note("Codex comparison skipped (--no-codex).");
    }

    let command = if bench.sessions == 100_000 {
        "cargo run --release -p baton-bench".to_owned()
    } else {
        format!(
            "cargo run --release -p baton-bench -- --sessions {}",
            bench.sessions
        )
    };
    let mut markdown = benchmarks_markdown(&bench, &report, &command, started.elapsed());
    // The stores section is written by `baton-bench stores`; a full run keeps it.
    let out = bench.repo.join("BENCHMARKS.md");
    if let Some(section) = fs_err::read_to_string(&out)
        .ok()
        .and_then(|old| stores_section(&old).map(str::to_owned))
    {
        markdown.push('\n');
        markdown.push_str(&section);
    }
    println!("{}", report.table());
    let (met, missed) = report.summary();
    println!(
        "targets met: {met}, missed: {missed}; total run time {:.0} s",
        started.elapsed().as_secs_f64()
    );
    fs_err::write(&out, markdown)?;
    println!("wrote {}", out.display());
    let _ = fs_err::remove_dir_all(&bench.scratch);
    Ok(())
}

const STORES_BEGIN: &str = "<!-- baton-bench stores: begin -->";
const STORES_END: &str = "<!-- baton-bench stores: end -->";

/// The part of BENCHMARKS.md that `baton-bench stores` writes, markers included.
fn stores_section(markdown: &str) -> Option<&str> {
    let begin = markdown.find(STORES_BEGIN)?;
    let end = markdown[begin..].find(STORES_END)? + begin + STORES_END.len();
    Some(&markdown[begin..end])
}

/// `baton-bench stores`: files and PostgreSQL side by side; replaces (or appends) its own
/// section of BENCHMARKS.md and leaves the rest as it is.
fn run_stores(bench: &Bench, started: Instant) -> anyhow::Result<()> {
    let mut report = Report::default();
    eprintln!("files and PostgreSQL, {} sessions", bench.sessions);
    stores::run(bench, &mut report)?;
    let command = if bench.sessions == 100_000 {
        "cargo run --release -p baton-bench -- stores".to_owned()
    } else {
        format!(
            "cargo run --release -p baton-bench -- stores --sessions {}",
            bench.sessions
        )
    };
    let (met, missed) = report.summary();
    let section = format!(
        "{STORES_BEGIN}\n## Files and PostgreSQL side by side\n\n\
Generated by `{command}` on {date} (commit {commit}, {took:.0} s, the machine above). \
PostgreSQL {version} is a private cluster on 127.0.0.1 started by baton-test-support's \
`PgCluster` with `fsync=on` (commits reach the disk, as the files store's `sync` does); its \
{sessions} sessions are the same generated transcripts as the files store's, loaded with \
`COPY`. Both stores run in this process through the `Store` trait; `exec resume` is the whole \
`baton [--store URL] exec resume <id> RECALL` process, spawn to exit.\n\n{table}\n\
Targets met: {met}; missed: {missed}.\n{STORES_END}",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        commit = git_commit(&bench.repo),
        took = started.elapsed().as_secs_f64(),
        version = postgres_version(),
        sessions = bench.sessions,
        table = report.table(),
    );
    println!("{}", report.table());
    println!("targets met: {met}, missed: {missed}");
    let out = bench.repo.join("BENCHMARKS.md");
    let old = fs_err::read_to_string(&out).unwrap_or_default();
    let new = match stores_section(&old) {
        Some(previous) => old.replacen(previous, &section, 1),
        None => format!("{}\n\n{section}\n", old.trim_end()),
    };
    fs_err::write(&out, new)?;
    println!("wrote {}", out.display());
    let _ = fs_err::remove_dir_all(&bench.scratch);
    Ok(())
}

/// The major version of the PostgreSQL binaries the cluster runs.
fn postgres_version() -> String {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .max()
        })
        .map_or_else(|| "?".to_owned(), |version| version.to_string())
}

fn git_commit(repo: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `cargo build --release -p baton-cli`, so the figures are always of the current source.
fn build_baton(repo: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building baton (cargo build --release -p baton-cli)…");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "baton-cli"])
        .current_dir(repo)
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p baton-cli failed");
    }
    let baton = target.join("release").join("baton");
    if !baton.is_file() {
        bail!("{} was not built", baton.display());
    }
    Ok(baton)
}

fn benchmarks_markdown(
    bench: &Bench,
    report: &Report,
    command: &str,
    took: std::time::Duration,
) -> String {
    let machine = Machine::describe();
    let commit = git_commit(&bench.repo);
    let (met, missed) = report.summary();
    let notes: String = report
        .notes
        .iter()
        .map(|note| format!("- {note}\n"))
        .collect();
    format!(
        "# Benchmarks\n\n\
Generated by `{command}` on {date} (commit {commit}, {took:.0} s). Rerun it to refresh this file.\n\n\
## Machine\n\n{machine}\n\
## How\n\n\
- All model traffic goes to baton's scripted model server (`baton-test-support`), in the\n  benchmark process, on 127.0.0.1.\n\
- Page cache warm (the generated files were just written or read); this machine is shared,\n  so figures are medians or percentiles of several runs, and ratios come from one run.\n\
- Lookup: a store of {sessions} generated transcripts (about 2.5 KB each, one turn with a\n  shell call, about 250 per day folder, UUID v7 ids matching their folders), written in the\n  byte format `RolloutWriter` writes. `locate` is the library call (`FileStore::locate`);\n  `exec resume` is the whole `baton exec resume <id> RECALL` process, spawn to exit.\n\
- Rehydration: `read_rollout` and the bare `serde_json` parse (every line into a\n  `serde_json::Value`, kept) each run in a child process, file read included in both; peak\n  memory is that child's `VmHWM`.\n\
- Server: `baton mcp-server` driven by raw JSON-RPC lines on stdin/stdout.\n\n\
## Figures\n\n{table}\n\
Targets met: {met}; missed: {missed}.\n\n\
## Notes\n\n{notes}",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine.markdown(),
        sessions = bench.sessions,
        table = report.table(),
        took = took.as_secs_f64(),
    )
}
