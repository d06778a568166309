//! The MCP tasks extension (`io.modelcontextprotocol/tasks`) over baton's durable tasks:
//! a task-augmented `tools/call` answers at once with a task and runs the turn in the
//! background; `tasks/get`, `tasks/update` and `tasks/cancel` reach it in any baton process
//! serving the same store. What a task is, and how it survives its process, is decided by
//! `baton_core` (`ThreadManager::task`, `resume_task`); this module translates.

use std::sync::Arc;

use baton_core::{
    ApprovalDecision, CoreError, ErrorKind, RenderResult, TaskLookup, TaskSetup, TaskView,
    TurnHooks, TurnResult,
};
use baton_protocol::{PendingApproval, TaskState};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, DetailedTask,
    ElicitRequest, ElicitationAction, GetTaskParams, GetTaskResult, InputRequest, InputRequests,
    JsonObject, ProtocolVersion, Task, TaskPayload, TaskStatus, UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use tokio_util::sync::CancellationToken;

use crate::args::{ForkArgs, ReplyArgs, StartArgs};
use crate::hooks::{approval_form, decision_of};
use crate::server::{BatonServer, tool_error, turn_result};

/// The tools whose calls may become tasks: the ones that run a turn (and the fork, for
/// symmetry: a client that asked for a task gets one).
const TASK_TOOLS: [&str; 3] = ["baton", "baton-reply", "baton-fork"];

/// Answers one `tasks/update` may carry (a task waits for one approval at a time).
const MAX_INPUT_RESPONSES: usize = 16;

/// A task only for 2026-07-28 requests whose client declares the extension; everyone else
/// gets the synchronous result, as before.
pub(crate) fn wants_task(
    request: &CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
) -> bool {
    TASK_TOOLS.contains(&request.name.as_ref())
        && ctx
            .protocol_version()
            .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
        && ctx
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks())
}

/// The turn a task runs, as core takes it.
enum TaskTurn {
    Start(baton_core::StartThread),
    Reply(baton_core::ReplyToThread),
}

/// The call a task runs.
enum TaskCall {
    Start(StartArgs),
    Reply(ReplyArgs),
    Fork(ForkArgs),
}

impl BatonServer {
    /// Answers a task-augmented call with its task, once the task is on disk; the turn runs on
    /// in the background. A call that fails before its turn starts (unknown thread, busy,
    /// bad arguments) is answered synchronously with the error, as without a task.
    pub(crate) async fn call_as_task(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = serde_json::Value::Object(request.arguments.unwrap_or_default());
        let invalid = |err: serde_json::Error| {
            ErrorData::invalid_params(format!("invalid arguments: {err}"), None)
        };
        let call = match request.name.as_ref() {
            "baton" => TaskCall::Start(serde_json::from_value(arguments).map_err(invalid)?),
            "baton-reply" => TaskCall::Reply(serde_json::from_value(arguments).map_err(invalid)?),
            _ => TaskCall::Fork(serde_json::from_value(arguments).map_err(invalid)?),
        };
        let access = match self.access(&ctx) {
            Ok(access) => access,
            Err(message) => return Ok(tool_error(message).into()),
        };
        let manager = self.manager().clone();
        if let TaskCall::Fork(args) = call {
            // A fork asks no model: it is done before the answer, and recorded as done.
            let forked = manager
                .fork_as(&args.thread_id, args.at_turn, &access)
                .await;
            let thread = match &forked {
                Ok(result) => result.thread_id,
                Err(_) => return Ok(turn_result(forked).into()),
            };
            let result = render(&forked);
            return match manager
                .record_finished_task(thread, "baton-fork", result)
                .await
            {
                Ok(view) => Ok(CreateTaskResult::new(task_of(&view)).into()),
                Err(err) => Ok(tool_error(err.to_string()).into()),
            };
        }
        let mut hooks = TurnHooks {
            // The task outlives the request: its own token, fired by `tasks/cancel`.
            cancel: CancellationToken::new(),
            ..Default::default()
        };
        let admission = match self.admit(&mut hooks) {
            Ok(admission) => admission,
            Err(message) => return Ok(tool_error(message).into()),
        };
        let turn = match call {
            TaskCall::Start(args) => match BatonServer::start_request(args, access) {
                Ok(request) => TaskTurn::Start(request),
                Err(message) => return Ok(tool_error(message).into()),
            },
            TaskCall::Reply(args) => TaskTurn::Reply(BatonServer::reply_request(args, access)),
            TaskCall::Fork(_) => {
                return Err(ErrorData::internal_error("a fork is not a turn", None));
            }
        };
        let (setup, announced) = TaskSetup::new(renderer());
        tokio::spawn(async move {
            let outcome = match turn {
                TaskTurn::Start(request) => manager.start_thread_task(request, hooks, setup).await,
                TaskTurn::Reply(request) => manager.reply_task(request, hooks, setup).await,
            };
            if let Some(admission) = &admission {
                admission.record(&outcome);
            }
        });
        Ok(match announced.await {
            Ok(Ok(view)) => CreateTaskResult::new(task_of(&view)).into(),
            Ok(Err(message)) => tool_error(message).into(),
            Err(_) => tool_error(
                "internal error: the task's turn ended before the task was opened".to_owned(),
            )
            .into(),
        })
    }

