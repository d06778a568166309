//! Shutdown plumbing: notice stdin EOF at once, and SIGINT/SIGTERM.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::sync::CancellationToken;

/// An `AsyncRead` that cancels `on_eof` when the inner reader reports end of file.
pub(crate) struct EofSignal<R> {
    inner: R,
    on_eof: CancellationToken,
}

impl<R> EofSignal<R> {
    pub(crate) fn new(inner: R, on_eof: CancellationToken) -> Self {
        Self { inner, on_eof }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for EofSignal<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll
            && had_room
            && buf.filled().len() == before
        {
            tracing::info!("stdin closed");
            self.on_eof.cancel();
        }
        poll
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
