use std::fs::File;
use std::path::{Path, PathBuf};

use baton_protocol::{Compacted, ResponseItem, SessionMeta, TurnContext};

use crate::StoreError;
use crate::lines::{
    Envelope, FileSource, Found, LineReader, MAX_LINE_BYTES, NextLine, Source, StreamLine,
    lines_before, rfind_line_of_type, rfind_line_of_types,
};

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

/// How a transcript is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// A longer line is skipped with a warning, like a corrupt line, and never held whole.
    pub max_line_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_line_bytes: MAX_LINE_BYTES,
        }
    }
}

/// Reads a rollout transcript written by baton or by Codex.
///
/// `session_meta` is read from the start; the newest `compacted` line is found by a byte
/// search from the end, and only the lines after it are parsed (of those, only
/// `response_item` and `turn_context` payloads). When no `turn_context` follows the
/// compaction, the newest one before it is found by the same byte search, without parsing
/// the lines in between, back to the user turn before the one that compacted (see
/// [`turn_context_before`]); else the settings come from `session_meta`. The file is read in blocks: memory holds the history kept and one
/// line, whatever the size of the file.
pub fn read_rollout(path: &Path) -> Result<LoadedRollout, StoreError> {
    read_rollout_with(path, ReadLimits::default())
}

/// [`read_rollout`] with other limits (tests use a small line cap).
pub fn read_rollout_with(path: &Path, limits: ReadLimits) -> Result<LoadedRollout, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the size of", path))?
        .len();
    load(path, &FileSource { file: &file, len }, limits)
}

/// [`read_rollout`] over the whole file already in memory; `path` is only used in messages.
pub fn parse_rollout(path: &Path, bytes: &[u8]) -> Result<LoadedRollout, StoreError> {
    load(path, bytes, ReadLimits::default())
}

/// Only the `session_meta` of the transcript at `path`: who started the thread, where, how.
/// Reads from the start up to that line (the first, in every transcript baton writes).
pub fn read_session_meta(path: &Path) -> Result<SessionMeta, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open the transcript", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the size of", path))?
        .len();
    session_meta_of(path, &FileSource { file: &file, len })
}

/// [`read_session_meta`] of a transcript held in memory (`path` names it in errors).
pub fn session_meta_from_bytes(path: &Path, bytes: &[u8]) -> Result<SessionMeta, StoreError> {
    session_meta_of(path, bytes)
}

pub(crate) fn session_meta_of<S: Source + ?Sized>(
    path: &Path,
    source: &S,
) -> Result<SessionMeta, StoreError> {
    let mut warnings = Warnings::new(path, source);
    let meta = first_session_meta(source, ReadLimits::default().max_line_bytes, &mut warnings)?
        .ok_or_else(|| no_session_meta(path))?;
    Ok(meta.0)
}

