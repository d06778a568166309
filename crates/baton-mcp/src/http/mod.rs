//! `baton mcp-server --listen`: the same MCP server over Streamable HTTP, for a team sharing
//! one server (callers with tokens, each confined to its own threads and workspace roots).
//!
//! rmcp's `StreamableHttpService` serves both eras at `/mcp` with the same `BatonServer`
//! handler as stdio. Everything a network adds is a tower layer around it, outermost first:
//! Host/Origin checks (403), bearer tokens (401, and the caller's owner for the handler),
//! the body limit (413, `body_limit.rs`), sessions bound to the owner that created them
//! (`session_owner.rs`: another owner's `Mcp-Session-Id` is a 404), and per-thread arrival order. Capacity and workspace confinement
//! are decided per call, in the handler, from the state built here.
//!
//! Architecture invariant: nothing here knows about threads; owners and roots reach
//! `baton_core` as an `Access`, which decides.

mod arrival;
mod auth;
mod body_limit;
mod metrics;
mod observe;
mod origin;
mod removed;
mod session_owner;
pub mod tokens;
mod turns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use baton_core::{Confinement, ThreadManager};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::tower::StreamableHttpService;
use tokio_util::sync::CancellationToken;

pub use auth::Caller;
pub(crate) use metrics::{Metrics, RunningTurn};
pub use observe::HttpMetrics;
pub use tokens::{TokenTable, TokensError, add_token};
pub(crate) use turns::{HttpPolicy, abort_with};

use crate::order::ArrivalOrder;
use crate::server::BatonServer;
use crate::{ServeError, shutdown, spawn_idle_reaper};

/// Everything `serve_http` needs, resolved by the binary from the command line and
/// `[server]`.
pub struct HttpOptions {
    pub listen: SocketAddr,
    pub tokens: TokenTable,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    /// Canonical directories.
    pub workspace_roots: Vec<PathBuf>,
    pub allow_danger_full_access: bool,
    pub max_request_bytes: usize,
    pub max_running_turns: usize,
    pub shutdown_grace: Duration,
    /// Also wraps the manager's model factory and store (see [`HttpMetrics`]).
    pub metrics: HttpMetrics,
}

/// Why the HTTP server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Without tokens anyone who reaches the port could run commands as this user.
    #[error(
        "refusing to listen on {0} without tokens: anyone who can reach it could run commands as you; listen on 127.0.0.1 (or ::1), or create a token first with `baton server add-token OWNER`"
    )]
    NonLoopbackWithoutTokens(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Checks the options that make the server unsafe before anything listens.
pub fn check_listen(options: &HttpOptions) -> Result<(), ListenError> {
    if options.tokens.is_empty() && !options.listen.ip().is_loopback() {
        return Err(ListenError::NonLoopbackWithoutTokens(options.listen));
    }
    Ok(())
}

/// Serves MCP over HTTP until SIGINT/SIGTERM. Prints `listening on http://HOST:PORT/mcp` on
/// stderr once connections are accepted. On a signal it stops accepting at once, lets running
/// turns finish for `shutdown_grace`, then aborts the rest (recorded as aborted).
pub async fn serve_http(
    manager: Arc<ThreadManager>,
    options: HttpOptions,
) -> Result<(), ServeError> {
    check_listen(&options).map_err(|err| ServeError(err.to_string()))?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| {
            ServeError(
                ListenError::Bind {
                    addr: options.listen,
                    source,
                }
                .to_string(),
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|err| ServeError(format!("cannot read the listening address: {err}")))?;

    let stop = CancellationToken::new();
    spawn_idle_reaper(manager.clone(), stop.clone());
    let policy = Arc::new(HttpPolicy {
        confinement: Arc::new(Confinement {
            workspace_roots: options.workspace_roots.clone(),
            allow_danger_full_access: options.allow_danger_full_access,
        }),
        turns: turns::TurnGate::new(options.max_running_turns),
        metrics: options.metrics.0.clone(),
    });
    let rmcp_stop = CancellationToken::new();
    let app = router(manager, &options, local, policy.clone(), rmcp_stop.clone());

    let serving = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    });
    eprintln!("listening on http://{local}/mcp");

    shutdown::signal().await;
    // Stop accepting at once; connections already open finish what they carry.
    stop.cancel();
    policy.turns.drain(options.shutdown_grace).await;
    // Give the last answers a moment to reach their clients, then close rmcp's streams
    // (a client's idle SSE stream would otherwise keep the server alive).
    let mut serving = serving;
    if tokio::time::timeout(Duration::from_secs(1), &mut serving)
        .await
        .is_err()
    {
        rmcp_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut serving).await;
    }
    Ok(())
}

/// `/healthz` (open) and `/mcp` behind the layers described in the module docs.
fn router(
    manager: Arc<ThreadManager>,
    options: &HttpOptions,
    local: SocketAddr,
    policy: Arc<HttpPolicy>,
    rmcp_stop: CancellationToken,
) -> Router {
    let metrics = policy.metrics.clone();
    let server = BatonServer::for_http(manager, policy);
    server.resume_orphaned_tasks();
    // Host and Origin are checked by our own layer (it knows the listener's real port), so
    // rmcp's copy of the check is off.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(options.max_request_bytes)
        .with_cancellation_token(rmcp_stop);
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let peers = Arc::new(origin::AllowedPeers::new(
        local,
        &options.allowed_hosts,
        &options.allowed_origins,
    ));
    let peers_for_metrics = peers.clone();
    let mcp_routes = Router::new()
        .route_service("/mcp", mcp)
        .layer(from_fn_with_state(
            (Arc::new(ArrivalOrder::default()), metrics.clone()),
            arrival::take_tickets,
        ))
        .layer(from_fn_with_state(
            Arc::new(session_owner::SessionOwners::default()),
            session_owner::bind_sessions,
        ))
        .layer(from_fn_with_state(
            options.max_request_bytes,
            body_limit::limit_body,
        ))
        .layer(from_fn_with_state(
            Arc::new(options.tokens.clone()),
            auth::authenticate,
        ))
        .layer(from_fn_with_state(peers, origin::check_host_and_origin));
    // /metrics is authenticated exactly like /mcp (open only where /mcp is: loopback without
    // tokens); no body limit or tickets, it has no body.
    let metrics_routes = Router::new()
        .route("/metrics", get(metrics::serve).with_state(metrics.clone()))
        .layer(from_fn_with_state(
            Arc::new(options.tokens.clone()),
            auth::authenticate,
        ))
        .layer(from_fn_with_state(
            peers_for_metrics,
            origin::check_host_and_origin,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(mcp_routes)
        .merge(metrics_routes)
        .layer(from_fn_with_state(metrics, metrics::count_requests))
}
