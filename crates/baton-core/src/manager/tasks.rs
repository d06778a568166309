//! Durable MCP tasks on the thread manager: a turn run for a task, the task's state from
//! memory or from the transcript, answering and cancelling it, and continuing a task whose
//! process died.
//!
//! Invariant: a task's state changes are written into its thread's transcript while that
//! thread's lock is held, so exactly one process runs (or continues) a task at a time, and a
//! process that finds the task unfinished with the lock free knows its runner is gone.

use std::sync::Arc;

use baton_config::Config;
use baton_protocol::{EventMsg, ResponseItem, RolloutItem, TaskEvent, TaskState, ThreadId};
use baton_store::{StoreError, TranscriptWriter};
use tokio::sync::oneshot;

use super::slots::forget_after_store_error;
use super::turns::TurnStart;
use super::{ReplyToThread, StartThread, ThreadManager, TurnResult, blocking};
use crate::access::Access;
use crate::agent::{LiveThread, blocking_section};
use crate::error::{CoreError, ErrorKind};
use crate::hooks::{ApprovalDecision, ApprovalRequest, Approver, TurnHooks};
use crate::tasks::{LiveTask, MAX_RESUMPTIONS, RenderResult, TASK_TTL_MS, TaskId, TaskView};

/// What a task-augmented call gives the manager: how to render the result, and where to
/// announce the task once it is on disk (or why the call failed before that).
pub struct TaskSetup {
    render: RenderResult,
    announce: Option<oneshot::Sender<Result<TaskView, String>>>,
}

impl TaskSetup {
    /// The setup, and the receiver that hears of the task (or of the error) first.
    pub fn new(render: RenderResult) -> (Self, oneshot::Receiver<Result<TaskView, String>>) {
        let (sender, receiver) = oneshot::channel();
        (
            Self {
                render,
                announce: Some(sender),
            },
            receiver,
        )
    }

    fn announce(&mut self, outcome: Result<TaskView, String>) {
        if let Some(sender) = self.announce.take() {
            // The caller may have gone (a dropped connection): the task runs on regardless.
            let _ = sender.send(outcome);
        }
    }
}

/// A task whose turn runs now, in this process.
pub(super) struct OpenTask {
    id: TaskId,
    render: RenderResult,
}

/// What a look-up of a task found.
#[derive(Debug)]
pub enum TaskLookup {
    /// The task's state, from this process's memory or from the transcript.
    Found(TaskView),
    /// Unfinished, and no process holds its thread: the one that ran it died. Continue it with
    /// [`ThreadManager::resume_task`].
    Orphaned(TaskView),
}

impl ThreadManager {
    /// `baton` as a task: returns when the turn ends; the task is announced through `setup`
    /// as soon as it is on disk.
    pub async fn start_thread_task(
        &self,
        request: StartThread,
        hooks: TurnHooks,
        mut setup: TaskSetup,
    ) -> Result<TurnResult, CoreError> {
        let outcome = self
            .start_thread_with(request, hooks, Some(&mut setup))
            .await;
        if let Err(err) = &outcome {
            setup.announce(Err(err.to_string()));
        }
        outcome
    }

    /// `baton-reply` as a task (see [`ThreadManager::start_thread_task`]).
    pub async fn reply_task(
        &self,
        request: ReplyToThread,
        hooks: TurnHooks,
        mut setup: TaskSetup,
    ) -> Result<TurnResult, CoreError> {
        let outcome = self.reply_with(request, hooks, Some(&mut setup)).await;
        if let Err(err) = &outcome {
            setup.announce(Err(err.to_string()));
        }
        outcome
    }

