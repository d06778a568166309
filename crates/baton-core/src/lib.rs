//! The agent loop and the thread manager.
//!
//! A [`ThreadManager`] starts threads and continues them by id. Memory is only a cache of the
//! store: a thread not in memory is found through the store (index, then files, then Codex's
//! home), rehydrated from its transcript, and continued with the same id. Every item of a turn
//! is appended to the transcript before anything depends on it.

mod access;
mod agent;
mod codex_import;
mod compact;
mod error;
mod hooks;
mod manager;
mod project_doc;
mod redact;
mod tasks;
mod tools;
mod usage;

pub use access::{Access, Confinement};
pub use error::{CoreError, ErrorKind};
pub use hooks::{ApprovalDecision, ApprovalRequest, Approver, ProgressSink, TurnHooks};
pub use manager::{
    HttpModelClientFactory, ModelClientFactory, ReplyToThread, SessionPage, SessionQuery,
    SessionSummary, StartThread, TaskLookup, TaskSetup, ThreadManager, ThreadManagerOptions,
    TurnResult,
};
pub use tasks::{MAX_RESUMPTIONS, RenderResult, TaskId, TaskView};
pub use usage::TurnUsage;
