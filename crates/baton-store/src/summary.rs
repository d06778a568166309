use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use baton_protocol::{ResponseItem, SessionMeta, ThreadId, leading_type};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::StoreError;
use crate::lines::{
    Envelope, FileSource, LineReader, MAX_LINE_BYTES, NextLine, Source, parse_time, raw_time,
};
use crate::reader::ReadLimits;

/// Which tool started a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadOrigin {
    Baton,
    /// Written by the Codex CLI, or a baton thread that continues a Codex session.
    Codex,
}

impl ThreadOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baton => "baton",
            Self::Codex => "codex",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "baton" => Some(Self::Baton),
            "codex" => Some(Self::Codex),
            _ => None,
        }
    }

    pub fn of(meta: &SessionMeta) -> Self {
        if meta.imported_from.is_some() || meta.originator.starts_with("codex") {
            Self::Codex
        } else {
            Self::Baton
        }
    }
}

/// One row of the session index: what listing and searching show about a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSummary {
    pub id: ThreadId,
    pub path: PathBuf,
    pub cwd: PathBuf,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_user_message: Option<String>,
    pub last_agent_message: Option<String>,
    pub model: Option<String>,
    /// The number of user messages.
    pub turns: u32,
    pub source: ThreadOrigin,
    /// Every prompt and answer, joined by newlines and cut at [`SEARCH_TEXT_LIMIT`]: what
    /// text search looks in.
    pub search_text: String,
    /// `session_meta.owner`: who may see the thread over HTTP.
    pub owner: Option<String>,
}

/// Messages kept in the index are cut to this many bytes: enough to recognise and search a
/// prompt, without copying whole pasted files into the index.
pub const SUMMARY_TEXT_LIMIT: usize = 4096;

/// Text search looks at this many bytes of a thread's prompts and answers.
pub const SEARCH_TEXT_LIMIT: usize = 64 * 1024;

/// Appends `text` to a thread's search text, keeping it under [`SEARCH_TEXT_LIMIT`].
pub fn push_search_text(search_text: &mut String, text: &str) {
    let room = SEARCH_TEXT_LIMIT.saturating_sub(search_text.len() + 1);
    if room == 0 || text.is_empty() {
        return;
    }
    let mut cut = text.len().min(room);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if !search_text.is_empty() {
        search_text.push('\n');
    }
    search_text.push_str(&text[..cut]);
}

/// Summarises one transcript by reading all of it (used by reindex), line by line: lines over
/// [`MAX_LINE_BYTES`] are passed over unread.
pub fn summarize_rollout(path: &Path) -> Result<ThreadSummary, StoreError> {
    summarize_rollout_with(path, ReadLimits::default())
}

/// [`summarize_rollout`] with other limits (tests use a small line cap).
pub fn summarize_rollout_with(
    path: &Path,
    limits: ReadLimits,
) -> Result<ThreadSummary, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the size of", path))?
        .len();
    let mut builder = SummaryBuilder::default();
    builder
        .feed(&FileSource { file: &file, len }, 0, limits.max_line_bytes)
        .map_err(StoreError::io("read the transcript", path))?;
    builder.finish(path, file_mtime(path))
}

/// [`summarize_rollout`] of a transcript already in memory, last written at `updated`.
pub fn summarize_bytes(
    path: &Path,
    bytes: &[u8],
    updated: Option<DateTime<Utc>>,
) -> Result<ThreadSummary, StoreError> {
    let mut builder = SummaryBuilder::default();
    builder
        .feed(bytes, 0, MAX_LINE_BYTES)
        .map_err(StoreError::io("read the transcript", path))?;
    builder.finish(path, updated)
}

/// Summarises a transcript from at most its first and last `QUICK_WINDOW` bytes.
///
/// Used when a lookup found a file the index did not know, right before the caller reads
/// the whole file anyway: a large transcript is not read twice. `turns` then counts only the
/// user messages in those windows; the next `record_thread` or a reindex corrects it.
pub(crate) fn summarize_rollout_quick(path: &Path) -> Result<ThreadSummary, StoreError> {
    const QUICK_WINDOW: u64 = 1 << 20;
    let file = File::open(path).map_err(StoreError::io("open the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the size of", path))?
        .len();
    if len <= 2 * QUICK_WINDOW {
        return summarize_rollout(path);
    }
    let read_window = |offset: u64| -> Result<Vec<u8>, StoreError> {
        let mut buffer = vec![0; QUICK_WINDOW as usize];
        file.read_exact_at(&mut buffer, offset)
            .map_err(StoreError::io("read the transcript", path))?;
        Ok(buffer)
    };
    let head = read_window(0)?;
    let tail = read_window(len - QUICK_WINDOW)?;
    let mut builder = SummaryBuilder::default();
    // Only whole lines: the head's last line and the tail's first line are cut.
    let head_end = memchr::memrchr(b'\n', &head).map_or(0, |i| i + 1);
    let tail_start = memchr::memchr(b'\n', &tail).map_or(tail.len(), |i| i + 1);
    let read_error = || StoreError::io("read the transcript", path);
    builder
        .feed(&head[..head_end], 0, MAX_LINE_BYTES)
        .map_err(read_error())?;
    builder
        .feed(&tail[..], tail_start as u64, MAX_LINE_BYTES)
        .map_err(read_error())?;
    builder.finish(path, file_mtime(path))
}

fn file_mtime(path: &Path) -> Option<DateTime<Utc>> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(DateTime::<Utc>::from(modified))
}