    /// Records a task that finished at once (a fork asks no model) in `thread`'s transcript.
    pub async fn record_finished_task(
        &self,
        thread: ThreadId,
        tool: &str,
        result: serde_json::Value,
    ) -> Result<TaskView, CoreError> {
        let id = TaskId::new(thread);
        let (mut view, created) = new_task(id, tool);
        let mut done = TaskEvent::new(id.to_string(), TaskState::Completed);
        done.result = Some(result.clone());
        let store = self.store.clone();
        blocking(move || -> Result<(), StoreError> {
            let _lock = store.lock_thread(thread)?;
            let mut writer = store.append_to(thread)?;
            writer.append(&task_item(created))?;
            writer.append(&task_item(done))?;
            writer.sync()
        })
        .await??;
        view.state = TaskState::Completed;
        view.result = Some(result);
        view.status_message = None;
        Ok(view)
    }

    /// A task's state, for `tasks/get`: from memory when this process runs it, else from its
    /// thread's transcript. Another owner's task is not found, like an unknown id.
    pub async fn task(&self, id: &str, access: &Access) -> Result<TaskLookup, CoreError> {
        let id = self.visible_task(id, access).await?;
        if let Some(live) = self.live_tasks.get(id) {
            return Ok(TaskLookup::Found(live.view()));
        }
        let mut view = self.recorded_task(id).await?;
        if view.state.is_terminal() {
            return Ok(TaskLookup::Found(view));
        }
        match self.nobody_holds(id.thread()).await? {
            Ok(()) => Ok(TaskLookup::Orphaned(view)),
            Err(StoreError::Busy { pid, .. }) => {
                // What the other process does right now is in its memory, not on disk.
                if view.state == TaskState::Working {
                    view.status_message = Some(if pid == Some(std::process::id()) {
                        "about to continue in this server".to_owned()
                    } else {
                        "running in another baton process".to_owned()
                    });
                }
                Ok(TaskLookup::Found(view))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Delivers a person's answer to the approval the task waits for (`tasks/update`). Keys
    /// that no question waits under are ignored.
    pub async fn answer_task(
        &self,
        id: &str,
        access: &Access,
        key: &str,
        answer: Result<ApprovalDecision, String>,
    ) -> Result<(), CoreError> {
        let id = self.visible_task(id, access).await?;
        match self.live_tasks.get(id) {
            Some(live) => {
                if !live.answer(key, answer) {
                    tracing::info!(task = %id, "no question waits under key {key:?}; answer ignored");
                }
                Ok(())
            }
            None => {
                // Known, but not running here. An answer to a finished task is ignored; one for
                // a task another process runs would be lost while the task waits on, so say so.
                let view = self.recorded_task(id).await?;
                if view.state.is_terminal() {
                    return Ok(());
                }
                // The thread's slot held here is either a short probe (another look-up) or
                // this process continuing the task: look again briefly to tell them apart.
                for _ in 0..100 {
                    if let Some(live) = self.live_tasks.get(id) {
                        live.answer(key, answer);
                        return Ok(());
                    }
                    match self.nobody_holds(id.thread()).await? {
                        Ok(()) => break,
                        Err(StoreError::Busy { pid, .. }) if pid == Some(std::process::id()) => {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        Err(StoreError::Busy { .. }) => {
                            return Err(CoreError::TaskElsewhere { id: id.to_string() });
                        }
                        Err(err) => return Err(err.into()),
                    }
                }
                // No process runs it, or this one is about to continue it: the question the
                // transcript shows is asked again then, so its answer is kept (one key per
                // task, so memory stays bounded).
                if view.asked.is_some_and(|approval| approval.call_id == key) {
                    self.early_answers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(id, (key.to_owned(), answer));
                    // The task may have been opened here meanwhile (after its opening took
                    // the kept answers): hand the answer to it directly. `open_task`
                    // registers before it takes, so one of the two sees the answer.
                    if let Some(live) = self.live_tasks.get(id) {
                        let kept = self
                            .early_answers
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .remove(&id);
                        if let Some((key, answer)) = kept {
                            live.answer(&key, answer);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Aborts the task's turn (`tasks/cancel`) as a cancelled call would: its processes are
    /// killed, `turn_aborted` is recorded and the thread stays usable. A finished task is left
    /// as it is.
    pub async fn cancel_task(&self, id: &str, access: &Access) -> Result<(), CoreError> {
        let id = self.visible_task(id, access).await?;
        if let Some(live) = self.live_tasks.get(id) {
            live.cancel_for_client();
            return Ok(());
        }
        let view = self.recorded_task(id).await?;
        if view.state.is_terminal() {
            return Ok(());
        }
        let store = self.store.clone();
        let thread = id.thread();
        let cancelled = TaskEvent::new(id.to_string(), TaskState::Cancelled);
        let written = blocking(move || -> Result<bool, StoreError> {
            let _lock = store.lock_thread(thread)?;
            // Under the lock: another process may have finished or resumed it meanwhile.
            let view = TaskView::from_timeline(id, &store.read_timeline(thread)?);
            if view.is_none_or(|view| view.state.is_terminal()) {
                return Ok(false);
            }
            let mut writer = store.append_to(thread)?;
            writer.append(&RolloutItem::EventMsg(EventMsg::TurnAborted {
                reason: "cancelled".into(),
            }))?;
            writer.append(&task_item(cancelled))?;
            writer.sync()?;
            Ok(true)
        })
        .await?;
        match written {
            Ok(true) => {
                self.note_open_task(id, false);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(StoreError::Busy { .. }) => Err(CoreError::TaskElsewhere { id: id.to_string() }),
            Err(err) => Err(err.into()),
        }
    }

    /// Continues a task whose process died, from its transcript: completed items are kept, a
    /// call that was running is recorded as aborted and the model asked again; a question that
    /// waited for approval is asked again. After [`MAX_RESUMPTIONS`] the task fails instead.
    /// The task is announced through `setup` once its resumption is on disk.
    pub async fn resume_task(
        &self,
        id: TaskId,
        hooks: TurnHooks,
        mut setup: TaskSetup,
    ) -> Result<(), CoreError> {
        let outcome = self.resume_task_with(id, hooks, &mut setup).await;
        if let Err(err) = &outcome {
            setup.announce(Err(err.to_string()));
        }
        outcome
    }

    async fn resume_task_with(
        &self,
        id: TaskId,
        hooks: TurnHooks,
        setup: &mut TaskSetup,
    ) -> Result<(), CoreError> {
        let thread = id.thread();
        let config = self.config(None)?;
        let slot = self.slot(thread);
        // Not waited for: what holds the slot here (another resumption of this task, a turn
        // on the thread, a look-up) may run for as long as a turn, and `tasks/get` must
        // answer now; the task is reported as it is, and a later poll looks again.
        let Ok(mut guard) = slot.live.try_lock() else {
            return Err(CoreError::Store(StoreError::Busy {
                id: thread,
                pid: Some(std::process::id()),
                host: None,
                since: None,
            }));
        };
        let _lock = blocking_section(|| self.store.lock_thread(thread))?;
        // Decided under the lock: another process may have resumed or finished it first.
        let view = self.recorded_task(id).await?;
        if view.state.is_terminal() {
            setup.announce(Ok(view));
            return Ok(());
        }
        let store = self.store.clone();
        let mut writer = blocking(move || store.append_to(thread)).await??;
        // Memory may hold what the dead process had not written: read the thread again.
        let live = self.load_thread(thread, &config).await?;
        *guard = Some(live);
        let Some(live) = guard.as_mut() else {
            return Err(CoreError::Internal("thread slot emptied".into()));
        };
        let outcome = self
            .resume_locked(view, live, &mut *writer, &config, hooks, setup)
            .await;
        forget_after_store_error(&mut guard, &outcome);
        slot.touch();
        outcome.map(drop)
    }

    /// Continues `view`'s task on `live`, whose lock the caller holds: fails it after
    /// [`MAX_RESUMPTIONS`], else records the resumption and runs the rest of its turn.
    async fn resume_locked(
        &self,
        view: TaskView,
        live: &mut LiveThread,
        writer: &mut dyn TranscriptWriter,
        config: &Config,
        mut hooks: TurnHooks,
        setup: &mut TaskSetup,
    ) -> Result<TurnResult, CoreError> {
        let id = view.id;
        let thread = id.thread();
        if !view.prompt_recorded {
            // Resuming would answer from the history before it: the previous turn's answer
            // would become this task's result.
            let reason = format!(
                "the baton process running the task stopped before it recorded the prompt, so \
                 nothing of the turn ran; send the call again (thread {thread} is unchanged)"
            );
            return Err(fail_task(view, reason, live, writer, setup)?);
        }
        if let Some(answer) = view.recorded_answer.clone() {
            // Died after the answer was on disk but before the task was marked done: that
            // answer is the result, even when later turns ran on the thread since.
            let window = config.context_window_for(&live.settings.model);
            let outcome = Ok(TurnResult {
                thread_id: thread,
                message: answer,
                usage: Some(crate::TurnUsage::default().with_window(window)),
                plan: if view.superseded {
                    None
                } else {
                    live.plan.clone()
                },
            });
            let mut event = TaskEvent::new(id.to_string(), TaskState::Completed);
            event.result = Some((setup.render)(&outcome));
            blocking_section(|| -> Result<(), StoreError> {
                writer.append(&task_item(event.clone()))?;
                writer.sync()
            })?;
            live.file_len = writer.len();
            let mut view = view;
            view.state = TaskState::Completed;
            view.result = event.result;
            view.status_message = None;
            view.approval = None;
            setup.announce(Ok(view));
            return outcome;
        }
        if view.superseded {
            let reason = format!(
                "a later turn started on thread {thread} before this task's turn could be \
                 continued (its process had stopped); what the task's turn did is kept in the thread"
            );
            return Err(fail_task(view, reason, live, writer, setup)?);
        }
        if view.resumptions >= MAX_RESUMPTIONS {
            let reason = format!(
                "the turn was resumed {MAX_RESUMPTIONS} times and the process running it stopped each time \
                 (killed, out of memory, or its machine was lost), so baton stopped resuming it; \
                 thread {thread} keeps everything recorded so far: continue it with baton-reply"
            );
            return Err(fail_task(view, reason, live, writer, setup)?);
        }
        let rerun_call = match view.state {
            TaskState::InputRequired => view.approval.as_ref().map(|a| a.call_id.clone()),
            _ => None,
        };
        let resumed = view.resumptions + 1;
        let mut event = TaskEvent::new(id.to_string(), TaskState::Working);
        event.resumed = Some(resumed);
        event.status_message = Some(format!(
            "resumed after the process running it stopped (resumption {resumed} of {MAX_RESUMPTIONS})"
        ));
        let mut seed = view;
        seed.resumptions = resumed;
        let task = self.open_task(writer, seed, event, setup, &mut hooks)?;
        live.file_len = writer.len();
        let prompt = last_prompt(&live.history);
        let outcome = self
            .run_turn_from(
                live,
                writer,
                config,
                TurnStart::Resume { rerun_call, prompt },
                &hooks,
                false,
            )
            .await;
        self.close_task(writer, task, &outcome);
        outcome
    }

    /// Before a new turn on `live` (locked by the caller): a task the thread's last turn ran
    /// for, left unfinished by a process that died, is continued first. Only a turn that did
    /// not end with the model's answer can have one, so finished threads cost nothing here.
    pub(super) async fn finish_orphaned_task(
        &self,
        live: &mut LiveThread,
        writer: &mut dyn TranscriptWriter,
        config: &Config,
        hooks: &TurnHooks,
    ) {
        let ended_with_answer = matches!(
            live.history.last(),
            Some(ResponseItem::Message { role, .. }) if role == "assistant"
        );
        let Some(render) = self.task_renderer.get().cloned() else {
            return;
        };
        if ended_with_answer {
            return;
        }
        let store = self.store.clone();
        let thread = live.id;
        let items = match blocking(move || store.read_timeline(thread)).await {
            Ok(Ok(items)) => items,
            _ => return,
        };
        let Some(view) = unfinished_task(thread, &items) else {
            return;
        };
        tracing::info!(task = %view.id, "continuing a task whose process died before this call");
        let approver: Arc<dyn Approver> = match &hooks.approver {
            Some(approver) => approver.clone(),
            None => Arc::new(NoOneToAsk),
        };
        let task_hooks = TurnHooks {
            cancel: hooks.cancel.child_token(),
            sandbox_required: hooks.sandbox_required,
            // This call drives the task's turn now, so the task's questions (one that waited
            // when its process died, too) go to this caller, or are denied when it cannot
            // answer: waiting for a `tasks/update` that may never come would hang the call.
            approver: Some(approver),
            ..Default::default()
        };
        let (mut setup, _announced) = TaskSetup::new(render);
        if let Err(err) = self
            .resume_locked(view, live, writer, config, task_hooks, &mut setup)
            .await
        {
            tracing::warn!(thread = %thread, "the unfinished task ended with: {err}");
        }
    }

    /// How tasks' results are rendered when this manager continues a task on its own (the
    /// MCP server sets it; without it, only `tasks/get` continues tasks).
    pub fn set_task_renderer(&self, render: RenderResult) {
        let _ = self.task_renderer.set(render);
    }

    /// Opens a new task for the turn about to run on `thread` (locked by the caller).
    pub(super) fn open_new_task(
        &self,
        writer: &mut dyn TranscriptWriter,
        thread: ThreadId,
        tool: &str,
        setup: &mut TaskSetup,
        hooks: &mut TurnHooks,
    ) -> Result<OpenTask, CoreError> {
        let (seed, created) = new_task(TaskId::new(thread), tool);
        self.open_task(writer, seed, created, setup, hooks)
    }

    /// Writes `event` durably, then registers the task as running here, routes the turn's
    /// progress and approvals to it, and announces it.
    fn open_task(
        &self,
        writer: &mut dyn TranscriptWriter,
        seed: TaskView,
        event: TaskEvent,
        setup: &mut TaskSetup,
        hooks: &mut TurnHooks,
    ) -> Result<OpenTask, CoreError> {
        let status = event.status_message.clone().unwrap_or_default();
        blocking_section(|| -> Result<(), StoreError> {
            writer.append(&task_item(event))?;
            writer.sync()
        })?;
        let id = seed.id;
        self.note_open_task(id, true);
        let live = LiveTask::new(hooks.cancel.clone(), seed, &status);
        hooks.progress = Some(live.clone());
        // Unless the caller answers them itself, the task's questions wait for `tasks/update`.
        hooks.approver.get_or_insert_with(|| live.clone());
        hooks.task = Some(id.to_string());
        self.live_tasks.insert(id, live.clone());
        // After registering (see `answer_task`): an answer that came while the task was not
        // running here yet.
        let early = self
            .early_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if let Some((key, answer)) = early {
            live.answer(&key, answer);
        }
        setup.announce(Ok(live.view()));
        Ok(OpenTask {
            id,
            render: setup.render.clone(),
        })
    }

    /// Records how the task ended, while the thread is still locked, and forgets it from
    /// memory. A tool error is a completed task whose result says so, as the call would
    /// have returned it; a turn the client cancelled is a cancelled task, while one the
    /// server's shutdown aborted stays unfinished.
    pub(super) fn close_task(
        &self,
        writer: &mut dyn TranscriptWriter,
        task: OpenTask,
        outcome: &Result<TurnResult, CoreError>,
    ) {
        let by_client = self
            .live_tasks
            .get(task.id)
            .is_some_and(|live| live.cancelled_by_client());
        let event = match outcome {
            Err(err) if err.kind() == ErrorKind::Cancelled && by_client => {
                TaskEvent::new(task.id.to_string(), TaskState::Cancelled)
            }
            Err(err) if err.kind() == ErrorKind::Cancelled => {
                // The server stopped (shutdown grace over), not the client: the task goes on
                // in the next process that serves the store.
                let mut event = TaskEvent::new(task.id.to_string(), TaskState::Working);
                event.status_message = Some(
                    "interrupted: the baton server running it stopped; the next one continues it"
                        .to_owned(),
                );
                event
            }
            _ => {
                let mut event = TaskEvent::new(task.id.to_string(), TaskState::Completed);
                event.result = Some((task.render)(outcome));
                event
            }
        };
        let ended = event.state.is_terminal();
        let written = blocking_section(|| -> Result<(), StoreError> {
            writer.append(&task_item(event))?;
            writer.sync()
        });
        match written {
            Ok(()) if ended => self.note_open_task(task.id, false),
            Ok(()) => {}
            // The next look-up finds the task unfinished with the lock free and continues it.
            Err(err) => {
                tracing::warn!(task = %task.id, "could not record the end of the task: {err}")
            }
        }
        self.live_tasks.remove(task.id);
        self.early_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&task.id);
    }

    /// The tasks the store's listing notes as unfinished whose threads no process holds:
    /// their processes died. A server continues them when it starts (see `resume_task`);
    /// one waiting for an approval is left to the next `tasks/get` or call on its thread.
    pub async fn orphaned_tasks(&self) -> Result<Vec<TaskId>, CoreError> {
        let store = self.store.clone();
        let noted = blocking(move || store.open_tasks()).await??;
        let mut orphaned = Vec::new();
        for (thread, task) in noted {
            let Some(id) = TaskId::parse(&task).filter(|id| id.thread() == thread) else {
                continue;
            };
            let view = match self.recorded_task(id).await {
                Ok(view) => view,
                Err(err) => {
                    tracing::warn!(task = %id, "a task noted as open cannot be read: {err}");
                    continue;
                }
            };
            if view.state.is_terminal() {
                // Ended, but the note was lost (a crash between the two writes).
                self.note_open_task(id, false);
                continue;
            }
            if view.state == TaskState::InputRequired {
                // Continuing it here would only wait for an answer while holding the thread
                // from a call that could give one; `tasks/get` or a call on the thread
                // continues it, and asks its question again then.
                continue;
            }
            if let Ok(Ok(())) = self.nobody_holds(thread).await {
                orphaned.push(id);
            }
        }
        Ok(orphaned)
    }

    /// Whether no process holds `thread` (`Ok(())`), or who does (`Busy`). The probe takes
    /// the thread's slot first, so it never makes a call of this process on the thread find
    /// its own probe holding the lock; a call running here counts as a holder.
    async fn nobody_holds(&self, thread: ThreadId) -> Result<Result<(), StoreError>, CoreError> {
        let slot = self.slot(thread);
        let Ok(_running_here) = slot.live.try_lock() else {
            return Ok(Err(StoreError::Busy {
                id: thread,
                pid: Some(std::process::id()),
                host: None,
                since: None,
            }));
        };
        let store = self.store.clone();
        blocking(move || store.lock_thread(thread).map(drop)).await
    }

    /// Notes (or forgets) the task in the store's listing; a cache, so failures are logged.
    fn note_open_task(&self, id: TaskId, open: bool) {
        let task = id.to_string();
        let noted = blocking_section(|| {
            self.store
                .record_open_task(id.thread(), open.then_some(task.as_str()))
        });
        if let Err(err) = noted {
            tracing::warn!(task = %id, "could not note the task in the listing: {err}");
        }
    }

    /// The task's id when the caller may see its thread; every failure reads "not found".
    async fn visible_task(&self, id: &str, access: &Access) -> Result<TaskId, CoreError> {
        let unknown = || CoreError::UnknownTask {
            id: baton_protocol::shorten(id, 80),
        };
        let task = TaskId::parse(id).ok_or_else(unknown)?;
        self.check_owner(task.thread(), access)
            .await
            .map_err(|_| unknown())?;
        Ok(task)
    }

    /// The task as its thread's transcript records it.
    async fn recorded_task(&self, id: TaskId) -> Result<TaskView, CoreError> {
        let store = self.store.clone();
        let thread = id.thread();
        let items = match blocking(move || store.read_timeline(thread)).await? {
            Ok(items) => items,
            Err(StoreError::NotFound { .. }) => {
                return Err(CoreError::UnknownTask { id: id.to_string() });
            }
            Err(err) => return Err(err.into()),
        };
        TaskView::from_timeline(id, &items).ok_or(CoreError::UnknownTask { id: id.to_string() })
    }
}

/// The approver of a call whose client cannot answer questions: every question is denied
/// with the reason, as in a call without tasks.
struct NoOneToAsk;

#[async_trait::async_trait]
impl Approver for NoOneToAsk {
    async fn request_approval(&self, _: ApprovalRequest) -> Result<ApprovalDecision, String> {
        Err(
            "no one can be asked for approval here (the client does not support elicitation)"
                .to_owned(),
        )
    }
}

/// Records that baton gave up on `view`'s task (on `live`, locked by the caller) and announces
/// it; the error the turn ends with.
fn fail_task(
    mut view: TaskView,
    reason: String,
    live: &mut LiveThread,
    writer: &mut dyn TranscriptWriter,
    setup: &mut TaskSetup,
) -> Result<CoreError, CoreError> {
    let mut failed = TaskEvent::new(view.id.to_string(), TaskState::Failed);
    failed.error = Some(reason.clone());
    blocking_section(|| -> Result<(), StoreError> {
        writer.append(&task_item(failed))?;
        writer.sync()
    })?;
    live.file_len = writer.len();
    view.state = TaskState::Failed;
    view.error = Some(reason.clone());
    view.status_message = None;
    view.approval = None;
    setup.announce(Ok(view));
    Ok(CoreError::Internal(reason))
}

/// The newest task of `thread`'s transcript that has not ended, if any.
fn unfinished_task(thread: ThreadId, items: &[RolloutItem]) -> Option<TaskView> {
    let newest = items.iter().rev().find_map(|item| match item {
        RolloutItem::EventMsg(EventMsg::BatonTask(event)) => Some(event.task_id.clone()),
        _ => None,
    })?;
    let id = TaskId::parse(&newest).filter(|id| id.thread() == thread)?;
    TaskView::from_timeline(id, items).filter(|view| !view.state.is_terminal())
}

/// A new task's first state and the event that records it.
fn new_task(id: TaskId, tool: &str) -> (TaskView, TaskEvent) {
    let mut event = TaskEvent::new(id.to_string(), TaskState::Working);
    event.tool = Some(tool.to_owned());
    event.ttl_ms = Some(TASK_TTL_MS);
    event.status_message = Some("started".to_owned());
    let view = TaskView::created(id, &event);
    (view, event)
}

fn task_item(event: TaskEvent) -> RolloutItem {
    RolloutItem::EventMsg(EventMsg::BatonTask(Box::new(event)))
}

/// The prompt of the history's last user turn (what the listing counts as that turn).
fn last_prompt(history: &[baton_protocol::ResponseItem]) -> String {
    baton_protocol::user_turn_starts(history)
        .last()
        .and_then(|&index| history.get(index))
        .and_then(|item| item.message_text())
        .map(|(_, text)| text)
        .unwrap_or_default()
}
