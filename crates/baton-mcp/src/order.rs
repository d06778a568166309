//! Calls on one thread are served in the order they arrived.
//!
//! rmcp spawns a task per request, and tokio may start those tasks in any order (a freshly
//! spawned task even runs before older ones). So the order is taken where it still exists: the
//! transport's `receive`, which rmcp calls for one message after another. Each `baton-reply`
//! gets a ticket for its thread there, carried in the request's extensions; the handler waits
//! for its ticket's turn. A ticket is released when its last copy is dropped, whether the call
//! ran, failed to parse, or was cancelled while waiting, so one bad call never blocks the next.
//!
//! Over HTTP every request is its own stream, and the order is where the server reads them:
//! the HTTP layer in `http::arrival` hands out the same tickets from one shared queue.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use baton_protocol::ThreadId;
use rmcp::RoleServer;
use rmcp::model::{ClientRequest, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::Notify;

/// The queue of `baton-reply` calls per thread.
#[derive(Default)]
pub(crate) struct ArrivalOrder {
    lines: Mutex<HashMap<ThreadId, Line>>,
    changed: Notify,
}

#[derive(Default)]
struct Line {
    next: u64,
    serving: u64,
    /// Tickets done but not yet reached by `serving`.
    released: BTreeSet<u64>,
}

impl ArrivalOrder {
    pub(crate) fn ticket(self: &Arc<Self>, thread: ThreadId) -> Ticket {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let line = lines.entry(thread).or_default();
        let number = line.next;
        line.next += 1;
        Ticket(Arc::new(TicketInner {
            order: self.clone(),
            thread,
            number,
        }))
    }

    fn is_turn(&self, thread: ThreadId, number: u64) -> bool {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.get(&thread).is_none_or(|line| line.serving == number)
    }

    fn release(&self, thread: ThreadId, number: u64) {
        {
            let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(line) = lines.get_mut(&thread) {
                line.released.insert(number);
                while line.released.remove(&line.serving) {
                    line.serving += 1;
                }
                if line.serving == line.next {
                    lines.remove(&thread);
                }
            }
        }
        self.changed.notify_waiters();
    }
}

/// A place in a thread's queue. Cloneable because request extensions must be.
#[derive(Clone)]
pub(crate) struct Ticket(Arc<TicketInner>);

struct TicketInner {
    order: Arc<ArrivalOrder>,
    thread: ThreadId,
    number: u64,
}

impl Drop for TicketInner {
    fn drop(&mut self) {
        self.order.release(self.thread, self.number);
    }
}

impl Ticket {
    /// Resolves when every earlier call on the thread is done.
    pub(crate) async fn wait_turn(&self) {
        let inner = &self.0;
        loop {
            let notified = inner.order.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release in between is not missed.
            notified.as_mut().enable();
            if inner.order.is_turn(inner.thread, inner.number) {
                return;
            }
            notified.await;
        }
    }
}

/// The thread a `tools/call` waits in line for: that of a `baton-reply` with a valid id.
pub(crate) fn reply_thread(
    tool: &str,
    arguments: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Option<ThreadId> {
    if tool != "baton-reply" {
        return None;
    }
    arguments?
        .get("threadId")
        .or_else(|| arguments?.get("conversationId"))
        .and_then(|id| id.as_str())
        .and_then(|id| ThreadId::parse(id).ok())
}

/// A transport that hands out tickets to `baton-reply` calls as they arrive.
pub(crate) struct OrderedTransport<T> {
    inner: T,
    order: Arc<ArrivalOrder>,
}

impl<T> OrderedTransport<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            order: Arc::default(),
        }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for OrderedTransport<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let mut message = self.inner.receive().await?;
        if let JsonRpcMessage::Request(request) = &mut message
            && let ClientRequest::CallToolRequest(call) = &mut request.request
            && let Some(thread) = reply_thread(&call.params.name, call.params.arguments.as_ref())
        {
            call.extensions.insert(self.order.ticket(thread));
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;

    /// Polls `future` once: whether it is still waiting, without waiting any time for it.
    fn is_waiting<F: Future>(future: std::pin::Pin<&mut F>) -> bool {
        future
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    }

    #[test]
    fn tickets_are_served_in_order_and_a_dropped_one_does_not_block() {
        let order = Arc::new(ArrivalOrder::default());
        let thread = ThreadId::new();
        let first = order.ticket(thread);
        let skipped = order.ticket(thread);
        let third = order.ticket(thread);
        {
            let mut third_turn = pin!(third.wait_turn());
            assert!(
                is_waiting(third_turn.as_mut()),
                "the third call waits for the first"
            );
            drop(skipped);
            assert!(
                is_waiting(third_turn.as_mut()),
                "a dropped second ticket does not let the third overtake the first"
            );
            assert!(!is_waiting(pin!(first.wait_turn())), "the first call runs");
            drop(first);
            assert!(
                !is_waiting(third_turn.as_mut()),
                "the third call runs once the first two are done"
            );
        }
        drop(third);
        assert!(
            order.lines.lock().expect("lock").is_empty(),
            "idle lines are forgotten"
        );
    }
}
