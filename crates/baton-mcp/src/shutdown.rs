//! Shutdown plumbing: notice stdin EOF at once, and SIGINT/SIGTERM.

use tokio_util::sync::CancellationToken;

use crate::tap::{ReadTap, Tapped};

/// `inner`, cancelling `on_eof` when it reports end of file.
pub(crate) fn eof_signal<R>(inner: R, on_eof: CancellationToken) -> Tapped<R, EofSignal> {
    Tapped {
        inner,
        tap: EofSignal(on_eof),
    }
}

/// Cancels its token at end of file.
pub(crate) struct EofSignal(CancellationToken);

impl ReadTap for EofSignal {
    fn observe(&mut self, _bytes: &[u8], eof: bool) {
        if eof {
            tracing::info!("stdin closed");
            self.0.cancel();
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub(crate) async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the server by closing stdin");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
