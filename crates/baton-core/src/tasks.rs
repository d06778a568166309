//! Durable MCP tasks: what a task is made of, independent of MCP's wire shapes.
//!
//! A task lives in the transcript of the thread whose turn it runs, as `baton_task` events
//! (see [`baton_protocol::TaskEvent`]): created before the caller hears of it, then each
//! change (an approval it waits for, a resumption, its end). Its id carries the thread id, so
//! any process serving the store finds it without an index. While a process runs the task it
//! also keeps a [`LiveTask`] in memory: what runs right now, the approval it waits for, and the
//! token that cancels it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use baton_protocol::{
    EventMsg, PendingApproval, ResponseItem, RolloutItem, TaskEvent, TaskState, ThreadId,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::CoreError;
use crate::hooks::{ApprovalDecision, ApprovalRequest, Approver, ProgressSink};

/// How long a finished task stays answerable, at least (the extension asks for a ttl; a day
/// lets a client that slept overnight still fetch its result).
pub const TASK_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// How often clients are asked to poll.
pub const TASK_POLL_INTERVAL_MS: u64 = 1000;
/// A task whose process died is continued at most this many times, then fails.
pub const MAX_RESUMPTIONS: u32 = 3;

/// A task's id: its thread's id and 128 random bits, as 64 hex digits. Opaque to clients;
/// enough for baton to find the thread without any index.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId {
    thread: ThreadId,
    nonce: u128,
}

impl TaskId {
    pub fn new(thread: ThreadId) -> Self {
        Self {
            thread,
            nonce: rand::random(),
        }
    }

    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// `None` for anything that is not 64 hex digits naming a thread id.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let thread = u128::from_str_radix(&text[..32], 16).ok()?;
        let nonce = u128::from_str_radix(&text[32..], 16).ok()?;
        let thread = ThreadId::parse(&Uuid::from_u128(thread).to_string()).ok()?;
        Some(Self { thread, nonce })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:032x}{:032x}",
            self.thread.as_uuid().as_u128(),
            self.nonce
        )
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// A task as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub id: TaskId,
    pub state: TaskState,
    pub status_message: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub ttl_ms: u64,
    pub poll_interval_ms: u64,
    /// The question the task waits for (`input_required`).
    pub approval: Option<PendingApproval>,
    /// The newest question the task asked, answered or not: an answer to it that arrives
    /// while a process is continuing the task is kept for when the question comes again.
    pub asked: Option<PendingApproval>,
    /// The call's result in the MCP shape (`completed`).
    pub result: Option<serde_json::Value>,
    /// Why it failed (`failed`).
    pub error: Option<String>,
    /// How many times a process continued it after the one running it died.
    pub resumptions: u32,
    /// Whether the turn's prompt is in the transcript: a process that died between writing
    /// the task and writing the prompt leaves a task with nothing to continue.
    pub prompt_recorded: bool,
    /// The turn's final answer when it is in the transcript (the process died before it
    /// marked the task completed): the task's result, whatever came after it.
    pub recorded_answer: Option<String>,
    /// A later turn started on the thread after this task's prompt (a call that did not
    /// continue the task first): the task's turn cannot be continued any more.
    pub superseded: bool,
}

impl TaskView {
    /// The task's state from the `baton_task` events of a transcript, `None` when it has none.
    pub fn from_timeline(id: TaskId, items: &[RolloutItem]) -> Option<Self> {
        let key = id.to_string();
        let mut view: Option<TaskView> = None;
        for item in items {
            let event = match item {
                RolloutItem::EventMsg(EventMsg::BatonTask(event)) if event.task_id == key => event,
                // The task is written just before its turn records the prompt; a second
                // prompt after it starts another turn.
                RolloutItem::ResponseItem(ResponseItem::Message { role, .. }) if role == "user" => {
                    if let Some(view) = view.as_mut() {
                        view.superseded |= view.prompt_recorded;
                        view.prompt_recorded = true;
                    }
                    continue;
                }
                // Recorded when a turn ends with the model's answer.
                RolloutItem::EventMsg(EventMsg::AgentMessage { message }) => {
                    if let Some(view) = view.as_mut()
                        && view.prompt_recorded
                        && !view.superseded
                        && view.recorded_answer.is_none()
                    {
                        view.recorded_answer = Some(message.clone());
                    }
                    continue;
                }
                _ => continue,
            };
            match &mut view {
                Some(view) => view.apply(event),
                None => view = Some(TaskView::created(id, event)),
            }
        }
        view
    }

