use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use baton_protocol::ThreadId;
use tokio_util::sync::CancellationToken;

/// Follows a running turn: human-readable progress ("running: cargo test") and, for callers
/// that stream events (`exec --json`), each conversation item once it is on disk.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    async fn progress(&self, message: String);

    /// The turn's thread, before anything else happens.
    async fn thread_started(&self, _thread_id: ThreadId) {}

    /// An item of the conversation, after it was appended to the transcript.
    async fn item_completed(&self, _item: &baton_protocol::ResponseItem) {}
}

/// A command that needs a person's approval before it runs.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub thread_id: ThreadId,
    /// The tool call that waits for the answer.
    pub call_id: String,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalDecision {
    Approve,
    ApproveForSession,
    Deny,
}

/// Asks a person (through the MCP client) whether a command may run.
#[async_trait]
pub trait Approver: Send + Sync {
    /// `Err` carries why no answer could be had (no elicitation support, declined,
    /// cancelled); the command is then denied and the model is told this reason.
    async fn request_approval(&self, request: ApprovalRequest) -> Result<ApprovalDecision, String>;
}

/// What the caller of a turn provides besides the prompt.
#[derive(Clone, Default)]
pub struct TurnHooks {
    /// Fires to abort the turn: child processes are killed and `turn_aborted` recorded.
    pub cancel: CancellationToken,
    pub progress: Option<Arc<dyn ProgressSink>>,
    pub approver: Option<Arc<dyn Approver>>,
    /// Set for callers over the network on a server that does not allow
    /// `danger-full-access`: a command never runs outside the sandbox, approved or not.
    pub sandbox_required: bool,
    /// The durable MCP task this turn runs for: its state changes (an approval it waits for)
    /// are recorded in the transcript too.
    pub task: Option<String>,
}
