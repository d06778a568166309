//! One turn of the agent: the user's prompt, then model requests and tool calls until the
//! model answers without calling a tool.
//!
//! Write order (SPEC §7): every item is appended to the transcript when it is complete and
//! before anything depends on it; the file is fsynced after each tool output and at the end.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use baton_model::{ModelClient, ModelRequest};
use baton_protocol::{
    ApprovalPolicy, Compacted, EventMsg, ResponseItem, RolloutItem, SandboxMode, SandboxPolicy,
    SessionMeta, ThreadId, TurnContext,
};
use baton_store::RolloutWriter;

use crate::compact;
use crate::error::CoreError;
use crate::hooks::{ApprovalDecision, ApprovalRequest, TurnHooks};
use crate::tools::{self, APPLY_PATCH_TOOL, ApplyPatchArgs, CommandPlan, SHELL_TOOL, ShellArgs};

/// Runs blocking IO (fsync, file locks) on the current thread, first letting the runtime move
/// its other tasks to another worker when it can, so one slow disk does not stall the server.
pub(crate) fn blocking_section<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The serialized size of the tool specs sent with each request, for token estimates.
const TOOL_SPECS_BYTES: u64 = 2_000;

/// A model that keeps calling tools forever is stopped after this many requests in one turn.
const MAX_MODEL_REQUESTS_PER_TURN: usize = 256;

const DEFAULT_BASE_INSTRUCTIONS: &str = "You are baton, a coding agent. You work in the user's \
project through two tools: `shell` runs commands, `apply_patch` edits files. Inspect before you \
change, keep changes small and focused, run the project's checks when you can, and finish with a \
short answer that says what you did and what remains.";

/// The settings a thread's turns run with; recorded in each `turn_context` line.
#[derive(Debug, Clone)]
pub(crate) struct ThreadSettings {
    pub cwd: PathBuf,
    pub model: String,
    pub provider_id: String,
    pub approval_policy: ApprovalPolicy,
    pub sandbox: SandboxPolicy,
    pub effort: Option<String>,
}

/// An approval "for this session" covers the same command run the same way: approving a
/// sandboxed run does not approve running it outside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ApprovalKey {
    pub command: Vec<String>,
    pub unsandboxed: bool,
}

/// What a command run gives back to the loop.
struct ExecOutcome {
    text: String,
    /// It failed in a way the sandbox causes (a refused write or socket).
    denied_by_sandbox: bool,
}

/// A thread held in memory: a cache of its transcript.
pub(crate) struct LiveThread {
    pub id: ThreadId,
    pub path: PathBuf,
    pub meta: SessionMeta,
    pub settings: ThreadSettings,
    pub history: Vec<ResponseItem>,
    /// Bytes of the transcript this process has seen; a longer file means another process
    /// appended and the cache must be re-read before the next turn.
    pub file_len: u64,
    /// What the person approved "for this session".
    pub approved_commands: HashSet<ApprovalKey>,
}

impl LiveThread {
    pub fn instructions(&self) -> String {
        let base = self
            .meta
            .base_instructions
            .as_ref()
            .map(|b| b.text.as_str())
            .unwrap_or(DEFAULT_BASE_INSTRUCTIONS);
        format!(
            "{base}\n\n<environment>\ncwd: {}\nsandbox: {}\napproval policy: {}\n</environment>",
            self.settings.cwd.display(),
            self.settings.sandbox.mode,
            self.settings.approval_policy,
        )
    }
}

impl ThreadSettings {
    /// These settings as a `turn_context` line.
    pub fn turn_context(&self) -> TurnContext {
        TurnContext {
            cwd: self.cwd.clone(),
            model: self.model.clone(),
            model_provider: Some(self.provider_id.clone()),
            approval_policy: self.approval_policy,
            sandbox_policy: self.sandbox.clone(),
            effort: self.effort.clone(),
        }
    }
}

pub(crate) fn default_base_instructions() -> &'static str {
    DEFAULT_BASE_INSTRUCTIONS
}

