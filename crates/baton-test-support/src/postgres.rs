//! A private PostgreSQL cluster for one test: `initdb` and `postgres` from Debian's
//! `postgresql` package in a temporary directory, on a free `127.0.0.1` port, with its unix
//! socket inside that directory. Run as the `postgres` OS user when the tests run as root
//! (PostgreSQL refuses to run as root). Tests can stop, kill (`SIGKILL` of the whole server,
//! as when its machine dies) and restart it; dropping it kills the server and removes the
//! directory.
//!
//! Connections over TCP need the password ([`PgCluster::PASSWORD`]), so tests prove baton
//! really sends it (and never prints it); the unix socket trusts its owner, which is how the
//! helper itself creates the database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to accept connections (initdb, start, crash recovery) before a
/// test fails; generous, since CI machines are slow and shared.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// A running (or stopped) private PostgreSQL server.
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The OS user the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    /// `name=value` settings passed to `postgres` after the defaults (so they win).
    settings: Vec<String>,
    server: Option<Child>,
}

/// Why no cluster could be started.
#[derive(Debug)]
pub struct PgUnavailable(pub String);

impl std::fmt::Display for PgUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PgCluster {
    /// The password of the `postgres` role, required over TCP.
    pub const PASSWORD: &'static str = "s3cret-pg-password";
    /// The database tests use.
    pub const DATABASE: &'static str = "baton";

    /// Starts a cluster, or — when PostgreSQL is not installed and `CI` is not `true` — says
    /// on stderr that `test` was skipped and why, and returns `None`. Under `CI=true` a
    /// missing PostgreSQL fails the test: CI installs it (`.ci/run`).
    pub fn start_or_skip(test: &str) -> Option<PgCluster> {
        Self::or_skip(test, Self::start())
    }

    fn or_skip(test: &str, started: Result<PgCluster, PgUnavailable>) -> Option<PgCluster> {
        match started {
            Ok(cluster) => Some(cluster),
            Err(PgUnavailable(reason))
                if std::env::var("CI").as_deref() != Ok("true") && find_bin_dir().is_none() =>
            {
                eprintln!(
                    "SKIPPED {test}: {reason} (install Debian's `postgresql` package to run it; \
                     under CI=true this is a failure)"
                );
                None
            }
            Err(error) => panic!("could not start PostgreSQL for {test}: {error}"),
        }
    }

    /// Initialises and starts a cluster and creates [`PgCluster::DATABASE`].
    pub fn start() -> Result<PgCluster, PgUnavailable> {
        Self::start_with(&[])
    }

    /// [`PgCluster::start`] with server `settings` (`name=value`) that override the test
    /// defaults, e.g. `fsync=on` for a benchmark that must pay for durable commits.
    pub fn start_with(settings: &[&str]) -> Result<PgCluster, PgUnavailable> {
        Self::start_inner(settings, false)
    }

    /// Like [`PgCluster::start_or_skip`], with TLS on (`ssl=on`): a test CA and a server
    /// certificate for `127.0.0.1` signed by it are made with the `openssl` CLI in the
    /// cluster's directory ([`PgCluster::ca_cert`]), plus a second CA that signed nothing
    /// ([`PgCluster::other_ca_cert`]). Connections may still choose not to use TLS.
    pub fn start_with_tls_or_skip(test: &str) -> Option<PgCluster> {
        Self::or_skip(test, Self::start_inner(&[], true))
    }

