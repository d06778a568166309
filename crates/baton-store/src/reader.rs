use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use baton_protocol::{Compacted, ResponseItem, SessionMeta, TurnContext};
use serde_json::value::RawValue;

use crate::StoreError;
use crate::lines::{Envelope, Line, LineNumbers, lines_from, rfind_line_of_type};

/// The output recorded for a tool call whose process died before the call finished.
pub const ABORTED_CALL_OUTPUT: &str =
    "aborted: the process running this call stopped before it finished";

/// A transcript read back into what a resumed thread needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRollout {
    pub path: PathBuf,
    pub meta: SessionMeta,
    pub last_turn_context: Option<TurnContext>,
    /// The conversation to send to the model: `response_item`s in order, starting from the
    /// newest compaction; every tool call paired with an output.
    pub history: Vec<ResponseItem>,
    /// Corrupt lines that were skipped, with their line numbers.
    pub warnings: Vec<String>,
    /// Bytes read, to notice later appends by another process.
    pub file_len: u64,
}

/// The first step of reading a large file from its end.
const TAIL_WINDOW: u64 = 4 << 20;
/// Files larger than this are read from the end first: when a compaction sits near the end
/// (the usual shape of a long session), the bytes before it are never read. Smaller files
/// are read whole: reading a few more MB from the page cache costs less than a second step.
const TAIL_READ_THRESHOLD: u64 = 32 << 20;
/// How much of the file start is read to find `session_meta` without reading it all.
const HEAD_WINDOW: u64 = 1 << 20;

/// Reads a rollout transcript written by baton or by Codex.
///
/// Only the lines after the newest `compacted` line are parsed (plus the `session_meta`),
/// and of those only `response_item` and `turn_context` payloads; everything else is skipped
/// without being decoded. A large file whose last compaction is near its end is read from
/// the end, so most of it never leaves the page cache.
pub fn read_rollout(path: &Path) -> Result<LoadedRollout, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the size of", path))?
        .len();
    if len > TAIL_READ_THRESHOLD {
        // Read from the end: a compaction near the end makes the rest irrelevant.
        if let Some(loaded) = read_from_tail(path, &file, len)? {
            return Ok(loaded);
        }
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    (&file)
        .read_to_end(&mut bytes)
        .map_err(StoreError::io("read the transcript", path))?;
    parse_rollout(path, &bytes)
}

/// [`read_rollout`] over the whole file already in memory; `path` is only used in messages.
pub fn parse_rollout(path: &Path, bytes: &[u8]) -> Result<LoadedRollout, StoreError> {
    let mut warnings = Warnings::new(path, bytes, Prefix::Known(0));
    let (meta, after_meta) =
        first_session_meta(bytes, &mut warnings).ok_or_else(|| no_session_meta(path))?;
    let replay_from = find_last_compaction(bytes, after_meta).unwrap_or(after_meta);
    let replayed = replay(bytes, replay_from, &mut warnings);
    let last_turn_context = replayed
        .last_turn_context()
        .or_else(|| turn_context_before(bytes, after_meta, replay_from));
    Ok(finish(
        path,
        meta,
        last_turn_context,
        replayed.history,
        warnings.into_messages(),
        bytes.len() as u64,
    ))
}

