//! The tools offered to the model (`shell`, `apply_patch`, `update_plan`) and the approval
//! rules that decide whether a command runs, asks first, or is refused.
//!
//! Each tool is a type implementing [`Tool`]: its name, the spec the model sees, how its
//! arguments are parsed, and how it runs within a turn (the running itself is in `agent.rs`,
//! next to the transcript and the approval hooks it needs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_exec::{OutputCap, ShellRequest};
use baton_model::ToolSpec;
use baton_protocol::{ApprovalPolicy, Plan, ResponseItem, SandboxMode, SandboxPolicy};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::agent::Turn;
use crate::error::CoreError;

pub(crate) const SHELL_TOOL: &str = Shell::NAME;
pub(crate) const APPLY_PATCH_TOOL: &str = ApplyPatch::NAME;
pub(crate) const UPDATE_PLAN_TOOL: &str = UpdatePlan::NAME;
const DEFAULT_SHELL_TIMEOUT: Duration = Duration::from_millis(60_000);

/// Why a tool call has no ordinary result.
#[derive(Debug)]
pub(crate) enum ToolError {
    /// Goes back to the model as the call's output and the turn goes on: bad arguments, a
    /// command refused, denied or not startable, a patch that does not apply.
    ForModel(String),
    /// Ends the turn: the transcript cannot be written, or the turn was cancelled.
    EndTurn(CoreError),
}

impl ToolError {
    /// The same error, its text for the model prefixed with what was not done.
    pub fn prefixed(self, what: &str) -> Self {
        match self {
            Self::ForModel(text) => Self::ForModel(format!("{what}: {text}")),
            end => end,
        }
    }
}

impl From<CoreError> for ToolError {
    fn from(err: CoreError) -> Self {
        Self::EndTurn(err)
    }
}

/// A tool the model can call.
pub(crate) trait Tool {
    const NAME: &'static str;
    type Args: DeserializeOwned;

    /// What the model is told the tool does.
    const DESCRIPTION: &'static str;

    /// The JSON schema of [`Tool::Args`], as the model sees it.
    fn parameters() -> serde_json::Value;

    /// What the model is told about the tool with each request.
    fn spec() -> ToolSpec {
        ToolSpec {
            name: Self::NAME.to_owned(),
            description: Self::DESCRIPTION.to_owned(),
            parameters: Self::parameters(),
        }
    }

    /// The call's arguments (JSON text) as [`Tool::Args`].
    fn parse(arguments: &str) -> Result<Self::Args, ToolError> {
        parse_json(Self::NAME, arguments)
    }

    /// Runs the call within `turn`; the text is the call's output for the model.
    async fn run(turn: &mut Turn<'_>, args: Self::Args, call_id: &str)
    -> Result<String, ToolError>;
}

/// A tool's JSON arguments, or the error the model is told.
fn parse_json<T: DeserializeOwned>(tool: &str, arguments: &str) -> Result<T, ToolError> {
    serde_json::from_str(arguments)
        .map_err(|err| ToolError::ForModel(format!("invalid arguments for {tool}: {err}")))
}

/// Runs a command (argv, or a script run with `bash -lc`) under the sandbox and approval
/// policy.
pub(crate) struct Shell;
/// Edits files with a patch.
pub(crate) struct ApplyPatch;
/// Records the model's plan of the task.
pub(crate) struct UpdatePlan;

impl Tool for Shell {
    const NAME: &'static str = "shell";
    type Args = ShellArgs;

    const DESCRIPTION: &'static str = "Runs a command and returns its exit code and output (stdout and stderr, \
     capped). The command is an argv array executed directly, without a shell; \
     use [\"bash\", \"-lc\", \"…\"] for pipes, globs or redirections.";

    fn parameters() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "array", "items": {"type": "string"}, "description": "argv of the command"},
                "workdir": {"type": "string", "description": "working directory, relative to the session cwd"},
                "timeout_ms": {"type": "integer", "description": "kill the command after this many milliseconds (default 60000)"},
                "with_escalated_permissions": {"type": "boolean", "description": "ask the user to run this command outside the sandbox"},
                "justification": {"type": "string", "description": "why escalated permissions are needed"}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    fn parse(arguments: &str) -> Result<ShellArgs, ToolError> {
        let args: ShellArgs = parse_json(Self::NAME, arguments)?;
        if args.argv().is_empty() {
            return Err(ToolError::ForModel(
                "invalid arguments for shell: `command` is empty".to_owned(),
            ));
        }
        Ok(args)
    }

