//! The vocabulary of the store: what a caller asks for (a listing, a finished turn) and
//! what it gets back. Both the store and its index use these; neither owns them.

use std::path::PathBuf;

use baton_protocol::ThreadId;
use chrono::{DateTime, Utc};

use crate::{ThreadOrigin, ThreadSummary};

/// What to list: newest update first, optionally filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only threads whose cwd is exactly this folder.
    pub cwd: Option<PathBuf>,
    /// Case-insensitive (ASCII) substring of any prompt or answer.
    pub text: Option<String>,
    /// Only threads updated at or after this time.
    pub updated_after: Option<DateTime<Utc>>,
    /// Only threads updated before this time.
    pub updated_before: Option<DateTime<Utc>>,
    /// Threads per page; 0 means [`ListQuery::DEFAULT_LIMIT`].
    pub limit: usize,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only threads with this `session_meta.owner` (a caller over HTTP with a token).
    pub owner: Option<String>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: usize = 50;

    pub(crate) fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT
        } else {
            self.limit
        }
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            cwd: None,
            text: None,
            updated_after: None,
            updated_before: None,
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
            owner: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub threads: Vec<ThreadSummary>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a turn added to a thread, for [`Store::record_turn`].
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    pub id: ThreadId,
    pub path: PathBuf,
    pub cwd: PathBuf,
    pub created_at: DateTime<Utc>,
    /// The model the turn used; `None` keeps the recorded one.
    pub model: Option<String>,
    pub source: ThreadOrigin,
    /// The prompt that started the turn; `None` when the turn had none (it adds no turn).
    pub user_message: Option<String>,
    /// The turn's final answer; `None` (failed or cancelled turn) keeps the previous one.
    pub agent_message: Option<String>,
}
