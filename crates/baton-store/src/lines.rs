//! Reading a transcript line by line in bounded memory, searching it backwards for a line
//! type, and reading a line's envelope without parsing its payload.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

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

/// The longest transcript line read by default: a longer line is skipped like a corrupt one
/// and never held in memory whole, so one huge line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// How much of a transcript is read at a time.
pub(crate) const BLOCK_BYTES: usize = 1 << 20;

/// The first read when looking at one line found by a search.
const FIRST_STEP: usize = 16 << 10;

#[cfg(not(test))]
fn block_bytes() -> usize {
    BLOCK_BYTES
}

/// Tests shrink the block to put block seams everywhere.
#[cfg(test)]
fn block_bytes() -> usize {
    tests::BLOCK_BYTES_FOR_TEST.with(std::cell::Cell::get)
}

#[cfg(test)]
pub(crate) fn set_block_bytes_for_test(bytes: usize) {
    tests::BLOCK_BYTES_FOR_TEST.with(|block| block.set(bytes.max(1)));
}

/// Bytes that can be read at any offset: a transcript file, or one already in memory.
pub(crate) trait Source {
    /// The length read from: bytes appended later are not seen.
    fn len(&self) -> u64;
    /// Fills `buffer` from `offset`, short only at the end.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buffer.len().min(self.len() - start);
        buffer[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A transcript file, as long as it was when opened.
pub(crate) struct FileSource<'a> {
    pub file: &'a File,
    pub len: u64,
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let want = usize::try_from(self.len.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let mut read = 0;
        while read < want {
            match self
                .file
                .read_at(&mut buffer[read..want], offset + read as u64)
            {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(read)
    }
}

/// One line read by a [`LineReader`].
pub(crate) enum NextLine<'a> {
    Line(StreamLine<'a>),
    /// A line longer than the cap: read past in blocks, never held whole.
    TooLong {
        /// 1-based, counted from where the reader started.
        number: u64,
        /// Its length, without the newline.
        len: u64,
        terminated: bool,
    },
}

pub(crate) struct StreamLine<'a> {
    /// 1-based, counted from where the reader started.
    pub number: u64,
    /// Without the newline and a trailing `\r`.
    pub bytes: &'a [u8],
    /// Whether a newline ended it (an unterminated last line may be torn).
    pub terminated: bool,
}

impl StreamLine<'_> {
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// Reads lines from an offset of a [`Source`] in fixed blocks: memory stays within one block
/// plus one line of at most `max_line` bytes, whatever the size of the file.
pub(crate) struct LineReader<'s, S: Source + ?Sized> {
    source: &'s S,
    block: Vec<u8>,
    pos: usize,
    filled: usize,
    /// The source offset of `block[filled]`.
    read_to: u64,
    /// The start of the next line.
    next_start: u64,
    /// A line that spans blocks, assembled here.
    line: Vec<u8>,
    max_line: usize,
    lines: u64,
}

impl<'s, S: Source + ?Sized> LineReader<'s, S> {
    /// Reads from `start`, which must be the start of a line.
    pub fn new(source: &'s S, start: u64, max_line: usize) -> Self {
        Self::with_block(source, start, max_line, block_bytes())
    }

