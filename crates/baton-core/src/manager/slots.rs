//! Live threads in memory: one slot per thread, whose async mutex serves calls on the thread
//! one at a time in the order they arrived, and the eviction of idle ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_protocol::ThreadId;

use super::{ThreadManager, TurnResult};
use crate::agent::LiveThread;
use crate::error::CoreError;

/// A thread's place in memory. Its async mutex serves calls on the thread one at a time, in
/// the order they arrived (tokio's mutex is fair).
pub(super) struct ThreadSlot {
    pub(super) live: tokio::sync::Mutex<Option<LiveThread>>,
    last_used: Mutex<Instant>,
}

impl ThreadManager {
    /// The slot of a thread, created if needed; forgets threads idle past the TTL.
    pub(super) fn slot(&self, id: ThreadId) -> Arc<ThreadSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        evict_idle(&mut slots, self.idle_ttl);
        let slot = slots
            .entry(id)
            .or_insert_with(|| {
                Arc::new(ThreadSlot {
                    live: tokio::sync::Mutex::new(None),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone();
        slot.touch();
        slot
    }

    /// Drops threads idle longer than `idle_thread_ttl` from memory; returns how many were
    /// dropped.
    pub fn evict_idle_threads(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let before = slots.len();
        evict_idle(&mut slots, self.idle_ttl);
        before - slots.len()
    }

    pub fn idle_thread_ttl(&self) -> Duration {
        self.idle_ttl
    }
}

impl ThreadSlot {
    /// Marks the thread as just used, so the idle clock starts when a call ends.
    pub(super) fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

/// After a failed write, memory may hold what the disk does not: drop the cached thread so
/// the next call rebuilds it from the transcript.
pub(super) fn forget_after_store_error(
    live: &mut Option<LiveThread>,
    outcome: &Result<TurnResult, CoreError>,
) {
    if matches!(outcome, Err(CoreError::Store(_))) {
        *live = None;
    }
}

fn evict_idle(slots: &mut HashMap<ThreadId, Arc<ThreadSlot>>, ttl: Duration) {
    slots.retain(|_, slot| {
        let idle = slot
            .last_used
            .lock()
            .map(|t| t.elapsed() > ttl)
            .unwrap_or(false);
        // A slot someone holds (a running or queued call) stays.
        let in_use = Arc::strong_count(slot) > 1 || slot.live.try_lock().is_err();
        !idle || in_use
    });
}
