use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{ApprovalPolicy, ResponseItem, SandboxPolicy, ThreadId};

/// The payload of one transcript line, tagged by the line's `type`.
///
/// A line on disk is `{"timestamp": …, "type": …, "payload": …}`; the store adds the timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum RolloutItem {
    SessionMeta(Box<SessionMeta>),
    TurnContext(TurnContext),
    ResponseItem(ResponseItem),
    EventMsg(EventMsg),
    Compacted(Compacted),
}

impl RolloutItem {
    /// The `type` of the line this item is written as.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::SessionMeta(_) => "session_meta",
            Self::TurnContext(_) => "turn_context",
            Self::ResponseItem(_) => "response_item",
            Self::EventMsg(_) => "event_msg",
            Self::Compacted(_) => "compacted",
        }
    }
}

/// The first line of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub id: ThreadId,
    pub timestamp: String,
    pub cwd: PathBuf,
    #[serde(default)]
    pub originator: String,
    #[serde(default)]
    pub cli_version: String,
    #[serde(default, deserialize_with = "lenient_source")]
    pub source: SessionSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_instructions",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_instructions: Option<BaseInstructions>,
    /// Extra instructions given when the session started (the `developer-instructions`
    /// argument); sent as a developer message on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub developer_instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    /// Set when this transcript continues a session first written by another tool (Codex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<ImportedFrom>,
    /// Set when this thread was forked from another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ThreadId>,
    /// The owner of the token that started the session over HTTP; only that
    /// owner's token sees the session over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseInstructions {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedFrom {
    /// The Codex rollout file that was read.
    pub path: PathBuf,
    #[serde(default)]
    pub originator: String,
    #[serde(default)]
    pub cli_version: String,
}

/// Which surface started a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionSource {
    Exec,
    Mcp,
    Cli,
    #[default]
    #[serde(other)]
    Unknown,
}

impl SessionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Mcp => "mcp",
            Self::Cli => "cli",
            Self::Unknown => "unknown",
        }
    }
}

/// The settings a turn ran with; the last one of a transcript is what a resumed thread uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnContext {
    pub cwd: PathBuf,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_provider: Option<String>,
    #[serde(default, deserialize_with = "lenient_default")]
    pub approval_policy: ApprovalPolicy,
    #[serde(default, deserialize_with = "lenient_default")]
    pub sandbox_policy: SandboxPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
}

/// What happened, for people and UIs. Not sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventMsg {
    UserMessage {
        message: String,
    },
    AgentMessage {
        message: String,
    },
    ExecCommandEnd {
        call_id: String,
        command: Vec<String>,
        #[serde(default)]
        exit_code: i32,
        #[serde(default)]
        duration_ms: u64,
    },
    PatchApplyEnd {
        call_id: String,
        success: bool,
        #[serde(default)]
        files: Vec<String>,
    },
    /// The token usage one model response reported.
    TokenCount {
        #[serde(default)]
        input_tokens: u64,
        /// Of `input_tokens`, how many the provider served from its prompt cache.
        #[serde(default)]
        cached_input_tokens: u64,
        #[serde(default)]
        output_tokens: u64,
        #[serde(default)]
        total_tokens: u64,
    },
    /// The model's plan, as it last set it with the `update_plan` tool.
    PlanUpdate(Plan),
    TurnAborted {
        reason: String,
    },
    Error {
        message: String,
    },
    /// A change of a durable MCP task's state (the tasks extension): the task lives in the
    /// transcript of the thread whose turn it runs, so any process that can read the thread can
    /// answer for it, and continue it when the process that ran it died.
    BatonTask(Box<TaskEvent>),
    #[serde(other)]
    Other,
}

/// Where an MCP task is, as a `baton_task` event records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Working,
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// One `baton_task` event. The first one of a task (its creation) carries `tool` and `ttl_ms`;
/// later ones carry what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: String,
    pub state: TaskState,
    /// When this change happened (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// The tool whose call became the task (on creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Set when a process continued the task after the one running it died: how many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<u32>,
    /// The approval the turn waits for (`input_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<PendingApproval>,
    /// The result the call returns (`completed`), in the MCP shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the task failed (`failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskEvent {
    pub fn new(task_id: impl Into<String>, state: TaskState) -> Self {
        Self {
            task_id: task_id.into(),
            state,
            at: format_timestamp(Utc::now()),
            tool: None,
            ttl_ms: None,
            status_message: None,
            resumed: None,
            approval: None,
            result: None,
            error: None,
        }
    }
}

/// A command waiting for a person's approval, recorded so that it is asked again, the same
/// way, after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// The tool call that waits; also the key of the task's input request.
    pub call_id: String,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub reason: String,
}