/// Runs one turn and returns the final agent message.
pub(crate) struct Turn<'a> {
    pub thread: &'a mut LiveThread,
    pub writer: &'a mut RolloutWriter,
    pub model: Arc<dyn ModelClient>,
    pub hooks: &'a TurnHooks,
    /// Compact before a request estimated at this many tokens or more; `None`: only when the
    /// provider reports that the context length was exceeded.
    pub compact_limit: Option<u64>,
    /// Compact before the prompt, whatever the size (`exec resume --compact`).
    pub compact_first: bool,
    /// Items recorded but not yet passed to the progress sink.
    pub unreported: usize,
}

impl Turn<'_> {
    pub async fn run(mut self, prompt: &str) -> Result<String, CoreError> {
        if let Some(sink) = &self.hooks.progress {
            sink.thread_started(self.thread.id).await;
        }
        self.progress("turn started").await;
        let context = self.thread.settings.turn_context();
        self.append(RolloutItem::TurnContext(context))?;
        self.record(ResponseItem::user_message(prompt))?;
        self.append(RolloutItem::EventMsg(EventMsg::UserMessage {
            message: prompt.to_owned(),
        }))?;
        self.sync()?;
        self.report_items().await;

        let result = match self.compact_first {
            true => match self.compact().await {
                Ok(()) => self.model_loop().await,
                Err(err) => Err(err),
            },
            false => self.model_loop().await,
        };
        match &result {
            Ok(message) => {
                self.append(RolloutItem::EventMsg(EventMsg::AgentMessage {
                    message: message.clone(),
                }))?;
            }
            Err(CoreError::Cancelled) => {
                self.close_dangling_calls(
                    "aborted: the turn was cancelled before this call finished",
                )?;
                self.append(RolloutItem::EventMsg(EventMsg::TurnAborted {
                    reason: "cancelled".into(),
                }))?;
            }
            Err(err) => {
                self.append(RolloutItem::EventMsg(EventMsg::Error {
                    message: err.to_string(),
                }))?;
            }
        }
        self.sync()?;
        self.thread.file_len = self.writer.len();
        result
    }

    async fn model_loop(&mut self) -> Result<String, CoreError> {
        let tools = tools::tool_specs();
        let mut compacted_after_overflow = false;
        for _ in 0..MAX_MODEL_REQUESTS_PER_TURN {
            if let Some(limit) = self.compact_limit
                && self.estimated_request_tokens() >= limit
            {
                self.compact().await?;
            }
            let request = ModelRequest {
                model: self.thread.settings.model.clone(),
                instructions: self.thread.instructions(),
                input: self.thread.history.clone(),
                tools: tools.clone(),
                reasoning_effort: self.thread.settings.effort.clone(),
            };
            let response = tokio::select! {
                biased;
                _ = self.hooks.cancel.cancelled() => return Err(CoreError::Cancelled),
                response = self.model.complete(&request) => response,
            };
            let response = match response {
                Ok(response) => response,
                // One compaction and one retry instead of a dead session.
                Err(err) if err.is_context_length_exceeded() && !compacted_after_overflow => {
                    tracing::info!(thread = %self.thread.id, "context length exceeded; compacting");
                    compacted_after_overflow = true;
                    self.compact().await?;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            if let Some(usage) = &response.usage {
                self.append(RolloutItem::EventMsg(EventMsg::TokenCount {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    total_tokens: usage.total_tokens,
                }))?;
            }
            let mut calls = Vec::new();
            let mut final_message = String::new();
            for item in response.items {
                match &item {
                    ResponseItem::FunctionCall {
                        name,
                        arguments,
                        call_id,
                    } => calls.push((name.clone(), arguments.clone(), call_id.clone())),
                    ResponseItem::Message { role, .. } if role == "assistant" => {
                        if let Some((_, text)) = item.message_text() {
                            final_message = text;
                        }
                    }
                    _ => {}
                }
                self.record(item)?;
            }
            self.report_items().await;
            if calls.is_empty() {
                return Ok(final_message);
            }
            for (name, arguments, call_id) in calls {
                if self.hooks.cancel.is_cancelled() {
                    return Err(CoreError::Cancelled);
                }
                let output = self.run_tool(&name, &arguments, &call_id).await;
                self.record(ResponseItem::FunctionCallOutput {
                    call_id: call_id.clone(),
                    output,
                })?;
                self.sync()?;
                self.report_items().await;
                if self.hooks.cancel.is_cancelled() {
                    return Err(CoreError::Cancelled);
                }
            }
        }
        Ok(format!(
            "stopped: the model made {MAX_MODEL_REQUESTS_PER_TURN} requests in one turn without finishing"
        ))
    }

    async fn run_tool(&mut self, name: &str, arguments: &str, call_id: &str) -> String {
        match name {
            SHELL_TOOL => match serde_json::from_str::<ShellArgs>(arguments) {
                Ok(args) => self.run_shell(args, call_id).await,
                Err(err) => format!("invalid arguments for shell: {err}"),
            },
            APPLY_PATCH_TOOL => match serde_json::from_str::<ApplyPatchArgs>(arguments) {
                Ok(args) => self.apply_patch(&args.input, call_id).await,
                Err(err) => format!("invalid arguments for apply_patch: {err}"),
            },
            other => format!("unknown tool `{other}`; the tools are `shell` and `apply_patch`"),
        }
    }

    async fn run_shell(&mut self, args: ShellArgs, call_id: &str) -> String {
        let argv = args.argv();
        if argv.is_empty() {
            return "invalid arguments for shell: `command` is empty".to_owned();
        }
        let settings = self.thread.settings.clone();
        let wants_escalation = args.with_escalated_permissions.unwrap_or(false);
        let key = ApprovalKey {
            command: argv.clone(),
            unsandboxed: wants_escalation,
        };
        let approved = self.thread.approved_commands.contains(&key);
        let plan = tools::plan_command(
            settings.approval_policy,
            &settings.sandbox,
            &argv,
            wants_escalation,
            args.justification.as_deref(),
            approved,
        );
        let description = tools::describe_command(&argv);
        let sandbox = match self.resolve_plan(plan, &argv, key).await {
            Ok(sandbox) => sandbox,
            Err(reason) => return format!("command not run: {description}: {reason}"),
        };
        self.progress(&format!("running: {description}")).await;
        let mut output = self.exec(&args, sandbox, call_id).await;
        if let Ok(first) = &output
            && let Some(plan) = tools::retry_after_failure(
                settings.approval_policy,
                &settings.sandbox,
                first.denied_by_sandbox,
            )
            && let Ok(sandbox) = self
                .resolve_plan(
                    plan,
                    &argv,
                    ApprovalKey {
                        command: argv.clone(),
                        unsandboxed: true,
                    },
                )
                .await
        {
            self.progress(&format!("running without sandbox: {description}"))
                .await;
            output = self.exec(&args, sandbox, call_id).await;
        }
        match output {
            Ok(outcome) => outcome.text,
            Err(text) => text,
        }
    }

    /// Runs the command; `Ok((exit code, text for the model))`, or `Err(text)` if it could not
    /// be started.
    async fn exec(
        &mut self,
        args: &ShellArgs,
        sandbox: SandboxPolicy,
        call_id: &str,
    ) -> Result<ExecOutcome, String> {
        let sandboxed = sandbox.mode != SandboxMode::DangerFullAccess;
        let request = args.request(&self.thread.settings.cwd, sandbox);
        let argv = request.argv.clone();
        let started = Instant::now();
        match baton_exec::run_shell(request, self.hooks.cancel.child_token()).await {
            Ok(output) => {
                self.note(RolloutItem::EventMsg(EventMsg::ExecCommandEnd {
                    call_id: call_id.to_owned(),
                    command: argv,
                    exit_code: output.exit_code.unwrap_or(-1),
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                }));
                Ok(ExecOutcome {
                    text: output.to_model_text(),
                    denied_by_sandbox: sandboxed && baton_exec::looks_like_sandbox_denial(&output),
                })
            }
            Err(err) => Err(format!("the command was not run: {err}")),
        }
    }

    /// Appends an event for people and UIs; the conversation does not depend on it, so a
    /// failure is logged rather than failing the turn (the next item's append reports it).
    fn note(&mut self, item: RolloutItem) {
        if let Err(err) = self.append(item) {
            tracing::warn!(thread = %self.thread.id, "could not record an event: {err}");
        }
    }

    /// Asks when the plan says so; the sandbox to run under, or why the command may not run.
    /// `remember` is what an "approve for this session" answer approves.
    async fn resolve_plan(
        &mut self,
        plan: CommandPlan,
        argv: &[String],
        remember: ApprovalKey,
    ) -> Result<SandboxPolicy, String> {
        if self.hooks.sandbox_required
            && let CommandPlan::Run(sandbox) | CommandPlan::Ask { sandbox, .. } = &plan
            && sandbox.mode == baton_protocol::SandboxMode::DangerFullAccess
        {
            return Err("running outside the sandbox is not allowed over HTTP on this server (allow_danger_full_access under [server])".to_owned());
        }
        match plan {
            CommandPlan::Run(sandbox) => Ok(sandbox),
            CommandPlan::Refuse(reason) => Err(reason),
            CommandPlan::Ask { reason, sandbox } => {
                let decision = match &self.hooks.approver {
                    Some(approver) => {
                        approver
                            .request_approval(ApprovalRequest {
                                thread_id: self.thread.id,
                                command: argv.to_vec(),
                                cwd: self.thread.settings.cwd.clone(),
                                reason: reason.clone(),
                            })
                            .await
                    }
                    None => Err("no one can be asked for approval here (the client does not support elicitation)".to_owned()),
                };
                match decision {
                    Ok(ApprovalDecision::Approve) => Ok(sandbox),
                    Ok(ApprovalDecision::ApproveForSession) => {
                        self.thread.approved_commands.insert(remember);
                        Ok(sandbox)
                    }
                    Ok(ApprovalDecision::Deny) => {
                        Err(format!("the user denied approval ({reason})"))
                    }
                    Err(why) => Err(format!(
                        "approval was needed ({reason}) but {why}; denied by default"
                    )),
                }
            }
        }
    }

    async fn apply_patch(&mut self, patch: &str, call_id: &str) -> String {
        // Under `untrusted` an edit asks first, like a command; "approve for this session"
        // covers every later patch.
        if self.thread.settings.approval_policy == ApprovalPolicy::Untrusted {
            let command = vec![APPLY_PATCH_TOOL.to_owned()];
            let approved = self.thread.approved_commands.contains(&ApprovalKey {
                command: command.clone(),
                unsandboxed: false,
            });
            if !approved {
                let mut described = command.clone();
                described.extend(tools::patch_targets(patch));
                let plan = CommandPlan::Ask {
                    reason: "the approval policy is `untrusted` and apply_patch changes files"
                        .into(),
                    sandbox: self.thread.settings.sandbox.clone(),
                };
                let remember = ApprovalKey {
                    command,
                    unsandboxed: false,
                };
                if let Err(reason) = self.resolve_plan(plan, &described, remember).await {
                    return format!("patch not applied: {reason}");
                }
            }
        }
        self.progress("applying patch").await;
        let cwd = self.thread.settings.cwd.clone();
        let roots = baton_exec::writable_roots(&self.thread.settings.sandbox, &cwd);
        let patch = patch.to_owned();
        let result = tokio::task::spawn_blocking(move || {
            baton_exec::apply_patch(&patch, &cwd, roots.as_deref())
        })
        .await;
        let (success, files, text) = match result {
            Ok(Ok(report)) => (true, report.files(), report.summary()),
            Ok(Err(err)) => (false, Vec::new(), format!("apply_patch failed: {err}")),
            Err(err) => (false, Vec::new(), format!("apply_patch failed: {err}")),
        };
        self.note(RolloutItem::EventMsg(EventMsg::PatchApplyEnd {
            call_id: call_id.to_owned(),
            success,
            files,
        }));
        text
    }

    /// The size of the next request: instructions, tool specs and history.
    fn estimated_request_tokens(&self) -> u64 {
        let fixed = (self.thread.instructions().len() as u64 + TOOL_SPECS_BYTES).div_ceil(4);
        fixed + compact::estimate_tokens(&self.thread.history)
    }

    /// Replaces the older conversation with a summary the model writes, keeping the current
    /// turn's recent items, and records it as a `compacted` line.
    async fn compact(&mut self) -> Result<(), CoreError> {
        self.progress("compacting the conversation").await;
        let history_tokens = compact::estimate_tokens(&self.thread.history);
        let limit = self.compact_limit.unwrap_or(history_tokens / 2).max(1);
        let fixed = (self.thread.instructions().len() as u64 + TOOL_SPECS_BYTES).div_ceil(4);
        // The summary request and the kept tail must both leave room in the window.
        let summary_budget = (limit * 3 / 4).saturating_sub(fixed).max(1);
        let request = ModelRequest {
            model: self.thread.settings.model.clone(),
            instructions: self.thread.instructions(),
            input: compact::summarization_input(&self.thread.history, summary_budget),
            tools: Vec::new(),
            reasoning_effort: self.thread.settings.effort.clone(),
        };
        let response = tokio::select! {
            biased;
            _ = self.hooks.cancel.cancelled() => return Err(CoreError::Cancelled),
            response = self.model.complete(&request) => response?,
        };
        let summary = response
            .items
            .iter()
            .rev()
            .find_map(|item| match item.message_text() {
                Some(("assistant", text)) if !text.trim().is_empty() => Some(text),
                _ => None,
            })
            .unwrap_or_else(|| "(the model wrote no summary)".to_owned());
        let cut = compact::choose_cut(&self.thread.history, limit / 4);
        let replacement = compact::replacement_history(&self.thread.history, cut, &summary);
        self.append(RolloutItem::Compacted(Compacted {
            message: summary,
            replacement_history: Some(replacement.clone()),
        }))?;
        self.sync()?;
        tracing::info!(
            thread = %self.thread.id,
            before = self.thread.history.len(),
            after = replacement.len(),
            "compacted the conversation"
        );
        self.thread.history = replacement;
        Ok(())
    }

    /// Pairs every call of this thread's history that has no output yet.
    fn close_dangling_calls(&mut self, text: &str) -> Result<(), CoreError> {
        let answered: HashSet<String> = self
            .thread
            .history
            .iter()
            .filter_map(|item| item.output_call_id().map(str::to_owned))
            .collect();
        let dangling: Vec<String> = self
            .thread
            .history
            .iter()
            .filter_map(|item| item.call_id())
            .filter(|id| !answered.contains(*id))
            .map(str::to_owned)
            .collect();
        for call_id in dangling {
            self.record(ResponseItem::FunctionCallOutput {
                call_id,
                output: text.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Appends a conversation item to the transcript, then to the in-memory history.
    fn record(&mut self, item: ResponseItem) -> Result<(), CoreError> {
        self.append(RolloutItem::ResponseItem(item.clone()))?;
        self.thread.history.push(item);
        self.unreported += 1;
        Ok(())
    }

    /// Tells the progress sink about items recorded since the last call.
    async fn report_items(&mut self) {
        let count = std::mem::take(&mut self.unreported);
        if let Some(sink) = &self.hooks.progress {
            let start = self.thread.history.len().saturating_sub(count);
            for item in &self.thread.history[start..] {
                sink.item_completed(item).await;
            }
        }
    }

    /// fsync, without holding up the other tasks of the runtime meanwhile.
    fn sync(&mut self) -> Result<(), CoreError> {
        let writer = &mut *self.writer;
        Ok(blocking_section(|| writer.sync())?)
    }

    fn append(&mut self, item: RolloutItem) -> Result<(), CoreError> {
        self.writer.append(&item)?;
        self.thread.file_len = self.writer.len();
        Ok(())
    }

    async fn progress(&self, message: &str) {
        if let Some(sink) = &self.hooks.progress {
            sink.progress(message.to_owned()).await;
        }
    }
}
