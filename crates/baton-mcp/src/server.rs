//! The rmcp server: tool definitions and their translation to `ThreadManager` calls.

use std::path::PathBuf;
use std::sync::Arc;

use baton_core::{
    Access, CoreError, ErrorKind, ReplyToThread, SessionQuery, StartThread, ThreadManager,
    TurnResult,
};
use baton_protocol::shorten;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    CustomRequest, CustomResult, ErrorCode, GetTaskParams, GetTaskResult, Implementation,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
    UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};

use crate::args::{
    ForkArgs, ReplyArgs, SessionEntry, SessionsArgs, SessionsOutput, StartArgs, StrictParams,
    TurnOutput, UsageOutput, input_schema,
};
use crate::hooks::turn_hooks;
use crate::http::{Caller, HttpPolicy, RunningTurn, abort_with};
use crate::order::Ticket;

const SESSION_URI_PREFIX: &str = "baton://sessions/";
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 200;

#[derive(Clone)]
pub struct BatonServer {
    manager: Arc<ThreadManager>,
    /// Set when serving HTTP: every call is then confined and counted.
    http: Option<Arc<HttpPolicy>>,
    /// Built once; `#[tool_handler(router = …)]` reads it.
    tool_router: ToolRouter<Self>,
}

/// What a turn-running call holds while it runs over HTTP.
pub(crate) struct TurnAdmission {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _abort_link: tokio_util::sync::DropGuard,
    _running: RunningTurn,
    policy: Arc<HttpPolicy>,
}

impl TurnAdmission {
    /// Counts the turn's outcome in the HTTP server's metrics.
    pub(crate) fn record(&self, outcome: &Result<TurnResult, CoreError>) {
        let error = outcome.as_ref().err().map(CoreError::kind);
        self.policy
            .metrics
            .turn_finished(error, self.policy.turns.aborting());
    }
}

#[tool_router]
impl BatonServer {
    pub fn new(manager: Arc<ThreadManager>) -> Self {
        manager.set_task_renderer(crate::tasks::renderer());
        Self {
            manager,
            http: None,
            tool_router: Self::tool_router(),
        }
    }

    pub(crate) fn for_http(manager: Arc<ThreadManager>, policy: Arc<HttpPolicy>) -> Self {
        Self {
            http: Some(policy),
            ..Self::new(manager)
        }
    }

