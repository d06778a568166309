//! One turn of the agent: the user's prompt, then model requests and tool calls until the
//! model answers without calling a tool.
//!
//! Write order (what makes a transcript survive a crash): every item is appended to the transcript when it is complete and
//! before anything depends on it; the file is fsynced after each tool output and at the end.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use baton_model::{ModelClient, ModelRequest, TokenUsage};
use baton_protocol::{
    ApprovalPolicy, Compacted, EventMsg, PendingApproval, Plan, ResponseItem, RolloutItem,
    SandboxMode, SandboxPolicy, SessionMeta, TaskEvent, TaskState, ThreadId, TurnContext,
};
use baton_store::TranscriptWriter;

use crate::compact;
use crate::error::CoreError;
use crate::hooks::{ApprovalDecision, ApprovalRequest, TurnHooks};
use crate::redact::Secrets;
use crate::tools::{
    self, APPLY_PATCH_TOOL, ApplyPatch, CommandApproval, CommandPlan, Shell, ShellArgs, Tool,
    ToolError, UpdatePlan,
};
use crate::usage::TurnUsage;

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

/// The serialized size of the tool specs sent with each request, for token estimates (with
/// room for the wire's own keys around each).
fn tool_specs_bytes() -> u64 {
    tools::tool_specs()
        .iter()
        .map(|tool| {
            (tool.name.len() + tool.description.len() + tool.parameters.to_string().len() + 80)
                as u64
        })
        .sum()
}

/// What the model is told about a call that was running when the process running the turn
/// died; recorded when another process continues the turn.
pub(crate) const RESUMED_CALL_OUTPUT: &str = "aborted: baton stopped while this call ran (the process running the turn ended) and the call did not finish; its effects, if any, are unknown. The turn was resumed: check the state and run it again if it is still needed.";

/// A model that keeps calling tools forever is stopped after this many requests in one turn.
const MAX_MODEL_REQUESTS_PER_TURN: usize = 256;

/// baton's own base instructions: how to work in a repository, how to use each tool, what the
/// final message says. `base_instructions` (config or the `baton` tool) replaces them.
const DEFAULT_BASE_INSTRUCTIONS: &str = include_str!("base_instructions.md");

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

/// A command's result and how long it ran.
type TimedRun = (
    Result<baton_exec::ShellOutput, baton_exec::ExecError>,
    std::time::Duration,
);

async fn timed_run(
    request: baton_exec::ShellRequest,
    cancel: tokio_util::sync::CancellationToken,
) -> TimedRun {
    let started = Instant::now();
    let result = baton_exec::run_shell(request, cancel).await;
    (result, started.elapsed())
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
    /// Token usage of the current (or last) turn.
    pub turn_usage: TurnUsage,
    /// The model's newest plan (`update_plan`), read back from the history on rehydration.
    pub plan: Option<Plan>,
}

impl LiveThread {
    /// A thread as its transcript holds it: `history` read back (or just written) and
    /// `file_len` bytes on disk. Its plan is the newest one in the history; nothing is
    /// approved for the session yet.
    pub fn new(
        meta: SessionMeta,
        path: PathBuf,
        settings: ThreadSettings,
        history: Vec<ResponseItem>,
        file_len: u64,
    ) -> Self {
        Self {
            id: meta.id,
            path,
            meta,
            settings,
            plan: tools::latest_plan(&history),
            history,
            file_len,
            approved_commands: HashSet::new(),
            turn_usage: TurnUsage::default(),
        }
    }

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
    thread: &'a mut LiveThread,
    writer: &'a mut dyn TranscriptWriter,
    model: Arc<dyn ModelClient>,
    hooks: &'a TurnHooks,
    /// Compact before a request estimated at this many tokens or more; `None`: only when the
    /// provider reports that the context length was exceeded.
    compact_limit: Option<u64>,
    /// Compact before the prompt, whatever the size (`exec resume --compact`).
    compact_first: bool,
    /// Items recorded but not yet passed to the progress sink.
    unreported: usize,
    /// The `agent_message` event was written with the model's final response already.
    answer_recorded: bool,
    /// The environment commands run with (baton's, filtered by `[shell_environment_policy]`).
    command_env: Vec<(OsString, OsString)>,
    /// Provider key values, redacted from what the model and the tools produce.
    secrets: Secrets,
    /// baton's home: hidden from sandboxed commands and refused to sandboxed edits.
    baton_home: PathBuf,
}