/// The fast path for large files: `session_meta` from the head, then the file read
/// backwards in growing steps until the bytes read hold the newest compaction and the newest
/// turn context. Each byte is read at most once; without a compaction this ends as a full
/// parse. `None` when the head holds no `session_meta` (the caller then reads it all).
fn read_from_tail(path: &Path, file: &File, len: u64) -> Result<Option<LoadedRollout>, StoreError> {
    let head = read_range(path, file, 0, HEAD_WINDOW.min(len), &[])?;
    let head_lines = &head[..memchr::memrchr(b'\n', &head).map_or(0, |i| i + 1)];
    let mut head_warnings = Warnings::new(path, head_lines, Prefix::Known(0));
    let Some((meta, after_meta)) = first_session_meta(head_lines, &mut head_warnings) else {
        return Ok(None);
    };
    let file_len = usize::try_from(len).map_err(|_| too_large(path))?;
    // One buffer for the whole file, filled from the end; untouched pages cost nothing.
    let mut buffer = vec![0u8; file_len];
    let mut start = file_len;
    // Bytes from `searched_to` on were already searched for a compaction line.
    let mut searched_to = file_len;
    let mut compaction: Option<usize> = None;
    let mut step = usize::try_from(TAIL_WINDOW).unwrap_or(usize::MAX);
    loop {
        let mut new_start = start.saturating_sub(step);
        if new_start <= after_meta {
            new_start = 0;
        }
        file.read_exact_at(&mut buffer[new_start..start], new_start as u64)
            .map_err(StoreError::io("read the transcript", path))?;
        start = new_start;
        if start == 0 {
            return parse_rollout(path, &buffer).map(Some);
        }
        // The first line read is probably cut; whole lines start after its newline.
        let cut = memchr::memchr(b'\n', &buffer[start..]).map_or(file_len, |i| start + i + 1);
        if compaction.is_none() && cut < searched_to {
            compaction = find_last_compaction(&buffer[cut..searched_to], 0).map(|at| cut + at);
            searched_to = cut;
        }
        if let Some(at) = compaction {
            let window = &buffer[cut..];
            let replay_from = at - cut;
            let prefix = Prefix::File {
                file,
                up_to: cut as u64,
            };
            let mut warnings = Warnings::new(path, window, prefix);
            let replayed = replay(window, replay_from, &mut warnings);
            let last_turn_context = replayed
                .last_turn_context()
                .or_else(|| turn_context_before(window, 0, replay_from));
            if last_turn_context.is_some() {
                let mut messages = head_warnings.into_messages();
                messages.extend(warnings.into_messages());
                return Ok(Some(finish(
                    path,
                    meta,
                    last_turn_context,
                    replayed.history,
                    messages,
                    len,
                )));
            }
        }
        step = step.saturating_mul(4);
    }
}

fn too_large(path: &Path) -> StoreError {
    StoreError::NotATranscript {
        path: path.to_path_buf(),
        reason: "it is too large to read on this machine".to_owned(),
    }
}

/// Reads `len` bytes at `start`, followed by `after` (bytes already read from further on).
fn read_range(
    path: &Path,
    file: &File,
    start: u64,
    len: u64,
    after: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut buffer = Vec::with_capacity(len.saturating_add(after.len()));
    buffer.resize(len, 0);
    file.read_exact_at(&mut buffer, start)
        .map_err(StoreError::io("read the transcript", path))?;
    buffer.extend_from_slice(after);
    Ok(buffer)
}

fn no_session_meta(path: &Path) -> StoreError {
    StoreError::NotATranscript {
        path: path.to_path_buf(),
        reason: "it has no session_meta line".to_owned(),
    }
}

fn finish(
    path: &Path,
    meta: SessionMeta,
    last_turn_context: Option<TurnContext>,
    mut history: Vec<ResponseItem>,
    warnings: Vec<String>,
    file_len: u64,
) -> LoadedRollout {
    pair_interrupted_calls(&mut history);
    LoadedRollout {
        path: path.to_path_buf(),
        meta,
        last_turn_context,
        history,
        warnings,
        file_len,
    }
}

/// The start of the newest line at or after `floor` that is a real `compacted` line.
fn find_last_compaction(bytes: &[u8], floor: usize) -> Option<usize> {
    rfind_line_of_type(bytes, floor, bytes.len(), "compacted", |line| {
        let envelope = Envelope::parse(line.bytes).ok()?;
        (envelope.kind == "compacted")
            .then(|| serde_json::from_str::<Compacted>(envelope.payload.get()).ok())
            .flatten()
    })
    .map(|(line, _)| line.start)
}