    #[tool(
        name = "baton",
        description = "Start a baton coding-agent session and run one turn: the agent runs shell commands and edits files in `cwd`, then answers. Returns the final message and the threadId; continue the session with baton-reply (sessions survive server restarts).",
        input_schema = input_schema::<StartArgs>(),
        output_schema = schema_for_output::<TurnOutput>()
    )]
    async fn start(
        &self,
        StrictParams(args): StrictParams<StartArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let access = match self.access(&ctx) {
            Ok(access) => access,
            Err(message) => return tool_error(message),
        };
        let request = match Self::start_request(args, access) {
            Ok(request) => request,
            Err(message) => return tool_error(message),
        };
        let (mut hooks, _heartbeat) = turn_hooks(&ctx);
        let admission = match self.admit(&mut hooks) {
            Ok(admission) => admission,
            Err(message) => return tool_error(message),
        };
        let outcome = self.manager.start_thread(request, hooks).await;
        if let Some(admission) = &admission {
            admission.record(&outcome);
        }
        turn_result(outcome)
    }

    #[tool(
        name = "baton-reply",
        description = "Continue a baton session (or a Codex CLI session) by its threadId with a new prompt. Works after any restart: the session is rebuilt from its transcript with its history and cwd.",
        input_schema = input_schema::<ReplyArgs>(),
        output_schema = schema_for_output::<TurnOutput>()
    )]
    async fn reply(
        &self,
        StrictParams(args): StrictParams<ReplyArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let access = match self.access(&ctx) {
            Ok(access) => access,
            Err(message) => return tool_error(message),
        };
        let request = Self::reply_request(args, access);
        // Calls on one thread run in the order they arrived (see `order`); the ticket is held
        // until this call is done. Over HTTP it comes with the request's parts.
        let ticket = ctx
            .extensions
            .get::<Ticket>()
            .or_else(|| {
                ctx.extensions
                    .get::<http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Ticket>())
            })
            .cloned();
        if let Some(ticket) = &ticket {
            tokio::select! {
                _ = ticket.wait_turn() => {}
                _ = ctx.ct.cancelled() => {
                    return tool_error("the call was cancelled before it started".to_owned());
                }
            }
        }
        let (mut hooks, _heartbeat) = turn_hooks(&ctx);
        let admission = match self.admit(&mut hooks) {
            Ok(admission) => admission,
            Err(message) => return tool_error(message),
        };
        let outcome = self.manager.reply(request, hooks).await;
        if let Some(admission) = &admission {
            admission.record(&outcome);
        }
        turn_result(outcome)
    }

    #[tool(
        name = "baton-fork",
        description = "Start a new session from an existing one, with its history up to a turn (`atTurn`, default all). The source session is not changed. Returns the new threadId for baton-reply.",
        input_schema = input_schema::<ForkArgs>(),
        output_schema = schema_for_output::<TurnOutput>()
    )]
    async fn fork(
        &self,
        StrictParams(args): StrictParams<ForkArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let access = match self.access(&ctx) {
            Ok(access) => access,
            Err(message) => return tool_error(message),
        };
        turn_result(
            self.manager
                .fork_as(&args.thread_id, args.at_turn, &access)
                .await,
        )
    }

    #[tool(
        name = "baton-sessions",
        description = "List baton sessions, newest first, optionally filtered by text in the prompts and answers or by cwd. Page with `cursor`.",
        input_schema = input_schema::<SessionsArgs>(),
        output_schema = schema_for_output::<SessionsOutput>()
    )]
    async fn sessions(
        &self,
        StrictParams(args): StrictParams<SessionsArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let access = match self.access(&ctx) {
            Ok(access) => access,
            Err(message) => return tool_error(message),
        };
        let (updated_after, updated_before) = match (
            parse_time("updatedAfter", args.updated_after.as_deref()),
            parse_time("updatedBefore", args.updated_before.as_deref()),
        ) {
            (Ok(after), Ok(before)) => (after, before),
            (Err(message), _) | (_, Err(message)) => return tool_error(message),
        };
        let query = SessionQuery {
            include_codex: args.include_codex,
            text: args.query.filter(|q| !q.trim().is_empty()),
            cwd: args.cwd.map(PathBuf::from),
            updated_after,
            updated_before,
            limit: args
                .limit
                .filter(|&limit| limit > 0)
                .unwrap_or(DEFAULT_PAGE)
                .min(MAX_PAGE) as usize,
            cursor: args.cursor,
            access,
        };
        let page = match self.manager.list_sessions(query).await {
            Ok(page) => page,
            Err(err) => return tool_error(err.to_string()),
        };
        let output = SessionsOutput {
            sessions: page
                .sessions
                .into_iter()
                .map(|s| SessionEntry {
                    thread_id: s.id.to_string(),
                    first_prompt: s.first_user_message,
                    last_message: s.last_agent_message.map(|m| shorten(&m, 300)),
                    cwd: s.cwd.display().to_string(),
                    updated_at: s.updated_at.to_rfc3339(),
                    turns: s.turns,
                    source: s.source.as_str().to_owned(),
                })
                .collect(),
            next_cursor: page.next_cursor,
        };
        structured(sessions_text(&output), serde_json::to_value(&output))
    }
}

impl BatonServer {
    pub(crate) fn manager(&self) -> &Arc<ThreadManager> {
        &self.manager
    }