impl<'a> Turn<'a> {
    /// A turn of `thread` under `config`: its compaction limit, the environment its commands
    /// get and the secrets redacted from what they print all come from the config.
    pub fn new(
        thread: &'a mut LiveThread,
        writer: &'a mut dyn TranscriptWriter,
        model: Arc<dyn ModelClient>,
        hooks: &'a TurnHooks,
        config: &baton_config::Config,
        compact_first: bool,
    ) -> Self {
        let compact_limit = config.auto_compact_token_limit_for(&thread.settings.model);
        let secret_names = config.secret_env_names();
        Self {
            thread,
            writer,
            model,
            hooks,
            compact_limit,
            compact_first,
            unreported: 0,
            answer_recorded: false,
            command_env: baton_exec::command_env(
                &config.shell_environment_policy,
                &secret_names,
                std::env::vars_os(),
            ),
            secrets: Secrets::from_env(&secret_names, std::env::vars_os()),
            baton_home: config.home.clone(),
        }
    }
}

impl Turn<'_> {
    pub async fn run(mut self, prompt: &str) -> Result<String, CoreError> {
        if let Some(sink) = &self.hooks.progress {
            sink.thread_started(self.thread.id).await;
        }
        self.progress("turn started").await;
        self.thread.turn_usage = TurnUsage::default();
        // One write: a process killed in between must not leave a prompt that the model
        // would see without the `user_message` event that lists it, or the reverse.
        let context = self.thread.settings.turn_context();
        self.record_together(vec![
            RolloutItem::TurnContext(context),
            RolloutItem::ResponseItem(ResponseItem::user_message(prompt)),
            RolloutItem::EventMsg(EventMsg::UserMessage {
                message: prompt.to_owned(),
            }),
        ])?;
        self.sync()?;
        self.report_items().await;

        let result = match self.compact_first {
            true => match self.compact().await {
                Ok(()) => self.model_loop().await,
                Err(err) => Err(err),
            },
            false => self.model_loop().await,
        };
        self.finish(result)
    }

    /// Continues a turn that a process which died had started: the prompt and every item
    /// recorded since are kept. A call that was running when the process died is recorded as
    /// aborted and the model is asked again; `rerun_call` (a call that was waiting for
    /// approval) and the calls after it were never started, so they run now (asking again).
    pub async fn resume(mut self, rerun_call: Option<&str>) -> Result<String, CoreError> {
        if let Some(sink) = &self.hooks.progress {
            sink.thread_started(self.thread.id).await;
        }
        self.progress("turn resumed").await;
        self.thread.turn_usage = TurnUsage::default();
        let turn_start = baton_protocol::user_turn_starts(&self.thread.history)
            .last()
            .copied()
            .unwrap_or(0);
        // The reader paired every call left unanswered with a synthetic output (in memory
        // only); those are the calls the dead process had not finished.
        let interrupted: Vec<usize> = (turn_start..self.thread.history.len())
            .filter(|&index| {
                matches!(&self.thread.history[index],
                    ResponseItem::FunctionCallOutput { output, .. } if output == baton_store::ABORTED_CALL_OUTPUT)
            })
            .collect();
        let mut rerun: Vec<(String, String, String)> = Vec::new();
        let mut aborted: Vec<String> = Vec::new();
        for &index in &interrupted {
            let ResponseItem::FunctionCallOutput { call_id, .. } = &self.thread.history[index]
            else {
                continue;
            };
            let call_id = call_id.clone();
            if rerun.is_empty() && rerun_call != Some(call_id.as_str()) {
                aborted.push(call_id);
                continue;
            }
            let call = self.thread.history.iter().find_map(|item| match item {
                ResponseItem::FunctionCall {
                    name,
                    arguments,
                    call_id: id,
                } if *id == call_id => Some((name.clone(), arguments.clone(), id.clone())),
                _ => None,
            });
            match call {
                Some(call) => rerun.push(call),
                None => aborted.push(call_id),
            }
        }
        // Drop the synthetic outputs; what replaces them is recorded below.
        for &index in interrupted.iter().rev() {
            self.thread.history.remove(index);
        }
        for call_id in aborted {
            self.record(ResponseItem::FunctionCallOutput {
                call_id,
                output: RESUMED_CALL_OUTPUT.to_owned(),
            })?;
        }
        self.sync()?;
        // Died after the answer was on disk but before the task was marked done: that answer
        // is the turn's result; asking the model again would answer twice.
        if rerun.is_empty()
            && let Some(ResponseItem::Message { role, .. }) = self.thread.history.last()
            && role == "assistant"
            && let Some(last) = self.thread.history.last()
            && let Some((_, text)) = last.message_text()
        {
            self.thread.file_len = self.writer.len();
            return Ok(text);
        }
        let result = match rerun.is_empty() {
            true => self.model_loop().await,
            false => match self.run_calls(&rerun).await {
                Ok(()) => self.model_loop().await,
                Err(err) => Err(err),
            },
        };
        self.finish(result)
    }

    /// Records how the turn ended (its answer, the abort, or the error) and makes it durable.
    fn finish(&mut self, result: Result<String, CoreError>) -> Result<String, CoreError> {
        match &result {
            Ok(_) if self.answer_recorded => {}
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
            self.progress("waiting for the model").await;
            let request = ModelRequest {
                model: self.thread.settings.model.clone(),
                instructions: self.thread.instructions(),
                input: self.thread.history.clone(),
                tools: tools.clone(),
                reasoning_effort: self.thread.settings.effort.clone(),
                prompt_cache_key: Some(self.thread.id.to_string()),
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
            // A response is one write (its usage, its items, and when it is the answer, the
            // `agent_message` event): fewer writes, and no half response after a kill.
            let mut lines: Vec<RolloutItem> = self
                .usage_event(response.usage.as_ref())
                .into_iter()
                .collect();
            let mut calls = Vec::new();
            let mut final_message = String::new();
            for item in response.items {
                let item = self.secrets.redact_item(item);
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
                lines.push(RolloutItem::ResponseItem(item));
            }
            if calls.is_empty() {
                lines.push(RolloutItem::EventMsg(EventMsg::AgentMessage {
                    message: final_message.clone(),
                }));
            }
            self.record_together(lines)?;
            self.answer_recorded = calls.is_empty();
            self.report_items().await;
            if calls.is_empty() {
                return Ok(final_message);
            }
            self.run_calls(&calls).await?;
        }
        Ok(format!(
            "stopped: the model made {MAX_MODEL_REQUESTS_PER_TURN} requests in one turn without finishing"
        ))
    }

    async fn run_tool(
        &mut self,
        name: &str,
        arguments: &str,
        call_id: &str,
    ) -> Result<String, ToolError> {
        match name {
            Shell::NAME => self.call::<Shell>(arguments, call_id).await,
            ApplyPatch::NAME => self.call::<ApplyPatch>(arguments, call_id).await,
            UpdatePlan::NAME => self.call::<UpdatePlan>(arguments, call_id).await,
            other => Err(ToolError::ForModel(format!(
                "unknown tool `{other}`; the tools are `shell`, `apply_patch` and `update_plan`"
            ))),
        }
    }

    async fn call<T: Tool>(&mut self, arguments: &str, call_id: &str) -> Result<String, ToolError> {
        let args = T::parse(arguments)?;
        T::run(self, args, call_id).await
    }

    pub(crate) async fn run_shell(
        &mut self,
        args: ShellArgs,
        call_id: &str,
    ) -> Result<String, ToolError> {
        let argv = args.argv();
        let settings = self.thread.settings.clone();
        let wants_escalation = args.with_escalated_permissions.unwrap_or(false);
        let key = ApprovalKey {
            command: argv.clone(),
            unsandboxed: wants_escalation,
        };
        let plan = tools::plan_command(&CommandApproval {
            policy: settings.approval_policy,
            sandbox: &settings.sandbox,
            argv: &argv,
            wants_escalation,
            justification: args.justification.as_deref(),
            approved_for_session: self.thread.approved_commands.contains(&key),
        });
        let description = tools::describe_command(&argv);
        let sandbox = self
            .resolve_plan(plan, &argv, key, call_id)
            .await
            .map_err(|err| err.prefixed(&format!("command not run: {description}")))?;
        self.progress(&format!("running: {description}")).await;
        let output = self.exec(&args, sandbox, call_id).await;
        self.retry_if_sandbox_stopped(&args, call_id, output).await
    }

    /// Under `on-failure`, offers to run a command the sandbox stopped again without it; the
    /// text for the model either way.
    async fn retry_if_sandbox_stopped(
        &mut self,
        args: &ShellArgs,
        call_id: &str,
        output: Result<ExecOutcome, ToolError>,
    ) -> Result<String, ToolError> {
        let argv = args.argv();
        let settings = &self.thread.settings;
        let retry = match &output {
            Ok(first) => tools::retry_after_failure(
                settings.approval_policy,
                &settings.sandbox,
                first.denied_by_sandbox,
            ),
            Err(_) => None,
        };
        let unsandboxed = ApprovalKey {
            command: argv.clone(),
            unsandboxed: true,
        };
        let output = match retry {
            Some(plan) => match self.resolve_plan(plan, &argv, unsandboxed, call_id).await {
                Ok(sandbox) => {
                    let description = tools::describe_command(&argv);
                    self.progress(&format!("running without sandbox: {description}"))
                        .await;
                    self.exec(args, sandbox, call_id).await
                }
                Err(_) => output,
            },
            None => output,
        };
        output.map(|outcome| outcome.text)
    }

    /// Runs the command; what it printed and how it ended, or why it could not be started.
    async fn exec(
        &mut self,
        args: &ShellArgs,
        sandbox: SandboxPolicy,
        call_id: &str,
    ) -> Result<ExecOutcome, ToolError> {
        let sandboxed = sandbox.mode != SandboxMode::DangerFullAccess;
        let mut request =
            args.request(&self.thread.settings.cwd, sandbox, self.command_env.clone());
        request.hidden_dirs = vec![self.baton_home.clone()];
        let argv = request.argv.clone();
        let run = timed_run(request, self.hooks.cancel.child_token()).await;
        self.exec_finished(call_id, argv, sandboxed, run)
    }

    /// Records how a command ended (`exec_command_end`) and what the model is told.
    fn exec_finished(
        &mut self,
        call_id: &str,
        argv: Vec<String>,
        sandboxed: bool,
        (result, elapsed): TimedRun,
    ) -> Result<ExecOutcome, ToolError> {
        match result {
            Ok(output) => {
                self.note(RolloutItem::EventMsg(EventMsg::ExecCommandEnd {
                    call_id: call_id.to_owned(),
                    command: argv,
                    exit_code: output.exit_code.unwrap_or(-1),
                    duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                }));
                Ok(ExecOutcome {
                    text: output.to_model_text(),
                    denied_by_sandbox: sandboxed && baton_exec::looks_like_sandbox_denial(&output),
                })
            }
            Err(err) => Err(ToolError::ForModel(format!(
                "the command was not run: {err}"
            ))),
        }
    }

    /// Runs the calls of one response and records their outputs in the order the model issued
    /// them. Consecutive read-only commands run at the same time; anything else runs alone, after
    /// the calls before it finished and before the calls after it start.
    async fn run_calls(&mut self, calls: &[(String, String, String)]) -> Result<(), CoreError> {
        let mut next = 0;
        while next < calls.len() {
            if self.hooks.cancel.is_cancelled() {
                return Err(CoreError::Cancelled);
            }
            let read_only: Vec<ShellArgs> = calls[next..]
                .iter()
                .map_while(|(name, arguments, _)| self.read_only_shell(name, arguments))
                .collect();
            let outputs = if read_only.len() >= 2 {
                let batch = &calls[next..next + read_only.len()];
                let call_ids = batch.iter().map(|(_, _, id)| id.as_str());
                self.run_concurrently(read_only.into_iter().zip(call_ids).collect())
                    .await
            } else {
                let (name, arguments, call_id) = &calls[next];
                vec![self.run_tool(name, arguments, call_id).await]
            };
            for output in outputs {
                let output = match output {
                    Ok(text) | Err(ToolError::ForModel(text)) => text,
                    Err(ToolError::EndTurn(err)) => return Err(err),
                };
                let call_id = calls[next].2.clone();
                let output = self.secrets.redact(&output);
                self.record(ResponseItem::FunctionCallOutput { call_id, output })?;
                next += 1;
            }
            self.sync()?;
            self.report_items().await;
        }
        if self.hooks.cancel.is_cancelled() {
            return Err(CoreError::Cancelled);
        }
        Ok(())
    }

    /// The arguments of a `shell` call that only reads (the known-safe list approvals use) and
    /// runs without asking; `None` for every other call.
    fn read_only_shell(&self, name: &str, arguments: &str) -> Option<ShellArgs> {
        if name != Shell::NAME {
            return None;
        }
        let args = Shell::parse(arguments).ok()?;
        let argv = args.argv();
        if args.with_escalated_permissions.unwrap_or(false)
            || !baton_exec::is_known_safe_command(&argv)
        {
            return None;
        }
        let settings = &self.thread.settings;
        let approved = self.thread.approved_commands.contains(&ApprovalKey {
            command: argv.clone(),
            unsandboxed: false,
        });
        let plan = tools::plan_command(&CommandApproval {
            policy: settings.approval_policy,
            sandbox: &settings.sandbox,
            argv: &argv,
            wants_escalation: false,
            justification: None,
            approved_for_session: approved,
        });
        matches!(plan, CommandPlan::Run(_)).then_some(args)
    }

    /// Runs read-only commands at the same time; their outputs in the order given.
    async fn run_concurrently(
        &mut self,
        calls: Vec<(ShellArgs, &str)>,
    ) -> Vec<Result<String, ToolError>> {
        let sandbox = self.thread.settings.sandbox.clone();
        let sandboxed = sandbox.mode != SandboxMode::DangerFullAccess;
        let mut running = Vec::with_capacity(calls.len());
        for (args, call_id) in &calls {
            self.progress(&format!(
                "running: {}",
                tools::describe_command(&args.argv())
            ))
            .await;
            let mut request = args.request(
                &self.thread.settings.cwd,
                sandbox.clone(),
                self.command_env.clone(),
            );
            request.hidden_dirs = vec![self.baton_home.clone()];
            let argv = request.argv.clone();
            let task = tokio::spawn(timed_run(request, self.hooks.cancel.child_token()));
            running.push((task, argv, *call_id));
        }
        let mut outputs = Vec::with_capacity(running.len());
        for ((task, argv, call_id), (args, _)) in running.into_iter().zip(&calls) {
            let run = match task.await {
                Ok(run) => run,
                Err(err) => {
                    outputs.push(Err(ToolError::ForModel(format!(
                        "the command was not run: {err}"
                    ))));
                    continue;
                }
            };
            let outcome = self.exec_finished(call_id, argv, sandboxed, run);
            outputs.push(self.retry_if_sandbox_stopped(args, call_id, outcome).await);
        }
        outputs
    }

    /// Records the plan for people (an event and a progress message) and keeps it as the
    /// thread's current plan.
    pub(crate) async fn update_plan(&mut self, plan: Plan) -> String {
        self.note(RolloutItem::EventMsg(EventMsg::PlanUpdate(plan.clone())));
        self.progress(&plan.progress_line()).await;
        self.thread.plan = Some(plan);
        "Plan updated".to_owned()
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
        call_id: &str,
    ) -> Result<SandboxPolicy, ToolError> {
        if self.hooks.sandbox_required
            && let CommandPlan::Run(sandbox) | CommandPlan::Ask { sandbox, .. } = &plan
            && sandbox.mode == baton_protocol::SandboxMode::DangerFullAccess
        {
            return Err(ToolError::ForModel("running outside the sandbox is not allowed over HTTP on this server (allow_danger_full_access under [server])".to_owned()));
        }
        match plan {
            CommandPlan::Run(sandbox) => Ok(sandbox),
            CommandPlan::Refuse(reason) => Err(ToolError::ForModel(reason)),
            CommandPlan::Ask { reason, sandbox } => {
                let request = ApprovalRequest {
                    thread_id: self.thread.id,
                    call_id: call_id.to_owned(),
                    command: argv.to_vec(),
                    cwd: self.thread.settings.cwd.clone(),
                    reason: reason.clone(),
                };
                let decision = match self.hooks.approver.clone() {
                    Some(approver) => {
                        // A task's question is on disk before it is asked: a process that
                        // continues the task after a crash asks it again.
                        self.record_task_state(TaskState::InputRequired, Some(&request))
                            .map_err(ToolError::EndTurn)?;
                        let decision = approver.request_approval(request).await;
                        self.record_task_state(TaskState::Working, None)
                            .map_err(ToolError::EndTurn)?;
                        decision
                    }
                    None => Err("no one can be asked for approval here (the client does not support elicitation)".to_owned()),
                };
                match decision {
                    Ok(ApprovalDecision::Approve) => Ok(sandbox),
                    Ok(ApprovalDecision::ApproveForSession) => {
                        self.thread.approved_commands.insert(remember);
                        Ok(sandbox)
                    }
                    Ok(ApprovalDecision::Deny) => Err(ToolError::ForModel(format!(
                        "the user denied approval ({reason})"
                    ))),
                    Err(why) => Err(ToolError::ForModel(format!(
                        "approval was needed ({reason}) but {why}; denied by default"
                    ))),
                }
            }
        }
    }

    pub(crate) async fn apply_patch(
        &mut self,
        patch: &str,
        call_id: &str,
    ) -> Result<String, ToolError> {
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
                self.resolve_plan(plan, &described, remember, call_id)
                    .await
                    .map_err(|err| err.prefixed("patch not applied"))?;
            }
        }
        self.progress("applying patch").await;
        let cwd = self.thread.settings.cwd.clone();
        let roots = baton_exec::writable_roots(&self.thread.settings.sandbox, &cwd);
        let patch = patch.to_owned();
        let protected = [self.baton_home.clone()];
        let result = tokio::task::spawn_blocking(move || {
            baton_exec::apply_patch_protecting(&patch, &cwd, roots.as_deref(), &protected)
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
        Ok(text)
    }

    /// The size of the next request: instructions, tool specs and history.
    fn estimated_request_tokens(&self) -> u64 {
        let fixed = (self.thread.instructions().len() as u64 + tool_specs_bytes()).div_ceil(4);
        fixed + compact::estimate_tokens(&self.thread.history)
    }

    /// Replaces the older conversation with a summary the model writes, keeping the current
    /// turn's recent items, and records it as a `compacted` line.
    async fn compact(&mut self) -> Result<(), CoreError> {
        self.progress("compacting the conversation").await;
        let history_tokens = compact::estimate_tokens(&self.thread.history);
        let limit = self.compact_limit.unwrap_or(history_tokens / 2).max(1);
        let fixed = (self.thread.instructions().len() as u64 + tool_specs_bytes()).div_ceil(4);
        // The summary request and the kept tail must both leave room in the window.
        let summary_budget = (limit * 3 / 4).saturating_sub(fixed).max(1);
        let request = ModelRequest {
            model: self.thread.settings.model.clone(),
            instructions: self.thread.instructions(),
            input: compact::summarization_input(&self.thread.history, summary_budget),
            tools: Vec::new(),
            reasoning_effort: self.thread.settings.effort.clone(),
            prompt_cache_key: Some(self.thread.id.to_string()),
        };
        let response = tokio::select! {
            biased;
            _ = self.hooks.cancel.cancelled() => return Err(CoreError::Cancelled),
            response = self.model.complete(&request) => response?,
        };
        if let Some(event) = self.usage_event(response.usage.as_ref()) {
            self.append(event)?;
        }
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

    /// Adds a response's token usage to the turn's; the `token_count` event that records it.
    fn usage_event(&mut self, usage: Option<&TokenUsage>) -> Option<RolloutItem> {
        let usage = usage?;
        self.thread.turn_usage.add(usage);
        Some(RolloutItem::EventMsg(EventMsg::TokenCount {
            input_tokens: usage.input_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
        }))
    }

    /// Pairs every call of this thread's history that has no output yet.
    fn close_dangling_calls(&mut self, text: &str) -> Result<(), CoreError> {
        let outputs: Vec<ResponseItem> = baton_protocol::unanswered_calls(&self.thread.history)
            .into_iter()
            .filter_map(|index| baton_protocol::call_output(&self.thread.history[index], text))
            .collect();
        for output in outputs {
            self.record(output)?;
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

    /// Records a change of the turn's MCP task, if it runs for one, durably.
    fn record_task_state(
        &mut self,
        state: TaskState,
        approval: Option<&ApprovalRequest>,
    ) -> Result<(), CoreError> {
        let Some(task_id) = self.hooks.task.clone() else {
            return Ok(());
        };
        let mut event = TaskEvent::new(task_id, state);
        event.approval = approval.map(|request| PendingApproval {
            call_id: request.call_id.clone(),
            command: request.command.clone(),
            cwd: request.cwd.clone(),
            reason: request.reason.clone(),
        });
        self.append(RolloutItem::EventMsg(EventMsg::BatonTask(Box::new(event))))?;
        self.sync()
    }

    fn append(&mut self, item: RolloutItem) -> Result<(), CoreError> {
        self.writer.append(&item)?;
        self.thread.file_len = self.writer.len();
        Ok(())
    }

    /// Appends `lines` in one write (all or none after a kill); the conversation items among
    /// them join the history, as [`Turn::record`] does for one.
    fn record_together(&mut self, lines: Vec<RolloutItem>) -> Result<(), CoreError> {
        self.writer.append_all(&lines)?;
        self.thread.file_len = self.writer.len();
        for line in lines {
            if let RolloutItem::ResponseItem(item) = line {
                self.thread.history.push(item);
                self.unreported += 1;
            }
        }
        Ok(())
    }

    async fn progress(&self, message: &str) {
        if let Some(sink) = &self.hooks.progress {
            sink.progress(message.to_owned()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_instructions_stay_under_4_kib_and_cover_each_tool() {
        assert!(
            DEFAULT_BASE_INSTRUCTIONS.len() < 4096,
            "{} bytes",
            DEFAULT_BASE_INSTRUCTIONS.len()
        );
        for tool in tools::tool_specs() {
            assert!(
                DEFAULT_BASE_INSTRUCTIONS.contains(&format!("- {}:", tool.name)),
                "the base instructions do not explain `{}`",
                tool.name
            );
        }
    }
}