    /// The CA that signed the server's certificate (after [`PgCluster::start_with_tls_or_skip`]).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.crt")
    }

    /// A CA that signed nothing this server has: a wrong root.
    pub fn other_ca_cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("other-ca.crt")
    }

    fn start_inner(settings: &[&str], tls: bool) -> Result<PgCluster, PgUnavailable> {
        let bin = find_bin_dir().ok_or_else(|| {
            PgUnavailable(
                "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin".into(),
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("baton-pg-")
            .tempdir()
            .map_err(|error| PgUnavailable(format!("could not create a temp dir: {error}")))?;
        let run_as = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, Self::PASSWORD).map_err(|error| {
            PgUnavailable(format!("could not write the password file: {error}"))
        })?;
        std::fs::create_dir(dir.path().join("socket"))
            .map_err(|error| PgUnavailable(format!("could not create the socket dir: {error}")))?;
        let mut settings: Vec<String> = settings.iter().map(|s| (*s).to_owned()).collect();
        if tls {
            let tls_dir = dir.path().join("tls");
            make_test_certificates(&tls_dir)?;
            settings.push("ssl=on".to_owned());
            settings.push(format!(
                "ssl_cert_file={}",
                tls_dir.join("server.crt").display()
            ));
            settings.push(format!(
                "ssl_key_file={}",
                tls_dir.join("server.key").display()
            ));
        }
        if let Some((uid, gid)) = run_as {
            chown_tree(dir.path(), uid, gid)?;
        }
        let mut cluster = PgCluster {
            bin,
            dir,
            port: 0,
            run_as,
            settings,
            server: None,
        };
        let data = cluster.data_dir();
        let pwfile_arg = pwfile.display().to_string();
        let data_arg = data.display().to_string();
        cluster.run_tool(
            "initdb",
            &[
                "-D",
                &data_arg,
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile",
                &pwfile_arg,
            ],
        )?;
        // A port found free may be taken by another process before postgres binds it: then
        // postgres exits, and another port is tried.
        let mut attempts = 0;
        loop {
            cluster.port = free_port()?;
            match cluster.launch() {
                Ok(()) => break,
                Err(error) if attempts < 4 && cluster.server.is_none() => {
                    attempts += 1;
                    eprintln!(
                        "PostgreSQL did not start on port {}: {error}; another port",
                        cluster.port
                    );
                }
                Err(error) => return Err(error),
            }
        }
        let socket = cluster.socket_dir().display().to_string();
        let port = cluster.port.to_string();
        cluster.run_tool(
            "createdb",
            &["-h", &socket, "-p", &port, "-U", "postgres", Self::DATABASE],
        )?;
        Ok(cluster)
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/baton`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{}",
            Self::PASSWORD,
            self.port,
            Self::DATABASE
        )
    }

    /// The URL without the password (as with `PGPASSWORD` set to [`PgCluster::PASSWORD`]).
    pub fn url_without_password(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            Self::DATABASE
        )
    }

    /// Creates another database in the cluster and returns its URL (with the password): a
    /// fresh, empty store for one test.
    pub fn create_database(&self, name: &str) -> String {
        let socket = self.socket_dir().display().to_string();
        let port = self.port.to_string();
        if let Err(error) = self.run_tool(
            "createdb",
            &["-h", &socket, "-p", &port, "-U", "postgres", name],
        ) {
            panic!("could not create database {name}: {error}");
        }
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{name}",
            Self::PASSWORD,
            self.port
        )
    }

    /// Runs `sql` with `psql` in `database` (over the unix socket) and returns its output
    /// (unaligned, tuples only); panics with psql's message if it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Loads the CSV file `csv` into `target` (`table (columns)`) with psql's `\copy`, fed on
    /// stdin, so the server user needs no access to the file: bulk data for benchmarks.
    pub fn copy_csv(&self, database: &str, target: &str, csv: &Path) -> Result<(), String> {
        let input = std::fs::File::open(csv)
            .map_err(|error| format!("could not open {}: {error}", csv.display()))?;
        let output = self
            .command("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .arg("-c")
            .arg(format!("\\copy {target} FROM pstdin WITH (FORMAT csv)"))
            .stdin(input)
            .output()
            .map_err(|error| format!("could not run psql: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psql \\copy into {target} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server cleanly (fast shutdown: open connections are closed) and waits.
    pub fn stop(&mut self) {
        self.signal_and_wait(libc::SIGINT);
    }

    /// Kills the server and every backend at once (`SIGKILL`), as when its machine dies.
    pub fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL);
    }

    /// Starts the stopped (or killed) server again on the same port and data, and waits until
    /// it accepts connections.
    pub fn restart(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
        if let Err(error) = self.launch() {
            panic!("could not restart PostgreSQL: {error}");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when it changes the user.
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path());
        command
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<(), PgUnavailable> {
        let output = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| PgUnavailable(format!("could not run {tool}: {error}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(PgUnavailable(format!(
                "{tool} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    fn launch(&mut self) -> Result<(), PgUnavailable> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir.path().join("server.log"))
            .map_err(|error| PgUnavailable(format!("could not create the server log: {error}")))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid))
                .map_err(|error| PgUnavailable(format!("could not chown the log: {error}")))?;
        }
        let log_err = log
            .try_clone()
            .map_err(|error| PgUnavailable(format!("could not open the server log: {error}")))?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            // Tests kill the server, not the machine: the page cache keeps what fsync would.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|setting| ["-c", setting]))
            // Its own process group, so `kill` reaches every backend as a machine loss would.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| PgUnavailable(format!("could not start postgres: {error}")))?;
        self.server = Some(child);
        self.wait_ready()
    }

    /// Polls `pg_isready` until the server accepts connections, the server exits, or
    /// [`READY_DEADLINE`] passes.
    fn wait_ready(&mut self) -> Result<(), PgUnavailable> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let ready = self
                .command("pg_isready")
                // Through this cluster's own socket directory: over TCP, another server that
                // holds the port (ours then failed to bind it) would answer for it.
                .arg("-q")
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string()])
                .stdin(Stdio::null())
                .status()
                .map_err(|error| PgUnavailable(format!("could not run pg_isready: {error}")))?;
            if ready.success() {
                return Ok(());
            }
            if let Some(server) = &mut self.server
                && let Ok(Some(status)) = server.try_wait()
            {
                self.server = None;
                return Err(PgUnavailable(format!(
                    "postgres exited ({status}) before accepting connections: {}",
                    self.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(PgUnavailable(format!(
                    "postgres did not accept connections within {READY_DEADLINE:?}: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn signal_and_wait(&mut self, signal: libc::c_int) {
        if let Some(mut server) = self.server.take() {
            let postmaster = server.id() as libc::pid_t;
            if signal != libc::SIGKILL {
                // SAFETY: kill(2) on the server we started; no memory is involved.
                unsafe { libc::kill(postmaster, signal) };
                let _ = server.wait();
                return;
            }
            // Every backend calls setsid(), so killing the postmaster's process group leaves
            // them running until they notice its death: an idle backend could still answer
            // (and commit) a query sent right after the "kill". Stop the postmaster so it
            // forks no more, then kill it and every child it has, and wait for all of them.
            // SAFETY: kill(2) on processes we started; no memory is involved.
            unsafe { libc::kill(postmaster, libc::SIGSTOP) };
            let children = children_of(postmaster);
            // SAFETY: as above.
            unsafe { libc::kill(-postmaster, libc::SIGKILL) };
            for &child in &children {
                // SAFETY: as above.
                unsafe { libc::kill(child, libc::SIGKILL) };
            }
            let _ = server.wait();
            let deadline = Instant::now() + READY_DEADLINE;
            while children.iter().any(|&child| is_running(child)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A test CA, a server certificate for `127.0.0.1` (and `localhost`) signed by it with its
/// key (mode 0600, as PostgreSQL requires), and a second, unrelated CA, in `dir`.
fn make_test_certificates(dir: &Path) -> Result<(), PgUnavailable> {
    std::fs::create_dir(dir)
        .map_err(|error| PgUnavailable(format!("could not create {}: {error}", dir.display())))?;
    let extensions = "basicConstraints=critical,CA:FALSE\n\
                      keyUsage=critical,digitalSignature\n\
                      extendedKeyUsage=serverAuth\n\
                      subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    std::fs::write(dir.join("server.ext"), extensions)
        .map_err(|error| PgUnavailable(format!("could not write server.ext: {error}")))?;
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 4] = [
        [
            &["req", "-x509"][..],
            &new_key,
            &["-days", "2", "-subj", "/CN=baton test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "ca.key", "-out", "ca.crt"])
        .collect(),
        [
            &["req", "-x509"][..],
            &new_key,
            &["-days", "2", "-subj", "/CN=another CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "other-ca.key", "-out", "other-ca.crt"])
        .collect(),
        [&["req"][..], &new_key, &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .into_iter()
            .chain(["-keyout", "server.key", "-out", "server.csr"])
            .collect(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    ];
    for args in steps {
        let output = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| PgUnavailable(format!("could not run openssl: {error}")))?;
        if !output.status.success() {
            return Err(PgUnavailable(format!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
    }
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|error| PgUnavailable(format!("could not chmod server.key: {error}")))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn postgres_user() -> Result<(u32, u32), PgUnavailable> {
    let id = |flag: &str| -> Result<u32, PgUnavailable> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|error| PgUnavailable(format!("could not run id: {error}")))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                PgUnavailable(
                    "running as root and there is no `postgres` OS user to run PostgreSQL as"
                        .into(),
                )
            })
    };
    Ok((id("-u")?, id("-g")?))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), PgUnavailable> {
    let failed = |error: std::io::Error| {
        PgUnavailable(format!("could not chown {}: {error}", path.display()))
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(failed)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(failed)? {
            chown_tree(&entry.map_err(failed)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A free port never handed out before in this process. Tests kill and restart clusters on
/// their port: had another test's cluster been given that port in between, a store
/// reconnecting "to the killed database" would silently reach the wrong one.
fn free_port() -> Result<u16, PgUnavailable> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .map_err(|error| PgUnavailable(format!("could not find a free port: {error}")))?;
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Err(PgUnavailable(
        "could not find a port not used before by this test process".to_owned(),
    ))
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| stat_of(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Whether `pid` still runs: it exists and is not a zombie waiting to be reaped.
fn is_running(pid: libc::pid_t) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// (state, parent pid) from /proc/PID/stat; the command name before them may hold any byte.
fn stat_of(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_takes_every_server_process_with_it() {
        let Some(mut cluster) = PgCluster::start_or_skip("postgres::tests::kill_all") else {
            return;
        };
        let postmaster = cluster.server.as_ref().map(Child::id).expect("running") as libc::pid_t;
        // A connection gets a backend of its own; the server's helpers are there already.
        let _idle = std::net::TcpStream::connect(("127.0.0.1", cluster.port())).expect("connect");
        let children = children_of(postmaster);
        assert!(!children.is_empty(), "no server processes found");
        cluster.kill();
        // Backends call setsid(): killing the postmaster's group alone left them running a
        // moment, long enough to answer a query after the "kill".
        let left: Vec<_> = children
            .into_iter()
            .filter(|&pid| is_running(pid))
            .collect();
        assert!(left.is_empty(), "still running after kill: {left:?}");
    }

    #[test]
    fn a_cluster_starts_accepts_connections_and_comes_back_after_a_kill() {
        let Some(mut cluster) = PgCluster::start_or_skip("postgres::tests::cluster") else {
            return;
        };
        let ready = |cluster: &PgCluster| {
            cluster
                .command("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &cluster.port().to_string()])
                .status()
                .expect("pg_isready")
                .success()
        };
        assert!(ready(&cluster));
        assert!(cluster.url().contains(PgCluster::PASSWORD));
        assert!(!cluster.url_without_password().contains(PgCluster::PASSWORD));
        cluster.kill();
        assert!(!ready(&cluster));
        cluster.restart();
        assert!(ready(&cluster));
        cluster.stop();
        assert!(!ready(&cluster));
        cluster.restart();
        assert!(ready(&cluster));
    }
}