/// Accumulates what a summary needs while lines go by.
#[derive(Default)]
struct SummaryBuilder {
    meta: Option<SessionMeta>,
    first_user_event: Option<String>,
    first_user_item: Option<String>,
    last_agent_message: Option<String>,
    user_events: u32,
    user_items: u32,
    turn_cwd: Option<PathBuf>,
    turn_model: Option<String>,
    last_time: Option<DateTime<Utc>>,
    /// A turn writes its prompt and answer twice, as events and as response items: each kind
    /// gathers its own text and `finish` keeps one, as it does for the first prompt.
    search_text_from_events: String,
    search_text_from_items: String,
}

#[derive(Deserialize)]
struct EventPeek {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct TurnContextPeek {
    #[serde(default)]
    cwd: Option<PathBuf>,
    #[serde(default)]
    model: Option<String>,
}

impl SummaryBuilder {
    fn feed<S: Source + ?Sized>(
        &mut self,
        source: &S,
        from: u64,
        max_line: usize,
    ) -> std::io::Result<()> {
        let mut reader = LineReader::new(source, from, max_line);
        while let Some(next) = reader.next_line()? {
            // Over-long and corrupt lines are simply not counted: a summary is best effort.
            if let NextLine::Line(line) = next
                && !line.is_blank()
            {
                self.feed_line(line.bytes);
            }
        }
        Ok(())
    }

    fn feed_line(&mut self, line: &[u8]) {
        let Ok(envelope) = Envelope::parse(line) else {
            return;
        };
        if let Some(time) = envelope.timestamp.and_then(raw_time) {
            self.last_time = Some(time);
        }
        let payload = envelope.payload.get();
        match envelope.kind.as_ref() {
            "session_meta" if self.meta.is_none() => {
                self.meta = serde_json::from_str(payload).ok();
            }
            "turn_context" => {
                if let Ok(context) = serde_json::from_str::<TurnContextPeek>(payload) {
                    self.turn_cwd = context.cwd.or(self.turn_cwd.take());
                    self.turn_model = context
                        .model
                        .filter(|model| !model.is_empty())
                        .or(self.turn_model.take());
                }
            }
            "event_msg" => self.feed_event(payload),
            "response_item" => self.feed_item(payload),
            _ => {}
        }
    }

    fn feed_event(&mut self, payload: &str) {
        if leading_type(payload)
            .is_some_and(|kind| kind != "user_message" && kind != "agent_message")
        {
            return;
        }
        let Ok(event) = serde_json::from_str::<EventPeek>(payload) else {
            return;
        };
        if let Some(message) = &event.message {
            push_search_text(&mut self.search_text_from_events, message);
        }
        match (event.kind.as_str(), event.message) {
            ("user_message", Some(message)) => {
                self.user_events += 1;
                if self.first_user_event.is_none() {
                    self.first_user_event = Some(message);
                }
            }
            ("agent_message", Some(message)) => self.last_agent_message = Some(message),
            _ => {}
        }
    }

    fn feed_item(&mut self, payload: &str) {
        if leading_type(payload).is_some_and(|kind| kind != "message") {
            return;
        }
        let Ok(item) = ResponseItem::from_json(payload) else {
            return;
        };
        let Some((role, text)) = item.message_text() else {
            return;
        };
        if role == "user" || role == "assistant" {
            push_search_text(&mut self.search_text_from_items, &text);
        }
        match role {
            "user" if !is_context_message(&text) => {
                self.user_items += 1;
                if self.first_user_item.is_none() {
                    self.first_user_item = Some(text);
                }
            }
            "assistant" if !text.is_empty() => self.last_agent_message = Some(text),
            _ => {}
        }
    }

    fn finish(
        self,
        path: &Path,
        mtime: Option<DateTime<Utc>>,
    ) -> Result<ThreadSummary, StoreError> {
        let meta = self.meta.ok_or_else(|| StoreError::NotATranscript {
            path: path.to_path_buf(),
            reason: "it has no session_meta line".to_owned(),
        })?;
        let now = Utc::now();
        let created_at = parse_time(&meta.timestamp)
            .or_else(|| meta.id.created_at())
            .or(mtime)
            .unwrap_or(now);
        // A prompt is written both as an event and as a response item; count one kind. A
        // fork or an import copies the history as items only, so when items outnumber events
        // the items tell the whole story.
        let (first_user_message, turns, search_text) = if self.user_events >= self.user_items {
            (
                self.first_user_event,
                self.user_events,
                self.search_text_from_events,
            )
        } else {
            (
                self.first_user_item,
                self.user_items,
                self.search_text_from_items,
            )
        };
        Ok(ThreadSummary {
            id: meta.id,
            path: path.to_path_buf(),
            cwd: self.turn_cwd.unwrap_or_else(|| meta.cwd.clone()),
            created_at,
            updated_at: self.last_time.or(mtime).unwrap_or(created_at),
            first_user_message: first_user_message.map(clip),
            last_agent_message: self.last_agent_message.map(clip),
            model: self.turn_model.or_else(|| meta.model.clone()),
            turns,
            source: ThreadOrigin::of(&meta),
            search_text,
            owner: meta.owner.clone(),
        })
    }
}

pub use baton_protocol::is_context_message;

pub(crate) fn clip(mut text: String) -> String {
    if text.len() > SUMMARY_TEXT_LIMIT {
        let mut cut = SUMMARY_TEXT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
