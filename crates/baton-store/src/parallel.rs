//! Summarising many transcripts at once (a reindex, a listing of Codex's sessions) on a few
//! threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{ThreadSummary, summarize_rollout};

/// Summaries of `files`, in the same order; a file that cannot be read gives its reason.
pub(crate) fn summarize_in_parallel(files: &[PathBuf]) -> Vec<Result<ThreadSummary, String>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Result<ThreadSummary, String>> = files
        .iter()
        .map(|_| Err("reading it failed unexpectedly".to_owned()))
        .collect();
    let finished: Vec<(usize, Result<ThreadSummary, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = files.get(index) else {
                            break;
                        };
                        done.push((index, summarize_rollout(path).map_err(|e| e.to_string())));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    for (index, result) in finished {
        if let Some(slot) = results.get_mut(index) {
            *slot = result;
        }
    }
    results
}