    async fn run(turn: &mut Turn<'_>, args: ShellArgs, call_id: &str) -> Result<String, ToolError> {
        turn.run_shell(args, call_id).await
    }
}

impl Tool for ApplyPatch {
    const NAME: &'static str = "apply_patch";
    type Args = ApplyPatchArgs;

    const DESCRIPTION: &'static str = "Edits files with a patch in this format: '*** Begin Patch', then \
     '*** Add File: path' (lines prefixed +), '*** Delete File: path', or \
     '*** Update File: path' (optionally '*** Move to: new path') followed by \
     '@@' hunks of ' ', '-', '+' lines; end with '*** End Patch'. Paths are \
     relative to the session cwd.";

    fn parameters() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {"input": {"type": "string", "description": "the whole patch"}},
            "required": ["input"],
            "additionalProperties": false
        })
    }

    async fn run(
        turn: &mut Turn<'_>,
        args: ApplyPatchArgs,
        call_id: &str,
    ) -> Result<String, ToolError> {
        turn.apply_patch(&args.input, call_id).await
    }
}

impl Tool for UpdatePlan {
    const NAME: &'static str = "update_plan";
    type Args = Plan;

    const DESCRIPTION: &'static str = "Sets the plan of the task: its steps, each pending, in_progress or \
     completed (at most one in_progress). Send the whole plan each time a \
     step starts or ends; the person following the task sees it.";

    fn parameters() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "explanation": {"type": "string", "description": "why the plan changed, if it did"},
                "plan": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "step": {"type": "string"},
                            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}
                        },
                        "required": ["step", "status"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["plan"],
            "additionalProperties": false
        })
    }

    async fn run(turn: &mut Turn<'_>, plan: Plan, _call_id: &str) -> Result<String, ToolError> {
        Ok(turn.update_plan(plan).await)
    }
}

/// The specs of every tool, in the order the model sees them.
pub(crate) fn tool_specs() -> Vec<ToolSpec> {
    vec![Shell::spec(), ApplyPatch::spec(), UpdatePlan::spec()]
}

/// The newest plan in a history: the arguments of its last valid `update_plan` call.
pub(crate) fn latest_plan(history: &[ResponseItem]) -> Option<Plan> {
    history.iter().rev().find_map(|item| match item {
        ResponseItem::FunctionCall {
            name, arguments, ..
        } if name == UPDATE_PLAN_TOOL => serde_json::from_str(arguments).ok(),
        _ => None,
    })
}

/// The `shell` tool's arguments. `command` may also be a single string, run with `bash -lc`.
#[derive(Debug, Deserialize)]
pub(crate) struct ShellArgs {
    pub command: CommandArg,
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub with_escalated_permissions: Option<bool>,
    #[serde(default)]
    pub justification: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum CommandArg {
    Argv(Vec<String>),
    Script(String),
}

impl ShellArgs {
    pub fn argv(&self) -> Vec<String> {
        match &self.command {
            CommandArg::Argv(argv) => argv.clone(),
            CommandArg::Script(script) => vec!["bash".into(), "-lc".into(), script.clone()],
        }
    }

