//! A message over the stdio transport's line limit gets a JSON-RPC error, not silence.
//!
//! rmcp's stdio transport drops a line longer than its limit (16 MiB) with nothing but a log
//! line, and the client then waits forever for the answer. [`LineWatch`] sits under rmcp on
//! stdin, passes every byte through unchanged, and notices such a line the moment it crosses
//! the limit, reading the request id from the line's first bytes. [`OversizeReplies`] answers
//! it through rmcp's own writer, so the error never interleaves with another message.

use rmcp::RoleServer;
use rmcp::model::{ErrorData, NumberOrString, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::tap::{ReadTap, Tapped};

/// How much of a line's start is kept to read its id from.
const HEAD_BYTES: usize = 4096;

/// A line that went over the limit: the id of its request, when it could be read.
type Notice = Option<RequestId>;

/// The two halves, joined by a channel: the reader notices, the transport answers.
pub(crate) fn watch<R>(stdin: R) -> (Tapped<R, LineWatch>, mpsc::UnboundedReceiver<Notice>) {
    let (notices, received) = mpsc::unbounded_channel();
    let watch = LineWatch {
        limit: DEFAULT_MAX_LINE_LENGTH,
        line_len: 0,
        head: Vec::new(),
        reported: false,
        notices,
    };
    (
        Tapped {
            inner: stdin,
            tap: watch,
        },
        received,
    )
}

/// Measures the lines read under rmcp exactly as rmcp measures them (the newline counts).
pub(crate) struct LineWatch {
    limit: usize,
    /// Bytes of the current line so far, without its newline.
    line_len: usize,
    head: Vec<u8>,
    reported: bool,
    notices: mpsc::UnboundedSender<Notice>,
}

impl ReadTap for LineWatch {
    fn observe(&mut self, mut bytes: &[u8], _eof: bool) {
        while !bytes.is_empty() {
            let (piece, newline) = match find_newline(bytes) {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            self.line_len += piece.len();
            let room = HEAD_BYTES.saturating_sub(self.head.len());
            self.head.extend_from_slice(&piece[..piece.len().min(room)]);
            if !self.reported && self.line_len + usize::from(newline) > self.limit {
                self.reported = true;
                let _ = self.notices.send(leading_id(&self.head));
            }
            if newline {
                self.line_len = 0;
                self.head.clear();
                self.reported = false;
            }
            bytes = &bytes[piece.len() + usize::from(newline)..];
        }
    }
}

fn find_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// The value of the top-level `"id"` key of a JSON object cut anywhere, if it comes before
/// the cut (clients write `jsonrpc`, `id` and `method` before `params`).
fn leading_id(head: &[u8]) -> Option<RequestId> {
    let skip_ws = |mut at: usize| {
        while head.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    // One JSON value at `at` and where it ends; `None` if it runs into the cut.
    let value_at = |at: usize| -> Option<(Value, usize)> {
        let mut values = serde_json::Deserializer::from_slice(&head[at..]).into_iter::<Value>();
        let value = values.next()?.ok()?;
        let end = at + values.byte_offset();
        (end < head.len()).then_some((value, end))
    };
    let mut at = skip_ws(0);
    if head.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        let (key, after_key) = value_at(skip_ws(at))?;
        at = skip_ws(after_key);
        if head.get(at) != Some(&b':') {
            return None;
        }
        let (value, after_value) = value_at(skip_ws(at + 1))?;
        if key.as_str() == Some("id") {
            return match value {
                Value::Number(number) => number.as_i64().map(NumberOrString::Number),
                Value::String(text) => Some(NumberOrString::String(text.into())),
                _ => None,
            };
        }
        at = skip_ws(after_value);
        if head.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

fn too_large(limit: usize) -> ErrorData {
    ErrorData::invalid_request(
        format!(
            "request too large: this message is over the {} MiB limit for one message on stdio; \
             send less (a file path instead of the file's content)",
            limit >> 20
        ),
        None,
    )
}

/// A transport that answers the lines [`LineWatch`] noticed.
pub(crate) struct OversizeReplies<T> {
    inner: T,
    notices: mpsc::UnboundedReceiver<Notice>,
}

impl<T> OversizeReplies<T> {
    pub(crate) fn new(inner: T, notices: mpsc::UnboundedReceiver<Notice>) -> Self {
        Self { inner, notices }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for OversizeReplies<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // rmcp's `receive` keeps a partial line across cancellation, so racing it is safe.
            tokio::select! {
                message = self.inner.receive() => return message,
                Some(id) = self.notices.recv() => {
                    let reply = TxJsonRpcMessage::<RoleServer>::error(
                        too_large(DEFAULT_MAX_LINE_LENGTH),
                        id,
                    );
                    // Detached: the service loop may drop this `receive` at any await.
                    tokio::spawn(self.inner.send(reply));
                }
            }
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_read_from_the_first_bytes_of_a_cut_message() {
        let id = |text: &str| leading_id(text.as_bytes());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"#),
            Some(NumberOrString::Number(7))
        );
        assert_eq!(
            id(r#" { "id" : "a-1" , "params": {"#),
            Some(NumberOrString::String("a-1".into()))
        );
        // A nested `id` is not the request's; an id after the cut is unknown.
        assert_eq!(id(r#"{"params":{"id":3,"text":"xxxx"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","params":{"id":3},"id":4"#), None);
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","params":{"id":3},"id":4,"#),
            Some(NumberOrString::Number(4))
        );
        assert_eq!(id("not json"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn a_line_is_reported_once_when_it_crosses_the_limit_counting_its_newline() {
        let (watch, mut notices) = watch(tokio::io::empty());
        let mut watch = watch.tap;
        watch.limit = 10;
        watch.observe(b"{\"id\":1}\n", false); // 9 bytes with its newline
        watch.observe(b"123456789\n", false); // exactly 10
        assert!(notices.try_recv().is_err());
        watch.observe(b"{\"id\":2,\"x\"", false);
        watch.observe(b":1}", false);
        assert_eq!(
            notices.try_recv().ok(),
            Some(Some(NumberOrString::Number(2)))
        );
        watch.observe(b"more of the same line", false);
        assert!(notices.try_recv().is_err(), "once per line");
        watch.observe(b"\n1234567890\n", false); // 11 with its newline
        assert_eq!(notices.try_recv().ok(), Some(None));
    }
}