    /// The `baton` tool's arguments as core's request; `Err` for a `config` that is not a
    /// set of config overrides.
    pub(crate) fn start_request(args: StartArgs, access: Access) -> Result<StartThread, String> {
        let config = match args.config.as_ref() {
            Some(object) => {
                baton_config::json_overrides(&serde_json::Value::Object(object.clone()))
                    .map_err(|message| format!("invalid `config`: {message}"))?
            }
            None => Vec::new(),
        };
        Ok(StartThread {
            access,
            prompt: args.prompt,
            cwd: args.cwd.map(PathBuf::from),
            model: args.model,
            profile: args.profile,
            sandbox: args.sandbox.map(Into::into),
            approval_policy: args.approval_policy.map(Into::into),
            base_instructions: args.base_instructions,
            developer_instructions: args.developer_instructions,
            config,
        })
    }

    pub(crate) fn reply_request(args: ReplyArgs, access: Access) -> ReplyToThread {
        ReplyToThread {
            thread_id: args.thread_id,
            prompt: args.prompt,
            cwd: args.cwd.map(PathBuf::from),
            compact: args.compact,
            access,
        }
    }

    /// The caller's reach: everything on stdio; over HTTP its token's owner and the server's
    /// confinement. A request that came over HTTP without a caller is refused (fail closed).
    pub(crate) fn access(&self, ctx: &RequestContext<RoleServer>) -> Result<Access, String> {
        let Some(policy) = &self.http else {
            return Ok(Access::default());
        };
        let caller = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .ok_or_else(|| "internal error: an HTTP request without a caller".to_owned())?;
        Ok(Access {
            owner: caller.owner.clone(),
            confinement: Some(policy.confinement.clone()),
        })
    }

    /// Over HTTP a turn needs one of `max_running_turns` slots (refused at once when none is
    /// free), ends when the server's shutdown grace is over, and keeps its commands in the
    /// sandbox unless the server allows `danger-full-access`.
    pub(crate) fn admit(
        &self,
        hooks: &mut baton_core::TurnHooks,
    ) -> Result<Option<TurnAdmission>, String> {
        let Some(policy) = &self.http else {
            return Ok(None);
        };
        hooks.sandbox_required = !policy.confinement.allow_danger_full_access;
        let permit = policy.turns.try_enter()?;
        Ok(Some(TurnAdmission {
            _permit: permit,
            _abort_link: abort_with(&hooks.cancel, policy.turns.abort_token()),
            _running: policy.metrics.turn_started(),
            policy: policy.clone(),
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BatonServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("baton", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "baton is a coding agent. `baton` starts a session in a directory and returns a \
             threadId; `baton-reply` continues any session by that id, even after restarts; \
             `baton-sessions` finds sessions and `baton-fork` branches one; transcripts are \
             resources at baton://sessions/<threadId>.",
        )
    }

    /// Turn-running calls of clients that declared the tasks extension become tasks; every
    /// other call goes to its tool as usual.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if crate::tasks::wants_task(&request, &ctx) {
            return self.call_as_task(request, ctx).await;
        }
        self.tool_router
            .call(ToolCallContext::new(self, request, ctx))
            .await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.get_task_state(request, ctx).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.update_task_inputs(request, ctx).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel_task_turn(request, ctx).await
    }

    /// rmcp routes requests whose params do not parse here, known methods included; those
    /// get -32602 (invalid params), the rest -32601.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let params = request.params.unwrap_or(serde_json::Value::Null);
        match request.method.as_str() {
            "tools/call" => Err(ErrorData::invalid_params(
                match serde_json::from_value::<CallToolRequestParams>(params) {
                    Err(err) => format!("invalid params for tools/call: {err}"),
                    Ok(_) => "invalid params for tools/call".to_owned(),
                },
                None,
            )),
            "tools/list" | "resources/list" | "resources/read" | "initialize"
            | "server/discover" | "ping" | "tasks/get" | "tasks/update" | "tasks/cancel" => Err(
                ErrorData::invalid_params(format!("invalid params for {}", request.method), None),
            ),
            method => Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("method not found: {method}"),
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let access = self
            .access(&ctx)
            .map_err(|message| ErrorData::internal_error(message, None))?;
        let page = self
            .manager
            .list_sessions(SessionQuery {
                limit: MAX_PAGE as usize,
                cursor: request.and_then(|r| r.cursor),
                access,
                ..Default::default()
            })
            .await
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))?;
        let resources = page
            .sessions
            .iter()
            .map(|s| {
                let title = s
                    .first_user_message
                    .as_deref()
                    .map(|m| shorten(m, 80))
                    .unwrap_or_else(|| s.id.to_string());
                Resource::new(format!("{SESSION_URI_PREFIX}{}", s.id), s.id.to_string())
                    .with_title(title)
                    .with_mime_type("text/plain")
            })
            .collect();
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let access = self
            .access(&ctx)
            .map_err(|message| ErrorData::internal_error(message, None))?;
        let Some(id) = request.uri.strip_prefix(SESSION_URI_PREFIX) else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no such resource: {}; baton serves baton://sessions/<threadId>",
                    request.uri
                ),
                // The requested URI in `data`, as the protocol recommends.
                Some(serde_json::json!({ "uri": request.uri })),
            ));
        };
        match self.manager.transcript_text_as(id, &access).await {
            Ok(text) => Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, request.uri).with_mime_type("text/plain"),
            ])
            .into()),
            // A malformed id names no resource either.
            Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::BadInput) => {
                Err(ErrorData::resource_not_found(
                    err.to_string(),
                    Some(serde_json::json!({ "uri": request.uri })),
                ))
            }
            Err(err) => Err(ErrorData::internal_error(err.to_string(), None)),
        }
    }
}

