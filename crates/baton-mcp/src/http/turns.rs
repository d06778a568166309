//! How many turns run at once over HTTP, and how they end when the server stops.

use std::sync::Arc;
use std::time::Duration;

use baton_core::Confinement;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the tool handlers need to know about the HTTP server they run in.
pub(crate) struct HttpPolicy {
    pub confinement: Arc<Confinement>,
    pub turns: TurnGate,
    pub metrics: Arc<super::Metrics>,
}

/// At most `max` turns at once; beyond that a call is refused at once (never queued).
pub(crate) struct TurnGate {
    slots: Arc<Semaphore>,
    max: usize,
    closing: CancellationToken,
    /// Fires when the shutdown grace is over: running turns are aborted.
    abort: CancellationToken,
}

impl TurnGate {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// A slot for one turn, or the reason there is none.
    pub fn try_enter(&self) -> Result<OwnedSemaphorePermit, String> {
        if self.closing.is_cancelled() {
            return Err("the server is shutting down; try again on its successor".to_owned());
        }
        self.slots.clone().try_acquire_owned().map_err(|_| {
            format!(
                "the server is at capacity: {} turns are running (max_running_turns); try again when one has finished",
                self.max
            )
        })
    }

    /// True once the shutdown grace is over and running turns are being aborted.
    pub fn aborting(&self) -> bool {
        self.abort.is_cancelled()
    }

    pub fn abort_token(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// Refuses new turns, waits up to `grace` for the running ones, then aborts the rest
    /// and waits for them to record their abort.
    pub async fn drain(&self, grace: Duration) {
        self.closing.cancel();
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!("shutdown grace of {grace:?} is over; aborting the running turns");
        self.abort.cancel();
        // An aborted turn kills its commands and writes one line; this only bounds a hang.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.slots.acquire_many(all)).await;
    }
}

/// Cancels `turn` when `abort` fires; stops watching when the returned guard is dropped.
pub(crate) fn abort_with(
    turn: &CancellationToken,
    abort: CancellationToken,
) -> tokio_util::sync::DropGuard {
    let done = CancellationToken::new();
    let guard = done.clone().drop_guard();
    let turn = turn.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = abort.cancelled() => turn.cancel(),
            _ = done.cancelled() => {}
            _ = turn.cancelled() => {}
        }
    });
    guard
}
