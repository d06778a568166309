//! The store's own tokio runtime and a small pool of connections on it.
//!
//! A pool of our own, not deadpool: the store needs only "take an idle connection that is
//! still open, or open one", a cap on idle connections, and a connection a lock guard can
//! keep for a whole turn; that is a few lines, and it keeps the dependency tree to
//! tokio-postgres alone. A connection whose server went away (restart, kill) is noticed by
//! `Client::is_closed` and never handed out again, so the store recovers by itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use crate::OpError;
use crate::tls::MakeRustlsConnect;

/// Connections kept open while idle; more are opened on demand and closed when returned.
/// Every running turn holds one for its lock, so a server running dozens of turns at once
/// would otherwise open (TCP, authentication, a server process) and close one per turn; 32
/// keeps two servers' idle connections under PostgreSQL's default `max_connections` (100).
const MAX_IDLE: usize = 32;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A multi-thread runtime owned by the store. Dropped with `shutdown_background`, which is
/// allowed anywhere (dropping a runtime inside another's async context would panic).
pub struct Runtime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("baton-store-pg")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Starts `future` on the runtime without waiting for it. `None` if the runtime is gone.
    pub fn spawn<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<T>> {
        Some(self.runtime.as_ref()?.spawn(future))
    }

    /// Runs `future` on the runtime and waits for its output on a channel: callable from any
    /// thread, inside another runtime or not. `None` if the runtime is gone.
    pub fn block_on<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let runtime = self.runtime.as_ref()?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(future.await);
        });
        receiver.recv().ok()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub struct Pool {
    config: Config,
    /// TLS when the URL asks for it (`sslmode=require`, `verify-ca`, `verify-full`).
    tls: Option<MakeRustlsConnect>,
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    pub fn new(config: Config, tls: Option<MakeRustlsConnect>) -> Self {
        Self {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that is still open, or a new one. Must run on the store's runtime.
    pub async fn get(&self) -> Result<Client, OpError> {
        loop {
            let client = lock(&self.idle).pop();
            match client {
                Some(client) if !client.is_closed() => return Ok(client),
                Some(_) => continue,
                None => return self.connect().await,
            }
        }
    }

    /// A new connection, its IO driven by a task on the current runtime. The URL's
    /// `connect_timeout` bounds the whole start (TCP, TLS, authentication, the server's
    /// start-up), not only the TCP connect as in tokio-postgres: a server that accepts and
    /// never answers would otherwise hang the call for good.
    pub async fn connect(&self) -> Result<Client, OpError> {
        let deadline = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        match tokio::time::timeout(deadline, self.connect_unbounded()).await {
            Ok(connected) => Ok(connected?),
            Err(_) => Err(OpError::Unanswered(deadline)),
        }
    }

    async fn connect_unbounded(&self) -> Result<Client, tokio_postgres::Error> {
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                client
            }
        };
        Ok(client)
    }

    /// Gives a connection back for reuse (or closes it, when enough are idle or it is dead).
    pub fn put(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }
}

/// Runs a connection's IO until it ends.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(error) = connection.await {
        tracing::debug!("a database connection ended: {error}");
    }
}

/// Locks `mutex`, also after a thread panicked holding it (its data stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
