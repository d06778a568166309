//! The MCP side of a turn's hooks: progress notifications and approvals by elicitation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton_core::{ApprovalDecision, ApprovalRequest, Approver, ProgressSink, TurnHooks};
use rmcp::RoleServer;
use rmcp::model::{
    ElicitRequestParams, ElicitationAction, ElicitationSchema, EnumSchema,
    ProgressNotificationParam, ProgressToken, ProtocolVersion,
};
use rmcp::service::{Peer, RequestContext};
use tokio_util::sync::CancellationToken;

/// A request with a progress token gets a notification at least every 10 s while its turn
/// runs (so clients with a request timeout keep waiting); every 5 s leaves room to spare.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Sends `notifications/progress` for the request's progress token.
pub(crate) struct McpProgress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
    step: AtomicU32,
    /// The call's token. Once it fires (cancel, stdin EOF, signal) rmcp's service loop may be
    /// gone, and a notification would then wait for it forever, holding up the turn's abort.
    call: CancellationToken,
}

impl McpProgress {
    async fn send(&self, message: String) {
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        let param = ProgressNotificationParam::new(self.token.clone(), f64::from(step))
            .with_message(message);
        tokio::select! {
            biased;
            _ = self.call.cancelled() => {
                tracing::debug!("progress notification dropped: the call is over");
            }
            sent = self.peer.notify_progress(param) => {
                if let Err(err) = sent {
                    tracing::debug!("progress notification not sent: {err}");
                }
            }
        }
    }
}

#[async_trait]
impl ProgressSink for McpProgress {
    async fn progress(&self, message: String) {
        self.send(message).await;
    }
}

/// Asks the person through `elicitation/create` (form mode) when the client supports it.
pub(crate) struct ElicitationApprover {
    peer: Peer<RoleServer>,
    cancel: CancellationToken,
}

#[async_trait]
impl Approver for ElicitationApprover {
    async fn request_approval(&self, request: ApprovalRequest) -> Result<ApprovalDecision, String> {
        let params = approval_form(
            &request.command,
            &request.cwd,
            request.thread_id,
            &request.reason,
        )?;
        // The person may take minutes; a cancelled call must not wait for them.
        let result = tokio::select! {
            result = self.peer.create_elicitation(params) => result
                .map_err(|err| format!("the client did not answer the approval request ({err})"))?,
            _ = self.cancel.cancelled() => return Err("the call was cancelled".to_owned()),
        };
        decision_of(result.action, result.content.as_ref())
    }
}

/// The approval form (SPEC: one required enum `decision`), the same for a call's elicitation
/// and a task's input request, so a question asked again after a restart reads the same.
pub(crate) fn approval_form(
    command: &[String],
    cwd: &std::path::Path,
    thread_id: baton_protocol::ThreadId,
    reason: &str,
) -> Result<ElicitRequestParams, String> {
    let schema = ElicitationSchema::builder()
        .required_enum_schema(
            "decision",
            EnumSchema::builder(vec![
                "approve".into(),
                "approve_for_session".into(),
                "deny".into(),
            ])
            .title("Decision")
            .build(),
        )
        .build()
        .map_err(|err| format!("the approval form could not be built ({err})"))?;
    let message = format!(
        "baton wants to run `{}` in {} (thread {thread_id}): {reason}",
        command.join(" "),
        cwd.display(),
    );
    Ok(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema: schema,
    })
}

/// The person's answer to the approval form: anything but an accepted, known decision denies
/// (fail safe); a declined or dismissed form says so.
pub(crate) fn decision_of(
    action: ElicitationAction,
    content: Option<&serde_json::Value>,
) -> Result<ApprovalDecision, String> {
    match action {
        ElicitationAction::Accept => Ok(
            match content
                .and_then(|c| c.get("decision"))
                .and_then(|d| d.as_str())
            {
                Some("approve") => ApprovalDecision::Approve,
                Some("approve_for_session") => ApprovalDecision::ApproveForSession,
                _ => ApprovalDecision::Deny,
            },
        ),
        ElicitationAction::Decline => Err("the user declined the approval form".to_owned()),
        _ => Err("the user dismissed the approval form".to_owned()),
    }
}

/// The hooks of a tool call: its cancellation, progress (if a token came with it) and the
/// approver (if the client can answer elicitation on this protocol version).
pub(crate) fn turn_hooks(ctx: &RequestContext<RoleServer>) -> (TurnHooks, Option<Heartbeat>) {
    let progress = ctx.meta.get_progress_token().map(|token| {
        Arc::new(McpProgress {
            peer: ctx.peer.clone(),
            token,
            step: AtomicU32::new(0),
            call: ctx.ct.clone(),
        })
    });
    let form_supported = ctx
        .client_capabilities()
        .and_then(|caps| caps.elicitation)
        .is_some_and(|e| e.form.is_some() || e.url.is_none());
    // From 2026-07-28 on, servers may not send requests to the client.
    let legacy_session = ctx
        .protocol_version()
        .is_none_or(|v| v < ProtocolVersion::V_2026_07_28);
    let approver = (form_supported && legacy_session).then(|| {
        Arc::new(ElicitationApprover {
            peer: ctx.peer.clone(),
            cancel: ctx.ct.clone(),
        }) as Arc<dyn Approver>
    });
    let heartbeat = progress
        .clone()
        .map(|sink| Heartbeat::start(sink, ctx.ct.clone()));
    let hooks = TurnHooks {
        cancel: ctx.ct.child_token(),
        progress: progress.map(|p| p as Arc<dyn ProgressSink>),
        approver,
        sandbox_required: false,
        task: None,
    };
    (hooks, heartbeat)
}

/// Sends "still working" progress while a turn runs; stops when dropped.
pub(crate) struct Heartbeat {
    stop: CancellationToken,
}

impl Heartbeat {
    fn start(sink: Arc<McpProgress>, call: CancellationToken) -> Self {
        let stop = call.child_token();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = ticker.tick() => {
                        sink.send(format!("working ({} s)", started.elapsed().as_secs())).await;
                    }
                }
            }
        });
        Self { stop }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