fn load<S: Source + ?Sized>(
    path: &Path,
    source: &S,
    limits: ReadLimits,
) -> Result<LoadedRollout, StoreError> {
    let max_line = limits.max_line_bytes;
    let read_error = || StoreError::io("read the transcript", path);
    let mut warnings = Warnings::new(path, source);
    let (meta, after_meta) = first_session_meta(source, max_line, &mut warnings)?
        .ok_or_else(|| no_session_meta(path))?;
    let compaction = rfind_line_of_type(
        source,
        after_meta,
        source.len(),
        "compacted",
        max_line,
        |line| {
            note_parsed_line();
            let envelope = Envelope::parse(line).ok()?;
            (envelope.kind == "compacted")
                .then(|| serde_json::from_str::<Compacted>(envelope.payload.get()).ok())
                .flatten()
        },
    )
    .map_err(read_error())?;
    let (history, replay_from, compaction_start) = match compaction {
        Some(found) => (
            history_after_compaction(found.value),
            found.next,
            found.start,
        ),
        None => (Vec::new(), after_meta, after_meta),
    };
    let replayed =
        replay(source, replay_from, history, max_line, &mut warnings).map_err(read_error())?;
    let last_turn_context = match replayed.last_turn_context {
        Some(context) => Some(context),
        None => turn_context_before(source, after_meta, compaction_start, max_line)
            .map_err(read_error())?,
    };
    Ok(finish(
        path,
        meta,
        last_turn_context,
        replayed.history,
        warnings.into_messages(),
        source.len(),
    ))
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

/// The newest turn context in `[floor, end)` (`end`: the newest compaction), found by a byte
/// search back from `end` that stops at the user turn before the one that compacted.
///
/// baton and Codex record a turn's settings (`turn_context`) at the start of every turn, next
/// to its user message, and a compaction happens inside a turn (newer Codex also records them
/// right after the compaction, where the replay finds them). So when a transcript records
/// settings at all, the newest ones lie in the turn that compacted, before its `user_message`
/// event; past the `user_message` event of the turn before it, the search gives up and the
/// settings come from `session_meta`. Without that stop, a long transcript that never records
/// a `turn_context` (tools that keep the settings in `session_meta` only) would be read back
/// to its first line just to find nothing.
fn turn_context_before<S: Source + ?Sized>(
    source: &S,
    floor: u64,
    end: u64,
    max_line: usize,
) -> std::io::Result<Option<TurnContext>> {
    enum Marker {
        Context(TurnContext),
        TurnStart,
    }
    #[derive(serde::Deserialize)]
    struct PayloadType<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    let mut end = end;
    let mut turn_starts = 0;
    loop {
        let found = rfind_line_of_types(
            source,
            floor,
            end,
            &["turn_context", "user_message"],
            max_line,
            |line| {
                note_parsed_line();
                let envelope = Envelope::parse(line).ok()?;
                let payload = envelope.payload.get();
                match envelope.kind.as_ref() {
                    "turn_context" => serde_json::from_str::<TurnContext>(payload)
                        .ok()
                        .map(Marker::Context),
                    "event_msg" => serde_json::from_str::<PayloadType<'_>>(payload)
                        .ok()
                        .filter(|event| event.kind == "user_message")
                        .map(|_| Marker::TurnStart),
                    _ => None,
                }
            },
        )?;
        match found {
            None => return Ok(None),
            Some(Found {
                value: Marker::Context(context),
                ..
            }) => return Ok(Some(context)),
            Some(Found { start, .. }) => {
                turn_starts += 1;
                if turn_starts == 2 {
                    return Ok(None);
                }
                end = start;
            }
        }
    }
}

struct Replayed {
    history: Vec<ResponseItem>,
    last_turn_context: Option<TurnContext>,
}

/// Applies the history rule to the lines from `from` on, starting with `history`.
fn replay<S: Source + ?Sized>(
    source: &S,
    from: u64,
    mut history: Vec<ResponseItem>,
    max_line: usize,
    warnings: &mut Warnings<'_, S>,
) -> std::io::Result<Replayed> {
    let mut last_turn_context = None;
    let mut reader = LineReader::new(source, from, max_line);
    while let Some(next) = reader.next_line()? {
        let line = match next {
            NextLine::Line(line) => line,
            NextLine::TooLong {
                number,
                len,
                terminated,
            } => {
                warnings.too_long(from, number, len, terminated, max_line);
                continue;
            }
        };
        if line.is_blank() {
            continue;
        }
        note_parsed_line();
        // Most lines are conversation items in the exact shape baton and Codex write: parse
        // the payload in one pass. Anything unusual takes the general path below.
        if let Some(item) = response_item_fast(line.bytes) {
            if item != ResponseItem::Other {
                history.push(item);
            }
            continue;
        }
        let Some(envelope) = warnings.envelope(from, &line) else {
            continue;
        };
        match envelope.kind.as_ref() {
            "response_item" => match ResponseItem::from_json(envelope.payload.get()) {
                Ok(ResponseItem::Other) => {}
                Ok(item) => history.push(item),
                Err(error) => warnings.corrupt_line(from, &line, &error),
            },
            "compacted" => match serde_json::from_str::<Compacted>(envelope.payload.get()) {
                Ok(compacted) => history = history_after_compaction(compacted),
                Err(error) => warnings.corrupt_line(from, &line, &error),
            },
            "turn_context" => {
                if let Ok(context) = serde_json::from_str::<TurnContext>(envelope.payload.get()) {
                    last_turn_context = Some(context);
                }
            }
            _ => {}
        }
    }
    Ok(Replayed {
        history,
        last_turn_context,
    })
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
fn first_session_meta<S: Source + ?Sized>(
    source: &S,
    max_line: usize,
    warnings: &mut Warnings<'_, S>,
) -> Result<Option<(SessionMeta, u64)>, StoreError> {
    let mut reader = LineReader::new(source, 0, max_line);
    loop {
        let next = reader
            .next_line()
            .map_err(StoreError::io("read the transcript", warnings.path))?;
        let line = match next {
            None => return Ok(None),
            Some(NextLine::Line(line)) => line,
            Some(NextLine::TooLong {
                number,
                len,
                terminated,
            }) => {
                warnings.too_long(0, number, len, terminated, max_line);
                continue;
            }
        };
        if line.is_blank() {
            continue;
        }
        note_parsed_line();
        let Some(envelope) = warnings.envelope(0, &line) else {
            continue;
        };
        if envelope.kind != "session_meta" {
            continue;
        }
        match serde_json::from_str::<SessionMeta>(envelope.payload.get()) {
            Ok(meta) => return Ok(Some((meta, reader.offset()))),
            Err(error) => warnings.corrupt_line(0, &line, &error),
        }
    }
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
    let unanswered = baton_protocol::unanswered_calls(history);
    // From the back, so earlier indices stay valid.
    for &index in unanswered.iter().rev() {
        if let Some(output) = baton_protocol::call_output(&history[index], ABORTED_CALL_OUTPUT) {
            history.insert(index + 1, output);
        }
    }
}

/// Collects "line N is corrupt" messages, logging each.
struct Warnings<'a, S: Source + ?Sized> {
    path: &'a Path,
    source: &'a S,
    /// The offset a reader started at and how many lines precede it, once counted.
    lines_before: Option<(u64, u64)>,
    messages: Vec<String>,
}

impl<'a, S: Source + ?Sized> Warnings<'a, S> {
    fn new(path: &'a Path, source: &'a S) -> Self {
        Self {
            path,
            source,
            lines_before: None,
            messages: Vec::new(),
        }
    }

    /// The envelope of `line`, or a warning that it is corrupt.
    fn envelope<'l>(&mut self, from: u64, line: &StreamLine<'l>) -> Option<Envelope<'l>> {
        match Envelope::parse(line.bytes) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                self.corrupt_line(from, line, &error);
                None
            }
        }
    }

    fn corrupt_line(&mut self, from: u64, line: &StreamLine<'_>, error: &serde_json::Error) {
        // A crash mid-write leaves an unterminated last line: expected, not worth a warning.
        if line.terminated {
            self.warn(
                from,
                line.number,
                &format!("skipped a corrupt line ({error})"),
            );
        }
    }

    fn too_long(&mut self, from: u64, number: u64, len: u64, terminated: bool, max_line: usize) {
        if terminated {
            self.warn(
                from,
                number,
                &format!(
                    "skipped a line of {len} bytes, over the {max_line}-byte limit for one line"
                ),
            );
        }
    }

    /// `number` counts from the line at offset `from`; the message gives the file's own.
    fn warn(&mut self, from: u64, number: u64, what: &str) {
        let before = match self.lines_before {
            Some((offset, lines)) if offset == from => lines,
            _ => {
                let lines = lines_before(self.source, from);
                self.lines_before = Some((from, lines));
                lines
            }
        };
        let message = format!("{} line {}: {what}", self.path.display(), before + number);
        tracing::warn!("{message}");
        self.messages.push(message);
    }

    fn into_messages(self) -> Vec<String> {
        self.messages
    }
}

