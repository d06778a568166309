//! Tool arguments and results, with the JSON Schemas clients see in `tools/list`.
//!
//! `///` comments on fields become schema descriptions that the calling model reads.

use std::sync::Arc;

use baton_protocol::{ApprovalPolicy, SandboxMode};
use rmcp::ErrorData;
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What the commands of the session may touch.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SandboxArg {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

impl From<SandboxArg> for SandboxMode {
    fn from(arg: SandboxArg) -> Self {
        match arg {
            SandboxArg::ReadOnly => SandboxMode::ReadOnly,
            SandboxArg::WorkspaceWrite => SandboxMode::WorkspaceWrite,
            SandboxArg::DangerFullAccess => SandboxMode::DangerFullAccess,
        }
    }
}

/// When to ask the user before running a command.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ApprovalArg {
    Untrusted,
    OnRequest,
    OnFailure,
    Never,
}

impl From<ApprovalArg> for ApprovalPolicy {
    fn from(arg: ApprovalArg) -> Self {
        match arg {
            ApprovalArg::Untrusted => ApprovalPolicy::Untrusted,
            ApprovalArg::OnRequest => ApprovalPolicy::OnRequest,
            ApprovalArg::OnFailure => ApprovalPolicy::OnFailure,
            ApprovalArg::Never => ApprovalPolicy::Never,
        }
    }
}

/// Arguments of the `baton` tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub(crate) struct StartArgs {
    /// The task for the agent.
    pub prompt: String,
    /// Working directory of the session (absolute path); default: the server's directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The model to use, overriding config.toml.
    #[serde(default)]
    pub model: Option<String>,
    /// A profile from config.toml.
    #[serde(default)]
    pub profile: Option<String>,
    /// Sandbox for the commands the agent runs.
    #[serde(default)]
    pub sandbox: Option<SandboxArg>,
    /// When to ask before running a command.
    #[serde(default, rename = "approval-policy")]
    pub approval_policy: Option<ApprovalArg>,
    /// Replaces baton's built-in system instructions.
    #[serde(default, rename = "base-instructions")]
    pub base_instructions: Option<String>,
    /// Extra instructions added to the conversation as a developer message.
    #[serde(default, rename = "developer-instructions")]
    pub developer_instructions: Option<String>,
    /// Config overrides, as in config.toml (e.g. {"model_reasoning_effort": "high"}).
    #[serde(default)]
    pub config: Option<JsonObject>,
}

/// Arguments of the `baton-reply` tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplyArgs {
    /// The threadId returned by `baton` (or a Codex CLI session id). `conversationId` is accepted as an alias.
    #[serde(alias = "conversationId")]
    pub thread_id: String,
    /// The next message for the agent.
    pub prompt: String,
    /// Overrides the recorded working directory, e.g. after the project moved.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Summarize the older conversation before this turn, to free context.
    #[serde(default)]
    pub compact: bool,
}

/// Arguments of the `baton-sessions` tool.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionsArgs {
    /// Only sessions whose prompts or answers contain this text.
    #[serde(default)]
    pub query: Option<String>,
    /// Only sessions in this working directory.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Only sessions updated at or after this time (RFC 3339, e.g. 2026-11-25T00:00:00Z).
    #[serde(default)]
    pub updated_after: Option<String>,
    /// Only sessions updated before this time (RFC 3339).
    #[serde(default)]
    pub updated_before: Option<String>,
    /// At most this many sessions (default 20, at most 200).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `nextCursor` of a previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Also list the Codex CLI's sessions that baton has not continued yet (first page only).
    #[serde(default)]
    pub include_codex: bool,
}

/// Arguments of the `baton-fork` tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ForkArgs {
    /// The session to fork; it is left untouched.
    pub thread_id: String,
    /// Keep the first N turns (default: all of them).
    #[serde(default)]
    pub at_turn: Option<u32>,
}

/// `structuredContent` of `baton`, `baton-reply` and `baton-fork`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TurnOutput {
    /// Pass this to `baton-reply` to continue the session.
    pub thread_id: String,
    /// The agent's final message.
    pub content: String,
    /// Tokens this turn used, summed over its model requests, and how much of the model's
    /// context window is left (the session is compacted when it runs low).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOutput>,
    /// The agent's newest plan (it keeps one for work of several steps), if it made one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanOutput>,
}

/// `structuredContent.plan` of a turn: the steps and where the work is.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct PlanOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    pub plan: Vec<PlanStepOutput>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct PlanStepOutput {
    pub step: String,
    /// `pending`, `in_progress` or `completed`.
    pub status: String,
}

impl From<baton_protocol::Plan> for PlanOutput {
    fn from(plan: baton_protocol::Plan) -> Self {
        Self {
            explanation: plan.explanation,
            plan: plan
                .plan
                .into_iter()
                .map(|step| PlanStepOutput {
                    step: step.step,
                    status: match step.status {
                        baton_protocol::StepStatus::Pending => "pending",
                        baton_protocol::StepStatus::InProgress => "in_progress",
                        baton_protocol::StepStatus::Completed => "completed",
                    }
                    .to_owned(),
                })
                .collect(),
        }
    }
}

/// `structuredContent.usage` of a turn.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub(crate) struct UsageOutput {
    pub input_tokens: u64,
    /// Of `input_tokens`, how many the provider served from its prompt cache.
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    /// The model's context window in tokens, when known.
    pub context_window: Option<u64>,
    /// The share of the context window still free, 0 to 100, when the window is known.
    pub context_left_percent: Option<u64>,
}

/// One session in `baton-sessions`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionEntry {
    pub thread_id: String,
    pub first_prompt: Option<String>,
    pub last_message: Option<String>,
    pub cwd: String,
    pub updated_at: String,
    pub turns: u32,
    /// `baton` or `codex`.
    pub source: String,
}

/// `structuredContent` of `baton-sessions`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionsOutput {
    pub sessions: Vec<SessionEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Like rmcp's `Parameters<T>`, but malformed arguments are a JSON-RPC -32602 error rather
/// than a tool result (rmcp turns `Parameters` failures into `isError` results).
pub(crate) struct StrictParams<T>(pub T);

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for StrictParams<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let arguments = context.arguments.take().unwrap_or_default();
        serde_json::from_value(serde_json::Value::Object(arguments))
            .map(StrictParams)
            .map_err(|err| ErrorData::invalid_params(format!("invalid arguments: {err}"), None))
    }
}

/// The input schema of a tool's argument type. A type whose schema is not an object is a bug
/// caught by the `tools/list` test, not input from outside.
pub(crate) fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    rmcp::handler::server::tool::schema_for_input::<T>().unwrap_or_default()
}