    /// `tasks/get`. A task found unfinished with no process running it is continued here
    /// first (its process died), and reported as resumed.
    pub(crate) async fn get_task_state(
        &self,
        params: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let access = self
            .access(&ctx)
            .map_err(|m| ErrorData::internal_error(m, None))?;
        let lookup = self
            .manager()
            .task(&params.task_id, &access)
            .await
            .map_err(task_error)?;
        let view = match lookup {
            TaskLookup::Found(view) => view,
            TaskLookup::Orphaned(view) => self.resume(view).await?,
        };
        Ok(GetTaskResult::new(detailed(&view)?))
    }

    /// `tasks/update`: the answers to the approvals the task asked for.
    pub(crate) async fn update_task_inputs(
        &self,
        params: UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let access = self
            .access(&ctx)
            .map_err(|m| ErrorData::internal_error(m, None))?;
        if params.input_responses.len() > MAX_INPUT_RESPONSES {
            // Each answer is a look-up of the task, which may read its transcript.
            return Err(ErrorData::invalid_params(
                format!(
                    "tasks/update carries {} input responses; a baton task asks one question \
                     at a time, and at most {MAX_INPUT_RESPONSES} answers are read per update",
                    params.input_responses.len()
                ),
                None,
            ));
        }
        if params.input_responses.is_empty() {
            // Still a look-up: an unknown task is an error, not a silent success.
            self.manager()
                .answer_task(&params.task_id, &access, "", Err(String::new()))
                .await
                .map_err(task_error)?;
        }
        for (key, response) in params.input_responses {
            self.manager()
                .answer_task(&params.task_id, &access, &key, answer_of(&response))
                .await
                .map_err(task_error)?;
        }
        Ok(())
    }

    /// `tasks/cancel`: aborts the task's turn like `notifications/cancelled` aborts a call.
    pub(crate) async fn cancel_task_turn(
        &self,
        params: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let access = self
            .access(&ctx)
            .map_err(|m| ErrorData::internal_error(m, None))?;
        self.manager()
            .cancel_task(&params.task_id, &access)
            .await
            .map_err(task_error)?;
        Ok(())
    }

    /// At start-up: continues, in the background, every task the store's listing notes as
    /// unfinished whose process died (the rest wait for their `tasks/get`).
    pub(crate) fn resume_orphaned_tasks(&self) {
        let server = self.clone();
        tokio::spawn(async move {
            let orphaned = match server.manager().orphaned_tasks().await {
                Ok(orphaned) => orphaned,
                Err(err) => {
                    tracing::warn!("could not look for tasks left by a stopped server: {err}");
                    return;
                }
            };
            for id in orphaned {
                let view = match server
                    .manager()
                    .task(&id.to_string(), &Default::default())
                    .await
                {
                    Ok(TaskLookup::Orphaned(view)) => view,
                    _ => continue,
                };
                tracing::info!(task = %id, "continuing a task left by a stopped server");
                if let Err(err) = server.resume(view).await {
                    tracing::warn!(task = %id, "could not continue the task: {}", err.message);
                }
            }
        });
    }

    /// Continues an orphaned task in this process; its state once the resumption is on disk.
    async fn resume(&self, view: TaskView) -> Result<TaskView, ErrorData> {
        let mut hooks = TurnHooks {
            cancel: CancellationToken::new(),
            ..Default::default()
        };
        let admission = match self.admit(&mut hooks) {
            Ok(admission) => admission,
            // At capacity: report the task as it is; a later poll continues it.
            Err(_) => return Ok(view),
        };
        let (setup, announced) = TaskSetup::new(renderer());
        let manager = self.manager().clone();
        let id = view.id;
        tokio::spawn(async move {
            if let Err(err) = manager.resume_task(id, hooks, setup).await {
                tracing::warn!(task = %id, "could not continue the task: {err}");
            }
            // A resumed turn counts like any turn in the HTTP metrics.
            if let Some(admission) = &admission {
                admission.record(&Ok(TurnResult {
                    thread_id: id.thread(),
                    message: String::new(),
                    usage: None,
                    plan: None,
                }));
            }
        });
        match announced.await {
            Ok(Ok(view)) => Ok(view),
            // Another process took it first (busy), or it could not be read: as it was.
            Ok(Err(message)) => {
                tracing::info!(task = %id, "task not resumed here: {message}");
                Ok(view)
            }
            Err(_) => Ok(view),
        }
    }
}