/// The newest turn context in `bytes[floor..end]`.
fn turn_context_before(bytes: &[u8], floor: usize, end: usize) -> Option<TurnContext> {
    rfind_line_of_type(bytes, floor, end, "turn_context", |line| {
        let envelope = Envelope::parse(line.bytes).ok()?;
        (envelope.kind == "turn_context")
            .then(|| serde_json::from_str::<TurnContext>(envelope.payload.get()).ok())
            .flatten()
    })
    .map(|(_, context)| context)
}

struct Replayed<'a> {
    history: Vec<ResponseItem>,
    turn_contexts: Vec<&'a RawValue>,
}

impl Replayed<'_> {
    fn last_turn_context(&self) -> Option<TurnContext> {
        self.turn_contexts
            .iter()
            .rev()
            .find_map(|raw| serde_json::from_str::<TurnContext>(raw.get()).ok())
    }
}

/// Applies the history rule to the lines from `from` on.
fn replay<'a>(bytes: &'a [u8], from: usize, warnings: &mut Warnings<'_>) -> Replayed<'a> {
    let mut history = Vec::new();
    let mut turn_contexts = Vec::new();
    for line in lines_from(bytes, from) {
        if line.is_blank() {
            continue;
        }
        // Most lines are conversation items in the exact shape baton and Codex write: parse
        // the payload in one pass. Anything unusual takes the general path below.
        if let Some(item) = response_item_fast(line.bytes) {
            if item != ResponseItem::Other {
                history.push(item);
            }
            continue;
        }
        let Some(envelope) = warnings.envelope(&line) else {
            continue;
        };
        match envelope.kind.as_ref() {
            "response_item" => match ResponseItem::from_json(envelope.payload.get()) {
                Ok(ResponseItem::Other) => {}
                Ok(item) => history.push(item),
                Err(error) => warnings.corrupt_line(&line, &error),
            },
            "compacted" => match serde_json::from_str::<Compacted>(envelope.payload.get()) {
                Ok(compacted) => history = history_after_compaction(compacted),
                Err(error) => warnings.corrupt_line(&line, &error),
            },
            "turn_context" => turn_contexts.push(envelope.payload),
            _ => {}
        }
    }
    Replayed {
        history,
        turn_contexts,
    }
}

/// The item of a `{"timestamp":"…","type":"response_item","payload":{…}}` line, parsed without
/// first parsing the envelope; `None` for any other shape (the caller then parses it fully).
fn response_item_fast(line: &[u8]) -> Option<ResponseItem> {
    const START: &[u8] = b"{\"timestamp\":\"";
    const MIDDLE: &[u8] = b"\",\"type\":\"response_item\",\"payload\":";
    let rest = line.strip_prefix(START)?;
    // A timestamp holds no quote, so the first quote ends it.
    let quote = memchr::memchr(b'"', rest)?;
    let payload = rest[quote..].strip_prefix(MIDDLE)?;
    let payload = payload.strip_suffix(b"}")?;
    let text = std::str::from_utf8(payload).ok()?;
    // Extra keys after the payload (Codex's `metadata`) make this fail: trailing characters.
    ResponseItem::from_json(text).ok()
}

/// The first line of type `session_meta` that parses, and the offset of the line after it.
fn first_session_meta(bytes: &[u8], warnings: &mut Warnings<'_>) -> Option<(SessionMeta, usize)> {
    for line in lines_from(bytes, 0) {
        if line.is_blank() {
            continue;
        }
        let Some(envelope) = warnings.envelope(&line) else {
            continue;
        };
        if envelope.kind != "session_meta" {
            continue;
        }
        match serde_json::from_str::<SessionMeta>(envelope.payload.get()) {
            Ok(meta) => return Some((meta, line.next)),
            Err(error) => warnings.corrupt_line(&line, &error),
        }
    }
    None
}