/// The page as text, for clients that show `content` rather than `structuredContent`.
fn sessions_text(output: &SessionsOutput) -> String {
    if output.sessions.is_empty() {
        return "no sessions found".to_owned();
    }
    let mut text: Vec<String> = output
        .sessions
        .iter()
        .map(|s| {
            format!(
                "{}  {}  {}  {}  ({} turns, {})",
                s.thread_id,
                s.updated_at,
                s.cwd,
                shorten(s.first_prompt.as_deref().unwrap_or(""), 80).replace('\n', " "),
                s.turns,
                s.source
            )
        })
        .collect();
    if let Some(cursor) = &output.next_cursor {
        text.push(format!("more: pass cursor {cursor}"));
    }
    text.join("\n")
}

pub(crate) fn turn_result(outcome: Result<TurnResult, CoreError>) -> CallToolResult {
    match outcome {
        Ok(TurnResult {
            thread_id,
            message,
            usage,
            plan,
        }) => {
            let output = TurnOutput {
                thread_id: thread_id.to_string(),
                content: message.clone(),
                usage: usage.map(|u| UsageOutput {
                    input_tokens: u.input_tokens,
                    cached_input_tokens: u.cached_input_tokens,
                    output_tokens: u.output_tokens,
                    context_window: u.context_window,
                    context_left_percent: u.context_left_percent,
                }),
                plan: plan.map(Into::into),
            };
            structured(message, serde_json::to_value(&output))
        }
        Err(err) => {
            tracing::info!("turn failed: {err}");
            tool_error(err.to_string())
        }
    }
}

/// `content` holds `text`; `structuredContent` the value (Claude Code shows its model only the
/// latter, so it must carry everything).
fn structured(text: String, value: Result<serde_json::Value, serde_json::Error>) -> CallToolResult {
    match value {
        Ok(value) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(value);
            result
        }
        Err(err) => tool_error(format!("internal error: cannot encode the result: {err}")),
    }
}

/// A tool-level failure: `isError` with the message in the text (clients show the text).
pub(crate) fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

fn parse_time(
    name: &str,
    text: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
    text.map(|text| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&chrono::Utc))
            .map_err(|err| {
                format!("`{name}` must be an RFC 3339 time such as 2026-11-25T09:30:00Z ({err})")
            })
    })
    .transpose()
}
