//! A reader that shows each read to an observer and passes every byte through unchanged: the
//! one way stdin is watched under rmcp (end of file in `shutdown.rs`, line lengths in
//! `oversize.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Looks at what each read of a [`Tapped`] reader produced.
pub(crate) trait ReadTap {
    /// `bytes` were just read; `eof`: the read had room and produced nothing (end of file).
    fn observe(&mut self, bytes: &[u8], eof: bool);
}

/// `inner`, with `tap` shown every successful read.
pub(crate) struct Tapped<R, T> {
    pub(crate) inner: R,
    pub(crate) tap: T,
}

impl<R: AsyncRead + Unpin, T: ReadTap + Unpin> AsyncRead for Tapped<R, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let read = &buf.filled()[before..];
            self.tap.observe(read, had_room && read.is_empty());
        }
        poll
    }
}
