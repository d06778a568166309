//! Shared data types of baton: thread ids, the items of a conversation, the lines of a rollout
//! transcript and the sandbox and approval policies.
//!
//! This crate has no IO. The shapes follow Codex's rollout format so that
//! files written by either tool can be read by the other.

mod history;
mod items;
mod one_of;
mod policy;
mod provider;
mod rollout;
mod thread_id;

pub use history::{
    COMPACTION_SUMMARY_HEADER, call_output, compaction_summary_message, is_context_message,
    shorten, shorten_line, unanswered_calls, user_turn_starts,
};
pub use items::{ContentItem, ResponseItem, history_text, leading_type};
pub use policy::{
    ApprovalPolicy, EnvInherit, ParsePolicyError, SandboxMode, SandboxPolicy,
    ShellEnvironmentPolicy,
};
pub use provider::{ModelProviderInfo, WireApi};
pub use rollout::{
    BaseInstructions, Compacted, EventMsg, GitInfo, ImportedFrom, PendingApproval, Plan, PlanStep,
    RolloutItem, SessionMeta, SessionSource, StepStatus, TaskEvent, TaskState, TurnContext,
    format_timestamp,
};
pub use thread_id::{ThreadId, ThreadIdError};

/// The `originator` written into every `session_meta` baton creates.
pub const ORIGINATOR: &str = "baton";

/// The version of baton, written as `cli_version` into transcripts.
pub const CLI_VERSION: &str = env!("CARGO_PKG_VERSION");
