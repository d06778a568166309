//! Splitting a transcript into lines and reading a line's envelope without parsing its
//! payload.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use memchr::memmem;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The outer object of a transcript line. The payload stays raw, so a line whose type the
/// caller does not need (most `event_msg` lines) costs one scan and no allocation.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(default, borrow)]
    pub timestamp: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl<'a> Envelope<'a> {
    pub fn parse(line: &'a [u8]) -> Result<Envelope<'a>, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// The time in a line's raw `timestamp` value.
pub(crate) fn raw_time(raw: &RawValue) -> Option<DateTime<Utc>> {
    parse_time(serde_json::from_str::<&str>(raw.get()).ok()?)
}

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// One line of a transcript: where it starts, its bytes (without the newline and a trailing
/// `\r`), and whether a newline ended it (an unterminated last line may be torn).
#[derive(Clone, Copy)]
pub(crate) struct Line<'a> {
    pub start: usize,
    /// Where the next line starts.
    pub next: usize,
    pub bytes: &'a [u8],
    pub terminated: bool,
}

impl Line<'_> {
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// The lines of `bytes` starting at offset `from` (which must be the start of a line).
pub(crate) fn lines_from(bytes: &[u8], from: usize) -> impl Iterator<Item = Line<'_>> {
    let mut pos = from.min(bytes.len());
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let start = pos;
        let (end, terminated) = match memchr::memchr(b'\n', &bytes[start..]) {
            Some(offset) => (start + offset, true),
            None => (bytes.len(), false),
        };
        pos = end + 1;
        let mut content = &bytes[start..end];
        if let [rest @ .., b'\r'] = content {
            content = rest;
        }
        Some(Line {
            start,
            next: pos.min(bytes.len()),
            bytes: content,
            terminated,
        })
    })
}

/// The line that contains byte offset `pos`.
pub(crate) fn line_around(bytes: &[u8], pos: usize) -> Line<'_> {
    let start = memchr::memrchr(b'\n', &bytes[..pos]).map_or(0, |i| i + 1);
    lines_from(bytes, start).next().unwrap_or(Line {
        start,
        next: bytes.len(),
        bytes: &[],
        terminated: false,
    })
}

/// Searches backwards from `end` down to `floor` for lines whose envelope has the given
/// `type` (written compactly, as baton and Codex do), newest first. `accept` decides whether
/// a candidate line counts; the first accepted line is returned with its value.
///
/// A line that merely contains the marker inside its payload fails `accept` and the search
/// goes on before it, so this is only ever a shortcut for a forward scan, never a different
/// answer.
pub(crate) fn rfind_line_of_type<'a, T>(
    bytes: &'a [u8],
    floor: usize,
    end: usize,
    kind: &str,
    mut accept: impl FnMut(&Line<'a>) -> Option<T>,
) -> Option<(Line<'a>, T)> {
    let marker = format!("\"type\":\"{kind}\"");
    let finder = memmem::FinderRev::new(marker.as_bytes());
    let mut end = end.min(bytes.len());
    while end > floor {
        let hit = floor + finder.rfind(&bytes[floor..end])?;
        let line = line_around(bytes, hit);
        if line.start < floor {
            return None;
        }
        if let Some(value) = accept(&line) {
            return Some((line, value));
        }
        end = line.start;
    }
    None
}

/// Converts byte offsets to 1-based line numbers, counting newlines only once over a file
/// even when asked about increasing offsets many times.
pub(crate) struct LineNumbers<'a> {
    bytes: &'a [u8],
    counted_to: usize,
    newlines: usize,
}

impl<'a> LineNumbers<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            counted_to: 0,
            newlines: 0,
        }
    }

    pub fn at(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.bytes.len());
        if offset < self.counted_to {
            self.counted_to = 0;
            self.newlines = 0;
        }
        self.newlines += memchr::memchr_iter(b'\n', &self.bytes[self.counted_to..offset]).count();
        self.counted_to = offset;
        self.newlines + 1
    }
}
