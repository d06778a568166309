//! The MCP surface of baton: tools `baton`, `baton-reply`, `baton-sessions` and `baton-fork`,
//! progress
//! notifications, cancellation, approvals through elicitation, and transcripts as resources.
//!
//! Architecture invariant: no business logic here. Every decision about threads is made by
//! `baton_core::ThreadManager`; this crate translates MCP to its calls and back.

mod args;
mod hooks;
pub mod http;
mod order;
mod oversize;
mod server;
mod shutdown;
mod tap;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use baton_core::ThreadManager;
use rmcp::service::QuitReason;
use rmcp::transport::async_rw::TransportAdapterAsyncRW;
use rmcp::transport::{IntoTransport, stdio_pipes};
use rmcp::{RoleServer, ServiceExt};
use tokio_util::sync::CancellationToken;

pub use http::{HttpOptions, serve_http};
pub use server::BatonServer;

/// Why the server stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[error("the MCP service failed: {0}")]
pub struct ServeError(String);

/// Serves MCP on stdin/stdout until stdin closes or SIGINT/SIGTERM arrives. Running turns are
/// cancelled on the way out (their child processes killed, `turn_aborted` recorded).
pub async fn serve_stdio(manager: Arc<ThreadManager>) -> Result<(), ServeError> {
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown::signal().await;
            shutdown.cancel();
        }
    });
    spawn_idle_reaper(manager.clone(), shutdown.clone());

    // Cancelling the service token the moment stdin reports EOF makes every running tool's
    // `ctx.ct` fire at once; otherwise rmcp would wait up to 5 s for in-flight handlers.
    let (stdin, stdout) = stdio_pipes();
    let (stdin, oversized) = oversize::watch(stdin);
    let transport =
        IntoTransport::<RoleServer, std::io::Error, TransportAdapterAsyncRW>::into_transport((
            shutdown::eof_signal(stdin, shutdown.clone()),
            stdout,
        ));
    let transport =
        order::OrderedTransport::new(oversize::OversizeReplies::new(transport, oversized));
    let server = BatonServer::new(manager);
    server.resume_orphaned_tasks();
    let running = match server.serve_with_ct(transport, shutdown.clone()).await {
        Ok(running) => running,
        Err(err) => {
            // EOF or a signal before any handshake is a normal way to end.
            tracing::info!("no MCP session: {err}");
            return Ok(());
        }
    };
    match running.waiting().await {
        Ok(QuitReason::JoinError(err)) => Err(ServeError(err.to_string())),
        Err(err) => Err(ServeError(err.to_string())),
        Ok(reason) => {
            tracing::info!(?reason, "MCP server stopped");
            Ok(())
        }
    }
}

/// Hands memory freed by dropped threads back to the OS; glibc otherwise keeps it in its
/// arenas and the server's RSS never shrinks after a busy hour.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Forgets idle threads even when no call arrives (memory stays bounded while the client
/// sits idle for hours).
fn spawn_idle_reaper(manager: Arc<ThreadManager>, shutdown: CancellationToken) {
    let period = manager
        .idle_thread_ttl()
        .clamp(Duration::from_millis(100), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    if manager.evict_idle_threads() > 0 {
                        release_freed_memory();
                    }
                }
            }
        }
    });
}