    /// The request to run this command in the session `cwd` with the environment `env`.
    pub fn request(
        &self,
        cwd: &Path,
        sandbox: SandboxPolicy,
        env: Vec<(OsString, OsString)>,
    ) -> ShellRequest {
        let workdir = match &self.workdir {
            Some(dir) => cwd.join(dir),
            None => cwd.to_path_buf(),
        };
        ShellRequest {
            argv: self.argv(),
            cwd: workdir,
            // The sandbox is built around the session cwd, never the model's `workdir`.
            workspace: cwd.to_path_buf(),
            timeout: self
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_SHELL_TIMEOUT),
            sandbox,
            output_cap: OutputCap::default(),
            env,
            hidden_dirs: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApplyPatchArgs {
    pub input: String,
}

/// What to do with a command before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandPlan {
    /// Run it under this sandbox.
    Run(SandboxPolicy),
    /// Ask first; on approval run it under this sandbox.
    Ask {
        reason: String,
        sandbox: SandboxPolicy,
    },
    /// Do not run it; tell the model why.
    Refuse(String),
}

/// What the approval decision for one command looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandApproval<'a> {
    pub policy: ApprovalPolicy,
    pub sandbox: &'a SandboxPolicy,
    pub argv: &'a [String],
    /// The model asked to run the command outside the sandbox.
    pub wants_escalation: bool,
    /// The model's reason for the escalation, shown to the person asked.
    pub justification: Option<&'a str>,
    /// The person approved this command "for this session" earlier.
    pub approved_for_session: bool,
}

/// Codex's approval semantics: `untrusted` asks for everything not known to be safe;
/// `on-request` asks only when the model requests escalation; `on-failure` asks after a
/// sandboxed failure (see [`retry_after_failure`]); `never` never asks.
pub(crate) fn plan_command(request: &CommandApproval<'_>) -> CommandPlan {
    let sandbox = request.sandbox;
    let unsandboxed = SandboxPolicy {
        mode: SandboxMode::DangerFullAccess,
        ..sandbox.clone()
    };
    if request.wants_escalation && sandbox.mode != SandboxMode::DangerFullAccess {
        return match request.policy {
            ApprovalPolicy::Never => CommandPlan::Refuse(
                "the approval policy is `never`, so the command cannot run outside the sandbox"
                    .into(),
            ),
            _ if request.approved_for_session => CommandPlan::Run(unsandboxed),
            _ => CommandPlan::Ask {
                reason: request
                    .justification
                    .unwrap_or("the command asks to run outside the sandbox")
                    .to_owned(),
                sandbox: unsandboxed,
            },
        };
    }
    match request.policy {
        ApprovalPolicy::Untrusted
            if !request.approved_for_session
                && !baton_exec::is_known_safe_command(request.argv) =>
        {
            CommandPlan::Ask {
                reason:
                    "the approval policy is `untrusted` and this command is not known to be safe"
                        .into(),
                sandbox: sandbox.clone(),
            }
        }
        _ => CommandPlan::Run(sandbox.clone()),
    }
}

/// Under `on-failure`, a command the sandbox stopped (a refused write or connection, not any
/// non-zero exit such as a failing test) may be retried without it, if the person agrees.
pub(crate) fn retry_after_failure(
    policy: ApprovalPolicy,
    sandbox: &SandboxPolicy,
    denied_by_sandbox: bool,
) -> Option<CommandPlan> {
    if policy != ApprovalPolicy::OnFailure
        || sandbox.mode == SandboxMode::DangerFullAccess
        || !denied_by_sandbox
    {
        return None;
    }
    Some(CommandPlan::Ask {
        reason: "the command failed in the sandbox; run it again without the sandbox?".into(),
        sandbox: SandboxPolicy {
            mode: SandboxMode::DangerFullAccess,
            ..sandbox.clone()
        },
    })
}

/// The files a patch names (`*** Add File: …`, `*** Update File: …`, …), for approval
/// prompts.
pub(crate) fn patch_targets(patch: &str) -> Vec<String> {
    const HEADERS: [&str; 4] = [
        "*** Add File: ",
        "*** Update File: ",
        "*** Delete File: ",
        "*** Move to: ",
    ];
    patch
        .lines()
        .filter_map(|line| {
            HEADERS
                .iter()
                .find_map(|header| line.trim_start().strip_prefix(header))
                .map(|path| path.trim().to_owned())
        })
        .collect()
}

/// A short, human form of a command for progress messages.
pub(crate) fn describe_command(argv: &[String]) -> String {
    let text = match argv {
        [shell, flag, script] if (shell == "bash" || shell == "sh") && flag.starts_with('-') => {
            script.clone()
        }
        _ => argv.join(" "),
    };
    baton_protocol::shorten(&text, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn workspace() -> SandboxPolicy {
        SandboxPolicy::default()
    }

    /// The plan for `words` under `policy` in the default sandbox, the request first changed
    /// by `adjust` (escalation, justification, an earlier approval).
    fn plan(
        policy: ApprovalPolicy,
        words: &[&str],
        adjust: impl FnOnce(&mut CommandApproval<'_>),
    ) -> CommandPlan {
        let sandbox = workspace();
        let argv = argv(words);
        let mut request = CommandApproval {
            policy,
            sandbox: &sandbox,
            argv: &argv,
            wants_escalation: false,
            justification: None,
            approved_for_session: false,
        };
        adjust(&mut request);
        plan_command(&request)
    }

    #[test]
    fn untrusted_asks_for_unknown_commands_but_not_for_listing() {
        let rm = ["rm", "-rf", "x"];
        let plan_for = |words: &[&str]| plan(ApprovalPolicy::Untrusted, words, |_| {});
        assert!(matches!(plan_for(&rm), CommandPlan::Ask { .. }));
        assert_eq!(plan_for(&["ls", "-la"]), CommandPlan::Run(workspace()));
        let approved = plan(ApprovalPolicy::Untrusted, &rm, |request| {
            request.approved_for_session = true;
        });
        assert_eq!(approved, CommandPlan::Run(workspace()));
    }

    #[test]
    fn on_request_asks_only_for_escalation_and_never_refuses_it() {
        let touch = ["touch", "/etc/x"];
        assert_eq!(
            plan(ApprovalPolicy::OnRequest, &touch, |_| {}),
            CommandPlan::Run(workspace())
        );
        let escalate = |request: &mut CommandApproval<'_>| {
            request.wants_escalation = true;
            request.justification = Some("needs /etc");
        };
        assert!(matches!(
            plan(ApprovalPolicy::OnRequest, &touch, escalate),
            CommandPlan::Ask { reason, sandbox } if reason == "needs /etc" && sandbox.mode == SandboxMode::DangerFullAccess
        ));
        assert!(matches!(
            plan(ApprovalPolicy::Never, &touch, |request| request
                .wants_escalation =
                true),
            CommandPlan::Refuse(_)
        ));
    }

    #[test]
    fn on_failure_offers_an_unsandboxed_retry() {
        assert!(retry_after_failure(ApprovalPolicy::OnFailure, &workspace(), true).is_some());
        assert!(retry_after_failure(ApprovalPolicy::OnFailure, &workspace(), false).is_none());
        assert!(retry_after_failure(ApprovalPolicy::OnRequest, &workspace(), true).is_none());
    }

    #[test]
    fn patch_targets_lists_every_file_header() {
        let patch = "*** Begin Patch\n*** Add File: a.txt\n+x\n*** Update File: b.rs\n*** Move to: c.rs\n@@\n-x\n+y\n*** Delete File: d\n*** End Patch";
        assert_eq!(patch_targets(patch), ["a.txt", "b.rs", "c.rs", "d"]);
    }

    #[test]
    fn the_latest_valid_plan_call_is_the_plan() {
        let call = |arguments: &str| ResponseItem::FunctionCall {
            name: UPDATE_PLAN_TOOL.into(),
            arguments: arguments.into(),
            call_id: "c".into(),
        };
        let history = vec![
            call(r#"{"plan":[{"step":"old","status":"pending"}]}"#),
            call(r#"{"plan":[{"step":"new","status":"in_progress"}]}"#),
            call(r#"{"plan":"not a plan"}"#),
            ResponseItem::user_message("go on"),
        ];
        let plan = latest_plan(&history).expect("a plan");
        assert_eq!(plan.plan[0].step, "new");
        assert_eq!(latest_plan(&history[..0]), None);
    }

    #[test]
    fn shell_args_accept_argv_or_script() {
        let args: ShellArgs =
            serde_json::from_str(r#"{"command":"ls | wc -l"}"#).expect("script form");
        assert_eq!(args.argv(), argv(&["bash", "-lc", "ls | wc -l"]));
        let args: ShellArgs =
            serde_json::from_str(r#"{"command":["ls"],"workdir":"src"}"#).expect("argv form");
        let request = args.request(Path::new("/p"), workspace(), Vec::new());
        assert_eq!(request.cwd, Path::new("/p/src"));
        assert_eq!(request.timeout, DEFAULT_SHELL_TIMEOUT);
    }
}