/// What a compaction leaves: its replacement history, or (older Codex files that only have
/// the summary) one user message carrying the summary.
fn history_after_compaction(compacted: Compacted) -> Vec<ResponseItem> {
    match compacted.replacement_history {
        Some(items) => items
            .into_iter()
            .filter(|item| *item != ResponseItem::Other)
            .collect(),
        None if compacted.message.is_empty() => Vec::new(),
        None => vec![ResponseItem::user_message(compacted.message)],
    }
}

/// Gives every tool call without an output a synthetic one right after it: the model APIs
/// reject a history with an unanswered call, and a call is unanswered when the process died
/// while the tool ran.
pub(crate) fn pair_interrupted_calls(history: &mut Vec<ResponseItem>) {
    let unanswered: Vec<usize> = {
        let answered: HashSet<&str> = history
            .iter()
            .filter_map(ResponseItem::output_call_id)
            .collect();
        history
            .iter()
            .enumerate()
            .filter(|(_, item)| item.call_id().is_some_and(|id| !answered.contains(id)))
            .map(|(index, _)| index)
            .collect()
    };
    // From the back, so earlier indices stay valid.
    for &index in unanswered.iter().rev() {
        let output = match &history[index] {
            ResponseItem::CustomToolCall { call_id, .. } => ResponseItem::CustomToolCallOutput {
                call_id: call_id.clone(),
                output: ABORTED_CALL_OUTPUT.to_owned(),
            },
            other => match other.call_id() {
                Some(call_id) => ResponseItem::FunctionCallOutput {
                    call_id: call_id.to_owned(),
                    output: ABORTED_CALL_OUTPUT.to_owned(),
                },
                None => continue,
            },
        };
        history.insert(index + 1, output);
    }
}

/// How many lines precede the bytes being read: known, or counted from the file on the
/// first warning (only windows read from the end need that, and only when a line is bad).
enum Prefix<'a> {
    Known(usize),
    File { file: &'a File, up_to: u64 },
}

impl Prefix<'_> {
    fn lines(&mut self) -> usize {
        if let Prefix::File { file, up_to } = *self {
            *self = Prefix::Known(count_newlines(file, up_to));
        }
        match self {
            Prefix::Known(lines) => *lines,
            Prefix::File { .. } => 0,
        }
    }
}

fn count_newlines(file: &File, up_to: u64) -> usize {
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let mut newlines = 0;
    while offset < up_to {
        let want =
            usize::try_from(up_to - offset).map_or(buffer.len(), |left| left.min(buffer.len()));
        match file.read_at(&mut buffer[..want], offset) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                newlines += memchr::memchr_iter(b'\n', &buffer[..read]).count();
                offset += read as u64;
            }
        }
    }
    newlines
}

/// Collects "line N is corrupt" messages, logging each.
struct Warnings<'a> {
    path: &'a Path,
    prefix: Prefix<'a>,
    line_numbers: LineNumbers<'a>,
    messages: Vec<String>,
}

impl<'a> Warnings<'a> {
    fn new(path: &'a Path, bytes: &'a [u8], prefix: Prefix<'a>) -> Self {
        Self {
            path,
            prefix,
            line_numbers: LineNumbers::new(bytes),
            messages: Vec::new(),
        }
    }

    /// The envelope of `line`, or a warning that it is corrupt.
    fn envelope<'l>(&mut self, line: &Line<'l>) -> Option<Envelope<'l>> {
        match Envelope::parse(line.bytes) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                self.corrupt_line(line, &error);
                None
            }
        }
    }

    fn corrupt_line(&mut self, line: &Line<'_>, error: &serde_json::Error) {
        // A crash mid-write leaves an unterminated last line: expected, not worth a warning.
        if !line.terminated {
            return;
        }
        let number = self.prefix.lines() + self.line_numbers.at(line.start);
        let message = format!(
            "{} line {number}: skipped a corrupt line ({error})",
            self.path.display()
        );
        tracing::warn!("{message}");
        self.messages.push(message);
    }

    fn into_messages(self) -> Vec<String> {
        self.messages
    }
}