    /// The task as its creation event `event` made it.
    pub(crate) fn created(id: TaskId, event: &TaskEvent) -> Self {
        let mut view = TaskView {
            id,
            state: event.state,
            status_message: None,
            created_at: event.at.clone(),
            updated_at: event.at.clone(),
            ttl_ms: event.ttl_ms.unwrap_or(TASK_TTL_MS),
            poll_interval_ms: TASK_POLL_INTERVAL_MS,
            approval: None,
            asked: None,
            result: None,
            error: None,
            resumptions: 0,
            prompt_recorded: false,
            recorded_answer: None,
            superseded: false,
        };
        view.apply(event);
        view
    }

    fn apply(&mut self, event: &TaskEvent) {
        self.state = event.state;
        self.updated_at = event.at.clone();
        self.status_message = event.status_message.clone();
        self.approval = event.approval.clone();
        if event.approval.is_some() {
            self.asked = event.approval.clone();
        }
        if let Some(ttl) = event.ttl_ms {
            self.ttl_ms = ttl;
        }
        if let Some(resumed) = event.resumed {
            self.resumptions = self.resumptions.max(resumed);
        }
        if event.result.is_some() {
            self.result = event.result.clone();
        }
        if event.error.is_some() {
            self.error = event.error.clone();
        }
    }
}

/// Turns a turn's outcome into the task's result, in the shape the call would have returned
/// (the MCP layer knows it; core only stores it).
pub type RenderResult =
    Arc<dyn Fn(&Result<crate::TurnResult, CoreError>) -> serde_json::Value + Send + Sync>;

/// A person's answer to an approval, or why none came.
pub(crate) type ApprovalAnswer = Result<ApprovalDecision, String>;

/// An answer kept for a task's question: the question's key and the answer.
pub(crate) type KeptAnswer = (String, ApprovalAnswer);

/// A task this process runs right now.
pub(crate) struct LiveTask {
    pub(crate) cancel: CancellationToken,
    /// What does not change while it runs: its id, times, ttl, resumptions.
    seed: TaskView,
    status_message: Mutex<String>,
    pending: Mutex<Option<(PendingApproval, oneshot::Sender<ApprovalAnswer>)>>,
    /// An answer that came before its question was asked again here (a client that answered
    /// what `tasks/get` showed while this process was still continuing the task).
    early_answer: Mutex<Option<KeptAnswer>>,
    /// Set by `tasks/cancel`: a turn aborted otherwise (the server shutting down) leaves the
    /// task unfinished, for the next process to continue.
    cancelled_by_client: std::sync::atomic::AtomicBool,
}