/// Counts the lines handed to a JSON parser, so tests can tell which lines were read.
#[cfg(test)]
fn note_parsed_line() {
    tests::PARSED_LINES.with(|count| count.set(count.get() + 1));
}

#[cfg(not(test))]
fn note_parsed_line() {}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;

    thread_local! {
        pub(super) static PARSED_LINES: Cell<usize> = const { Cell::new(0) };
    }

    fn line(kind: &str, payload: serde_json::Value) -> String {
        serde_json::json!({"timestamp": "2026-01-02T03:04:05.678Z", "type": kind, "payload": payload})
            .to_string()
            + "\n"
    }

    fn user(text: &str) -> String {
        line(
            "response_item",
            serde_json::to_value(ResponseItem::user_message(text)).expect("item"),
        )
    }

    fn meta() -> String {
        line(
            "session_meta",
            serde_json::json!({
                "id": baton_protocol::ThreadId::new(),
                "timestamp": "2026-01-02T03:04:05.678Z",
                "cwd": "/p",
                "originator": "baton",
                "cli_version": "0",
            }),
        )
    }

    fn turn_context(model: &str) -> String {
        line(
            "turn_context",
            serde_json::json!({"cwd": "/p", "approval_policy": "never",
                "sandbox_policy": {"type": "read-only"}, "model": model, "summary": "auto"}),
        )
    }

    fn compacted() -> String {
        line(
            "compacted",
            serde_json::json!({"message": "s", "replacement_history": [ResponseItem::user_message("summary")]}),
        )
    }

    /// Loads `contents` and counts the lines given to a JSON parser.
    fn load_counting(contents: &str) -> (LoadedRollout, usize) {
        PARSED_LINES.with(|count| count.set(0));
        let loaded = parse_rollout(Path::new("r.jsonl"), contents.as_bytes()).expect("loads");
        (loaded, PARSED_LINES.with(Cell::get))
    }

    #[test]
    fn a_compacted_transcript_without_turn_context_parses_only_what_follows_the_compaction() {
        let mut contents = meta() + "{corrupt, and never looked at\n";
        for i in 0..500 {
            contents += &user(&format!("before {i}"));
        }
        contents += &compacted();
        contents += &user("after");
        let (loaded, parsed) = load_counting(&contents);
        assert!(loaded.last_turn_context.is_none());
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(
            loaded.history,
            [
                ResponseItem::user_message("summary"),
                ResponseItem::user_message("after")
            ]
        );
        // session_meta, the compaction, and the one line after it.
        assert_eq!(parsed, 3);
    }

    #[test]
    fn the_turn_context_before_a_compaction_is_found_without_parsing_the_lines_between() {
        let mut contents = meta() + &turn_context("older") + &turn_context("newest");
        for i in 0..500 {
            contents += &user(&format!("before {i}"));
        }
        contents += "{corrupt, and never looked at\n";
        contents += &compacted();
        contents += &user("after");
        let (loaded, parsed) = load_counting(&contents);
        let context = loaded.last_turn_context.expect("found");
        assert_eq!(context.model, "newest");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        // session_meta, the compaction, the line after it, and the newest turn context.
        assert_eq!(parsed, 4);
    }

    /// Bytes in memory that remember which ranges were read.
    struct Recording<'a> {
        bytes: &'a [u8],
        reads: std::cell::RefCell<Vec<std::ops::Range<u64>>>,
    }

    impl Source for Recording<'_> {
        fn len(&self) -> u64 {
            self.bytes.len() as u64
        }

        fn read_at(&self, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let read = self.bytes.read_at(buffer, offset)?;
            self.reads.borrow_mut().push(offset..offset + read as u64);
            Ok(read)
        }
    }

    /// A turn as baton writes it, with its settings when `context` names a model.
    fn turn(n: usize, context: Option<&str>) -> String {
        let mut text = context.map(turn_context).unwrap_or_default();
        text += &user(&format!("prompt {n}"));
        text += &line(
            "event_msg",
            serde_json::json!({"type": "user_message", "message": format!("prompt {n}")}),
        );
        text += &line(
            "response_item",
            serde_json::to_value(ResponseItem::assistant_message(format!("answer {n}")))
                .expect("item"),
        );
        text
    }

    #[test]
    fn a_long_transcript_without_turn_context_is_not_read_before_the_turn_that_compacted() {
        let mut contents = meta();
        for n in 0..300 {
            contents += &turn(n, None);
        }
        // Everything before the last two turns must stay unread.
        let unread_end = contents.len() as u64;
        contents += &turn(300, None);
        contents += &turn(301, None);
        contents += &compacted();
        contents += &user("after");
        let source = Recording {
            bytes: contents.as_bytes(),
            reads: Default::default(),
        };
        // Small blocks, so a read reaches no further than the search needs.
        crate::lines::set_block_bytes_for_test(64);
        let loaded = load(Path::new("r.jsonl"), &source, ReadLimits::default());
        crate::lines::set_block_bytes_for_test(crate::lines::BLOCK_BYTES);
        let loaded = loaded.expect("loads");
        assert!(loaded.last_turn_context.is_none());
        assert_eq!(
            loaded.history,
            [
                ResponseItem::user_message("summary"),
                ResponseItem::user_message("after")
            ]
        );
        let unread_start = meta().len() as u64 + 64;
        let reads = source.reads.borrow();
        let stray: Vec<_> = reads
            .iter()
            .filter(|read| read.start < unread_end && read.end > unread_start)
            .collect();
        assert!(
            stray.is_empty(),
            "{} reads in the old turns ({unread_start}..{unread_end}), the last at {:?}",
            stray.len(),
            stray.last()
        );
    }

    #[test]
    fn the_settings_of_the_turn_that_compacted_are_found_past_its_user_message() {
        let mut contents = meta() + &turn(0, Some("first"));
        for n in 1..50 {
            contents += &turn(n, None);
        }
        // The compacting turn: settings, prompt, then work and the compaction.
        contents += &turn(50, Some("compacting"));
        contents += &user("more work");
        contents += &compacted();
        let (loaded, _) = load_counting(&contents);
        assert_eq!(loaded.last_turn_context.expect("found").model, "compacting");
    }

    #[test]
    fn settings_recorded_only_turns_before_the_compaction_give_way_to_session_meta() {
        // A writer that records settings at every turn start would have recorded them in the
        // compacting turn: settings many turns back are not looked for.
        let mut contents = meta() + &turn(0, Some("long ago"));
        for n in 1..50 {
            contents += &turn(n, None);
        }
        contents += &compacted();
        let (loaded, _) = load_counting(&contents);
        assert!(loaded.last_turn_context.is_none());
    }

    /// One line of a transcript, or something a crash, a bug or an attacker could leave.
    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z ]{0,40}".prop_map(|text| user(&text)),
            1 => "[a-z]{0,300}".prop_map(|text| user(&text)),
            1 => Just(compacted()),
            1 => "[a-z]{0,8}".prop_map(|model| turn_context(&model)),
            1 => Just(meta()),
            1 => Just("\n".to_owned()),
            1 => Just("{corrupt\n".to_owned()),
            1 => "[a-z]{0,20}".prop_map(|text| user(&text).replace('\n', "\r\n")),
            1 => proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        ]
    }

    fn load_with(bytes: &[u8], max_line: usize, block: usize) -> Result<LoadedRollout, String> {
        crate::lines::set_block_bytes_for_test(block);
        let loaded = load(
            Path::new("fuzz.jsonl"),
            bytes,
            ReadLimits {
                max_line_bytes: max_line,
            },
        )
        .map_err(|error| error.to_string());
        crate::lines::set_block_bytes_for_test(crate::lines::BLOCK_BYTES);
        loaded
    }

    proptest! {
        /// Never panics, and reads the same whatever the block seams: small blocks put a seam
        /// inside every line, every marker and every search.
        #[test]
        fn a_transcript_reads_the_same_whatever_the_block_size(
            lines in proptest::collection::vec(any_line(), 0..40),
            torn in 0usize..30,
            max_line in prop_oneof![Just(MAX_LINE_BYTES), 150usize..400],
            block in 1usize..64,
        ) {
            let mut bytes = (meta() + &lines.concat()).into_bytes();
            bytes.truncate(bytes.len().saturating_sub(torn));
            let bytes = &bytes[..];
            let whole = load_with(bytes, max_line, crate::lines::BLOCK_BYTES);
            let seamed = load_with(bytes, max_line, block);
            prop_assert_eq!(&whole, &seamed);
            if let Ok(loaded) = whole {
                prop_assert!(loaded.history.len() <= 2 * (lines.len() + 1));
            }
        }
    }
}