/// What a task's result is: exactly the `CallToolResult` the call would have returned.
fn render(outcome: &Result<TurnResult, CoreError>) -> serde_json::Value {
    let result = match outcome {
        Ok(result) => turn_result(Ok(result.clone())),
        Err(err) => tool_error(err.to_string()),
    };
    serde_json::to_value(result).unwrap_or_else(|err| {
        serde_json::json!({
            "content": [{"type": "text", "text": format!("internal error: cannot encode the result: {err}")}],
            "isError": true
        })
    })
}

pub(crate) fn renderer() -> RenderResult {
    Arc::new(render)
}

/// The task as `CreateTaskResult` carries it.
fn task_of(view: &TaskView) -> Task {
    let mut task = Task::new(
        view.id.to_string(),
        status_of(view.state),
        view.created_at.clone(),
        view.updated_at.clone(),
    )
    .with_ttl_ms(view.ttl_ms)
    .with_poll_interval_ms(view.poll_interval_ms);
    task.status_message = view.status_message.clone();
    task
}

fn status_of(state: TaskState) -> TaskStatus {
    match state {
        TaskState::Working => TaskStatus::Working,
        TaskState::InputRequired => TaskStatus::InputRequired,
        TaskState::Completed => TaskStatus::Completed,
        TaskState::Failed => TaskStatus::Failed,
        TaskState::Cancelled => TaskStatus::Cancelled,
    }
}

/// The task with what its status carries: the approval question, the result, the error.
fn detailed(view: &TaskView) -> Result<DetailedTask, ErrorData> {
    let payload = match view.state {
        TaskState::Working => TaskPayload::Working,
        TaskState::Cancelled => TaskPayload::Cancelled,
        TaskState::InputRequired => match &view.approval {
            Some(approval) => TaskPayload::InputRequired {
                input_requests: input_requests(view, approval)?,
            },
            None => TaskPayload::Working,
        },
        TaskState::Completed => TaskPayload::Completed {
            result: match &view.result {
                Some(serde_json::Value::Object(result)) => result.clone(),
                _ => JsonObject::new(),
            },
        },
        TaskState::Failed => {
            let mut error = JsonObject::new();
            error.insert("code".into(), (-32603).into());
            error.insert(
                "message".into(),
                view.error
                    .clone()
                    .unwrap_or_else(|| "the task failed".into())
                    .into(),
            );
            TaskPayload::Failed { error }
        }
    };
    Ok(DetailedTask::new(task_of(view), payload))
}

/// The approval as an `elicitation/create` input request, keyed by the waiting call's id.
fn input_requests(view: &TaskView, approval: &PendingApproval) -> Result<InputRequests, ErrorData> {
    let params = approval_form(
        &approval.command,
        &approval.cwd,
        view.id.thread(),
        &approval.reason,
    )
    .map_err(|message| ErrorData::internal_error(message, None))?;
    let mut requests = InputRequests::new();
    requests.insert(
        approval.call_id.clone(),
        InputRequest::Elicitation(ElicitRequest::new(params)),
    );
    Ok(requests)
}

/// An `ElicitResult` (`{action, content}`) as the approval's answer; anything unreadable is
/// a dismissed form (denied).
fn answer_of(response: &serde_json::Value) -> Result<ApprovalDecision, String> {
    match response
        .get("action")
        .and_then(|a| serde_json::from_value::<ElicitationAction>(a.clone()).ok())
    {
        Some(action) => decision_of(action, response.get("content")),
        None => Err("the answer to the approval form was not an elicitation result".to_owned()),
    }
}

/// An unknown (or another owner's, or malformed) task is invalid params, as rmcp's own task
/// manager answers; the rest are internal errors with the reason.
fn task_error(err: CoreError) -> ErrorData {
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::BadInput => {
            ErrorData::invalid_params(err.to_string(), None)
        }
        _ => ErrorData::internal_error(err.to_string(), None),
    }
}