impl LiveTask {
    pub(crate) fn new(
        cancel: CancellationToken,
        seed: TaskView,
        status_message: &str,
    ) -> Arc<Self> {
        Arc::new(Self {
            cancel,
            seed,
            status_message: Mutex::new(status_message.to_owned()),
            pending: Mutex::new(None),
            early_answer: Mutex::new(None),
            cancelled_by_client: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Cancels the task's turn at the client's request.
    pub(crate) fn cancel_for_client(&self) {
        self.cancelled_by_client
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
    }

    pub(crate) fn cancelled_by_client(&self) -> bool {
        self.cancelled_by_client
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Its state right now: waiting for an approval, or working on what the turn reported last.
    pub(crate) fn view(&self) -> TaskView {
        let mut view = self.seed.clone();
        view.approval = self.pending_approval();
        view.state = match view.approval {
            Some(_) => TaskState::InputRequired,
            None => TaskState::Working,
        };
        // The last progress said what ran before the question ("waiting for the model").
        view.status_message = Some(match &view.approval {
            Some(approval) => format!(
                "waiting for approval to run `{}`",
                approval.command.join(" ")
            ),
            None => self.status_message(),
        });
        view
    }

    pub(crate) fn status_message(&self) -> String {
        self.status_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn pending_approval(&self) -> Option<PendingApproval> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(approval, _)| approval.clone())
    }

    /// Delivers an answer for the approval waiting under `key`; `false` when none waits there
    /// (unknown or already answered keys are ignored, as the extension asks).
    pub(crate) fn answer(&self, key: &str, answer: ApprovalAnswer) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.take() {
            Some((approval, sender)) if approval.call_id == key => sender.send(answer).is_ok(),
            None if self
                .seed
                .asked
                .as_ref()
                .is_some_and(|approval| approval.call_id == key) =>
            {
                // The question recorded before the restart, not asked again yet: keep the
                // answer for when it is.
                self.keep_early_answer(key, answer);
                true
            }
            other => {
                *pending = other;
                false
            }
        }
    }

    /// Keeps an answer to the question under `key` for when the turn asks it.
    pub(crate) fn keep_early_answer(&self, key: &str, answer: ApprovalAnswer) {
        *self
            .early_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((key.to_owned(), answer));
    }
}

#[async_trait]
impl ProgressSink for LiveTask {
    async fn progress(&self, message: String) {
        *self
            .status_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = message;
    }
}

/// Waits for `tasks/update` to answer an approval (the turn recorded the question first).
#[async_trait]
impl Approver for LiveTask {
    async fn request_approval(&self, request: ApprovalRequest) -> Result<ApprovalDecision, String> {
        let early = self
            .early_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((key, answer)) = early
            && key == request.call_id
        {
            return answer;
        }
        let (sender, receiver) = oneshot::channel();
        let approval = PendingApproval {
            call_id: request.call_id,
            command: request.command,
            cwd: request.cwd,
            reason: request.reason,
        };
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some((approval, sender));
        let answer = tokio::select! {
            answer = receiver => answer.unwrap_or_else(|_| Err("the approval request was dropped".to_owned())),
            _ = self.cancel.cancelled() => Err("the task was cancelled".to_owned()),
        };
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = None;
        answer
    }
}

/// The tasks this process runs, by id.
#[derive(Default)]
pub(crate) struct LiveTasks {
    tasks: Mutex<HashMap<TaskId, Arc<LiveTask>>>,
}

impl LiveTasks {
    pub(crate) fn get(&self, id: TaskId) -> Option<Arc<LiveTask>> {
        self.lock().get(&id).cloned()
    }

    pub(crate) fn insert(&self, id: TaskId, task: Arc<LiveTask>) {
        self.lock().insert(id, task);
    }

    pub(crate) fn remove(&self, id: TaskId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Arc<LiveTask>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_round_trips_and_names_its_thread() {
        let thread = ThreadId::new();
        let id = TaskId::new(thread);
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        let parsed = TaskId::parse(&text).expect("parses");
        assert_eq!(parsed, id);
        assert_eq!(parsed.thread(), thread);
        assert_ne!(TaskId::new(thread), id, "128 random bits per task");
    }

    #[test]
    fn malformed_task_ids_are_refused() {
        for text in ["", "../etc/passwd", &"g".repeat(64), &"0".repeat(63)] {
            assert!(TaskId::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn the_newest_event_decides_the_state() {
        let id = TaskId::new(ThreadId::new());
        let mut created = TaskEvent::new(id.to_string(), TaskState::Working);
        created.ttl_ms = Some(TASK_TTL_MS);
        let mut waiting = TaskEvent::new(id.to_string(), TaskState::InputRequired);
        waiting.approval = Some(PendingApproval {
            call_id: "c1".into(),
            command: vec!["touch".into(), "x".into()],
            cwd: "/tmp".into(),
            reason: "asks".into(),
        });
        let mut resumed = TaskEvent::new(id.to_string(), TaskState::Working);
        resumed.resumed = Some(1);
        let other = TaskEvent::new(TaskId::new(id.thread()).to_string(), TaskState::Failed);
        let items: Vec<RolloutItem> = [created, waiting.clone(), other]
            .into_iter()
            .map(|e| RolloutItem::EventMsg(EventMsg::BatonTask(Box::new(e))))
            .collect();
        let view = TaskView::from_timeline(id, &items).expect("found");
        assert_eq!(view.state, TaskState::InputRequired);
        assert_eq!(view.approval, waiting.approval);
        let mut items = items;
        items.push(RolloutItem::EventMsg(EventMsg::BatonTask(Box::new(
            resumed,
        ))));
        let view = TaskView::from_timeline(id, &items).expect("found");
        assert_eq!((view.state, view.resumptions), (TaskState::Working, 1));
        assert_eq!(view.approval, None);
        assert!(TaskView::from_timeline(TaskId::new(id.thread()), &[]).is_none());
    }
}
