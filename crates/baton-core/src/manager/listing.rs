//! Listing sessions and showing a thread's transcript as text.

use baton_protocol::{EventMsg, RolloutItem, history_text};
use baton_store::ListQuery;

use super::{SessionPage, SessionQuery, ThreadManager, blocking};
use crate::access::Access;
use crate::error::CoreError;
use crate::usage::TurnUsage;

impl ThreadManager {
    /// Lists sessions, newest first (the `baton-sessions` tool, `baton sessions list`).
    ///
    /// With `include_codex`, the first page also holds the Codex CLI's sessions that baton has
    /// not imported (they have no place in the index, so they are not paged).
    pub async fn list_sessions(&self, query: SessionQuery) -> Result<SessionPage, CoreError> {
        // The index holds canonical cwds; a symlinked or relative path must match them.
        let cwd = query
            .cwd
            .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir));
        let store = self.store.clone();
        let list_query = ListQuery {
            cwd: cwd.clone(),
            text: query.text.clone(),
            updated_after: query.updated_after,
            updated_before: query.updated_before,
            limit: query.limit,
            cursor: query.cursor.clone(),
            owner: query.access.owner.clone(),
        };
        let page = blocking(move || store.list(&list_query)).await??;
        let mut sessions = page.threads;
        // Codex's sessions have no owner: a caller with one never sees them.
        if query.include_codex && query.cursor.is_none() && query.access.owner.is_none() {
            let text = query.text.as_deref().map(str::to_lowercase);
            let codex = self.codex_sessions().await?.into_iter().filter(|s| {
                cwd.as_ref().is_none_or(|dir| &s.cwd == dir)
                    && query.updated_after.is_none_or(|t| s.updated_at >= t)
                    && query.updated_before.is_none_or(|t| s.updated_at < t)
                    && text
                        .as_deref()
                        .is_none_or(|t| s.search_text.to_lowercase().contains(t))
            });
            sessions.extend(codex);
            sessions.sort_by_key(|s| std::cmp::Reverse(s.updated_at));
            sessions.truncate(query.limit.max(1));
        }
        Ok(SessionPage {
            sessions,
            next_cursor: page.next_cursor,
        })
    }

    /// The conversation of a thread as readable text, with each turn's token usage and the
    /// plan updates where they happened.
    pub async fn transcript_text(&self, thread_id: &str) -> Result<String, CoreError> {
        self.transcript_text_as(thread_id, &Access::default()).await
    }

    /// [`ThreadManager::transcript_text`] within a caller's reach.
    pub async fn transcript_text_as(
        &self,
        thread_id: &str,
        access: &Access,
    ) -> Result<String, CoreError> {
        let loaded = self.read_visible(thread_id, access).await?;
        let path = loaded.path.clone();
        let store = self.store.clone();
        let id = loaded.meta.id;
        // From the store (files or a database); a Codex session is only a file of Codex's.
        let timeline = blocking(move || match store.read_timeline(id) {
            Ok(timeline) => Ok(timeline),
            Err(baton_store::StoreError::NotFound { .. }) => baton_store::read_timeline(&path),
            Err(err) => Err(err),
        })
        .await??;
        Ok(format!(
            "thread {}\ncwd: {}\nfile: {}\n\n{}",
            loaded.meta.id,
            loaded.meta.cwd.display(),
            loaded.path.display(),
            timeline_text(&timeline)
        ))
    }
}

/// A transcript's lines as text for people: the conversation (as [`history_text`] writes it),
/// compactions, plan updates, and after each turn the tokens its model requests used.
fn timeline_text(timeline: &[RolloutItem]) -> String {
    let mut out = String::new();
    let mut turn = TurnUsage::default();
    let mut requests = 0usize;
    let flush = |out: &mut String, turn: &mut TurnUsage, requests: &mut usize| {
        if *requests > 0 {
            out.push_str(&format!(
                "[usage] {} model requests: input {} tokens ({} cached), output {} tokens\n\n",
                requests, turn.input_tokens, turn.cached_input_tokens, turn.output_tokens
            ));
        }
        *turn = TurnUsage::default();
        *requests = 0;
    };
    for item in timeline {
        match item {
            RolloutItem::TurnContext(_) => flush(&mut out, &mut turn, &mut requests),
            RolloutItem::ResponseItem(item) => {
                out.push_str(&history_text(std::slice::from_ref(item)))
            }
            RolloutItem::Compacted(compacted) => {
                out.push_str(&format!("[compacted]\n{}\n\n", compacted.message.trim()))
            }
            RolloutItem::EventMsg(EventMsg::TokenCount {
                input_tokens,
                cached_input_tokens,
                output_tokens,
                total_tokens,
            }) if *input_tokens > 0 || *output_tokens > 0 => {
                // Codex writes its counts in another shape; those read as zeros and are left out.
                requests += 1;
                turn.add(&baton_model::TokenUsage {
                    input_tokens: *input_tokens,
                    cached_input_tokens: *cached_input_tokens,
                    output_tokens: *output_tokens,
                    total_tokens: *total_tokens,
                });
            }
            RolloutItem::EventMsg(EventMsg::PlanUpdate(plan)) => out.push_str(&format!(
                "[plan] {}\n{}\n",
                plan.progress_line(),
                plan.checklist()
            )),
            RolloutItem::EventMsg(EventMsg::TurnAborted { reason }) => {
                out.push_str(&format!("[turn aborted: {reason}]\n\n"))
            }
            RolloutItem::EventMsg(EventMsg::Error { message }) => {
                out.push_str(&format!("[error] {message}\n\n"))
            }
            RolloutItem::SessionMeta(_) | RolloutItem::EventMsg(_) => {}
        }
    }
    flush(&mut out, &mut turn, &mut requests);
    out
}