/// A plan the model keeps with the `update_plan` tool: the steps of its work and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    pub plan: Vec<PlanStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    pub step: String,
    pub status: StepStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    InProgress,
    Completed,
}

impl Plan {
    /// Where the work is, in a few words: "plan 2/5: run the tests". The current step is the
    /// one in progress, else the first not completed; a finished plan says so.
    pub fn progress_line(&self) -> String {
        let total = self.plan.len();
        let current = self
            .plan
            .iter()
            .position(|s| s.status == StepStatus::InProgress)
            .or_else(|| {
                self.plan
                    .iter()
                    .position(|s| s.status != StepStatus::Completed)
            });
        match current {
            Some(index) => format!("plan {}/{total}: {}", index + 1, self.plan[index].step),
            None => format!("plan {total}/{total}: all steps completed"),
        }
    }

    /// The plan as lines for people: `[x]` completed, `[>]` in progress, `[ ]` pending.
    pub fn checklist(&self) -> String {
        let mut out = String::new();
        if let Some(explanation) = self.explanation.as_deref().filter(|e| !e.is_empty()) {
            out.push_str(explanation);
            out.push('\n');
        }
        for step in &self.plan {
            let mark = match step.status {
                StepStatus::Completed => "[x]",
                StepStatus::InProgress => "[>]",
                StepStatus::Pending => "[ ]",
            };
            out.push_str(&format!("{mark} {}\n", step.step));
        }
        out
    }
}

/// A compaction: `replacement_history` replaces everything before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compacted {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub replacement_history: Option<Vec<ResponseItem>>,
}

/// RFC 3339 in UTC with exactly three decimals, as every transcript timestamp is written.
pub fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Codex has written `source` as a string and, for sub-agents, as an object.
fn lenient_source<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SessionSource, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// `base_instructions` is `{text, provenance}` in Codex 0.153+, a plain string in older files.
fn lenient_instructions<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BaseInstructions>, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(match value {
        Value::String(text) => Some(BaseInstructions { text }),
        Value::Object(map) => match map.get("text") {
            Some(Value::String(text)) => Some(BaseInstructions { text: text.clone() }),
            _ => None,
        },
        _ => None,
    })
}

/// A value that a newer writer may spell differently falls back to the default.
fn lenient_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + serde::de::DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_have_three_decimals_and_z() {
        let time = DateTime::from_timestamp(1_764_079_331, 123_456_789).expect("valid time");
        assert_eq!(format_timestamp(time), "2025-11-25T14:02:11.123Z");
    }

    #[test]
    fn reads_codex_session_meta() {
        let meta: SessionMeta = serde_json::from_value(json!({
            "id": "019c7616-b3e9-7782-9ea8-b53e6bb09329",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "cwd": "/tmp/project",
            "originator": "codex_exec",
            "cli_version": "0.169.0",
            "source": {"subagent": "review"},
            "model_provider": "openai",
            "base_instructions": {"text": "be brief", "provenance": "default"}
        }))
        .expect("codex meta");
        assert_eq!(meta.source, SessionSource::Unknown);
        assert_eq!(
            meta.base_instructions,
            Some(BaseInstructions {
                text: "be brief".into()
            })
        );
    }

    #[test]
    fn plan_progress_names_the_current_step() {
        let step = |step: &str, status| PlanStep {
            step: step.into(),
            status,
        };
        let mut plan = Plan {
            explanation: None,
            plan: vec![
                step("read the code", StepStatus::Completed),
                step("run the tests", StepStatus::InProgress),
                step("fix", StepStatus::Pending),
                step("rerun", StepStatus::Pending),
                step("report", StepStatus::Pending),
            ],
        };
        assert_eq!(plan.progress_line(), "plan 2/5: run the tests");
        plan.plan[1].status = StepStatus::Completed;
        assert_eq!(plan.progress_line(), "plan 3/5: fix");
        for step in &mut plan.plan {
            step.status = StepStatus::Completed;
        }
        assert_eq!(plan.progress_line(), "plan 5/5: all steps completed");
        let item = RolloutItem::EventMsg(EventMsg::PlanUpdate(plan.clone()));
        let value = serde_json::to_value(&item).expect("serialize");
        assert_eq!(value["payload"]["type"], "plan_update");
        assert_eq!(value["payload"]["plan"][0]["status"], "completed");
        assert_eq!(
            serde_json::from_value::<RolloutItem>(value).expect("read back"),
            item
        );
    }

    #[test]
    fn rollout_item_is_adjacently_tagged() {
        let item = RolloutItem::EventMsg(EventMsg::TurnAborted {
            reason: "cancelled".into(),
        });
        assert_eq!(
            serde_json::to_value(&item).expect("serialize"),
            json!({"type": "event_msg", "payload": {"type": "turn_aborted", "reason": "cancelled"}})
        );
    }
}