    /// Reads with a smaller block: for one line, most often short.
    fn with_block(source: &'s S, start: u64, max_line: usize, block: usize) -> Self {
        let block = usize::try_from(source.len().saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(block);
        Self {
            source,
            block: vec![0; block.max(1)],
            pos: 0,
            filled: 0,
            read_to: start,
            next_start: start,
            line: Vec::new(),
            max_line,
            lines: 0,
        }
    }

    /// Where the next line starts.
    pub fn offset(&self) -> u64 {
        self.next_start
    }

    fn refill(&mut self) -> io::Result<bool> {
        let read = self.source.read_at(&mut self.block, self.read_to)?;
        self.pos = 0;
        self.filled = read;
        self.read_to += read as u64;
        Ok(read > 0)
    }

    pub fn next_line(&mut self) -> io::Result<Option<NextLine<'_>>> {
        self.line.clear();
        let mut len: u64 = 0;
        let mut too_long = false;
        // The line's range in `block` when it lies in one block: no copy then.
        let mut in_block = None;
        let terminated = loop {
            if self.pos == self.filled && !self.refill()? {
                break false;
            }
            let piece_start = self.pos;
            let available = &self.block[piece_start..self.filled];
            let (piece_len, newline) = match memchr::memchr(b'\n', available) {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            self.pos += piece_len + usize::from(newline);
            let first_piece = len == 0;
            len += piece_len as u64;
            if !too_long {
                if self.line.len() + piece_len > self.max_line {
                    too_long = true;
                    self.line.clear();
                } else if first_piece && newline {
                    in_block = Some(piece_start..piece_start + piece_len);
                } else {
                    self.line
                        .extend_from_slice(&self.block[piece_start..piece_start + piece_len]);
                }
            }
            if newline {
                break true;
            }
        };
        if len == 0 && !terminated {
            return Ok(None);
        }
        self.next_start += len + u64::from(terminated);
        self.lines += 1;
        if too_long {
            return Ok(Some(NextLine::TooLong {
                number: self.lines,
                len,
                terminated,
            }));
        }
        let mut bytes = match in_block {
            Some(range) => &self.block[range],
            None => &self.line[..],
        };
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        Ok(Some(NextLine::Line(StreamLine {
            number: self.lines,
            bytes,
            terminated,
        })))
    }
}

/// The offset of the last occurrence of any of the `finders`' needles that starts in
/// `[floor, end)`, reading blocks backwards from `end`. Each block is searched forwards (the
/// fast direction) and overlaps the one after it by the longest needle's length, so no match is
/// missed at a seam.
fn rfind_bytes<S: Source + ?Sized>(
    source: &S,
    floor: u64,
    end: u64,
    finders: &[memmem::Finder<'_>],
    block: &mut Vec<u8>,
) -> io::Result<Option<u64>> {
    let longest = finders.iter().map(|f| f.needle().len()).max().unwrap_or(0);
    let overlap = longest.saturating_sub(1) as u64;
    let mut hi = end;
    while hi > floor {
        let lo = hi.saturating_sub(block_bytes() as u64).max(floor);
        let read_end = (hi + overlap).min(source.len());
        let want = usize::try_from(read_end - lo).unwrap_or(usize::MAX);
        block.resize(want, 0);
        let read = source.read_at(block, lo)?;
        // Only matches starting before `hi`: the overlap belongs to the block after this one.
        let limit = usize::try_from(hi - lo).unwrap_or(usize::MAX);
        let last = finders
            .iter()
            .filter_map(|finder| {
                finder
                    .find_iter(&block[..read])
                    .take_while(|&at| at < limit)
                    .last()
            })
            .max();
        if let Some(at) = last {
            return Ok(Some(lo + at as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// The start of the line holding the byte at `pos`, searching back at most `max_back` bytes
/// and not past `floor` (a line start). `None` when the line began further back than that.
fn line_start<S: Source + ?Sized>(
    source: &S,
    floor: u64,
    pos: u64,
    max_back: u64,
    block: &mut Vec<u8>,
) -> io::Result<Option<u64>> {
    let limit = pos.saturating_sub(max_back).max(floor);
    let mut hi = pos;
    // Lines are mostly short: start small, grow to a block.
    let mut step = FIRST_STEP.min(block_bytes());
    while hi > limit {
        let lo = hi.saturating_sub(step as u64).max(limit);
        step = (step * 4).min(block_bytes());
        let want = usize::try_from(hi - lo).unwrap_or(usize::MAX);
        block.resize(want, 0);
        let read = source.read_at(block, lo)?;
        if let Some(at) = memchr::memrchr(b'\n', &block[..read]) {
            return Ok(Some(lo + at as u64 + 1));
        }
        hi = lo;
    }
    Ok((limit == floor).then_some(floor))
}

/// A line found by [`rfind_line_of_type`]: where it starts, where the next one starts, and
/// what `accept` made of it.
pub(crate) struct Found<T> {
    pub start: u64,
    pub next: u64,
    pub value: T,
}

/// Searches backwards from `end` down to `floor` (a line start) for lines whose envelope has
/// the given `type` (written compactly, as baton and Codex do), newest first, by a byte
/// search: no line is parsed unless it holds the marker. `accept` decides whether a candidate
/// line counts; the first accepted line is returned.
///
/// A line that merely contains the marker inside its payload fails `accept` and the search
/// goes on before it, so this is only ever a shortcut for a forward scan, never a different
/// answer. Lines over `max_line` bytes are passed over, as a forward scan skips them.
pub(crate) fn rfind_line_of_type<S: Source + ?Sized, T>(
    source: &S,
    floor: u64,
    end: u64,
    kind: &str,
    max_line: usize,
    accept: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<Found<T>>> {
    rfind_line_of_types(source, floor, end, &[kind], max_line, accept)
}

/// [`rfind_line_of_type`] for lines holding any of several `"type":"…"` markers (the line's
/// own type or its payload's), in one pass.
pub(crate) fn rfind_line_of_types<S: Source + ?Sized, T>(
    source: &S,
    floor: u64,
    end: u64,
    kinds: &[&str],
    max_line: usize,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> io::Result<Option<Found<T>>> {
    let markers: Vec<String> = kinds
        .iter()
        .map(|kind| format!("\"type\":\"{kind}\""))
        .collect();
    let finders: Vec<_> = markers
        .iter()
        .map(|marker| memmem::Finder::new(marker.as_bytes()))
        .collect();
    let mut block = Vec::new();
    let mut end = end.min(source.len());
    while end > floor {
        let Some(hit) = rfind_bytes(source, floor, end, &finders, &mut block)? else {
            return Ok(None);
        };
        let Some(start) = line_start(source, floor, hit, max_line as u64, &mut block)? else {
            // No line start within the cap: every byte back to there is this over-long line.
            end = hit.saturating_sub(max_line as u64).max(floor);
            continue;
        };
        let mut reader =
            LineReader::with_block(source, start, max_line, FIRST_STEP.min(block_bytes()));
        if let Some(NextLine::Line(line)) = reader.next_line()?
            && let Some(value) = accept(line.bytes)
        {
            let next = reader.offset();
            return Ok(Some(Found { start, next, value }));
        }
        end = start;
    }
    Ok(None)
}

/// How many lines end before `offset`: the number of the line at `offset` minus one.
pub(crate) fn lines_before<S: Source + ?Sized>(source: &S, offset: u64) -> u64 {
    let mut block = vec![0u8; block_bytes().min(usize::try_from(offset).unwrap_or(usize::MAX))];
    let mut at = 0u64;
    let mut newlines = 0u64;
    while at < offset {
        let want = usize::try_from(offset - at).map_or(block.len(), |left| left.min(block.len()));
        match source.read_at(&mut block[..want], at) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                newlines += memchr::memchr_iter(b'\n', &block[..read]).count() as u64;
                at += read as u64;
            }
        }
    }
    newlines
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;

    thread_local! {
        pub(super) static BLOCK_BYTES_FOR_TEST: Cell<usize> = const { Cell::new(BLOCK_BYTES) };
    }

    #[derive(Debug, PartialEq)]
    enum Expected {
        Line(Vec<u8>, bool),
        TooLong(u64, bool),
    }

    /// What a line reader must return: the input split at each `\n`.
    fn split_lines(bytes: &[u8], max_line: usize) -> Vec<Expected> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (line, terminated, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], true, &rest[i + 1..]),
                None => (rest, false, &rest[rest.len()..]),
            };
            if line.len() > max_line {
                lines.push(Expected::TooLong(line.len() as u64, terminated));
            } else {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                lines.push(Expected::Line(line.to_vec(), terminated));
            }
            rest = next;
        }
        lines
    }

    fn read_all(bytes: &[u8], max_line: usize) -> (Vec<Expected>, usize) {
        let mut reader = LineReader::new(bytes, 0, max_line);
        let mut lines = Vec::new();
        let mut held = 0;
        while let Some(next) = reader.next_line().expect("reads from memory") {
            lines.push(match next {
                NextLine::Line(line) => Expected::Line(line.bytes.to_vec(), line.terminated),
                NextLine::TooLong {
                    len, terminated, ..
                } => Expected::TooLong(len, terminated),
            });
            held = held.max(reader.line.capacity() + reader.block.len());
        }
        (lines, held)
    }

    /// Bytes rich in line ends, `\r`, and the bytes of a type marker.
    fn transcript_bytes() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => Just(b'x'),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
            1 => any::<u8>(),
        ];
        let piece = prop_oneof![
            6 => proptest::collection::vec(byte, 1..8),
            1 => Just(br#"{"type":"compacted","payload":{}}"#.to_vec()),
            1 => Just(br#""type":"compacted""#.to_vec()),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn lines_are_the_bytes_split_at_newlines_whatever_the_block_size(
            bytes in transcript_bytes(),
            max_line in 0usize..40,
            block in 1usize..24,
        ) {
            set_block_bytes_for_test(block);
            let (lines, held) = read_all(&bytes, max_line);
            prop_assert_eq!(lines, split_lines(&bytes, max_line));
            // Memory: one block and at most one capped line, never the input.
            prop_assert!(held <= block + 2 * max_line.max(8), "held {held}");
        }

        #[test]
        fn the_backward_search_finds_what_a_forward_scan_finds(
            bytes in transcript_bytes(),
            max_line in 1usize..60,
            block in 1usize..24,
        ) {
            set_block_bytes_for_test(block);
            let accept = |line: &[u8]| line.starts_with(b"{\"type\":\"compacted\"").then(|| line.to_vec());
            let found = rfind_line_of_type(&bytes[..], 0, bytes.len() as u64, "compacted", max_line, accept)
                .expect("reads from memory")
                .map(|found| (found.start, found.next, found.value));
            // The forward answer: the last line within the cap that is accepted.
            let mut expected = None;
            let mut start = 0u64;
            for line in split_lines(&bytes, max_line) {
                let len = match &line {
                    Expected::Line(..) => {
                        let rest = &bytes[start as usize..];
                        memchr::memchr(b'\n', rest).unwrap_or(rest.len())
                    }
                    Expected::TooLong(len, _) => *len as usize,
                };
                let terminated = matches!(line, Expected::Line(_, true) | Expected::TooLong(_, true));
                let next = start + len as u64 + u64::from(terminated);
                if let Expected::Line(content, _) = &line
                    && let Some(value) = accept(content)
                {
                    expected = Some((start, next, value));
                }
                start = next;
            }
            prop_assert_eq!(found, expected);
        }
    }
}
