//! A small incremental parser for `text/event-stream` bodies (the WHATWG SSE format).
//!
//! Linear in the input: each byte is searched for a line end once (from where the previous
//! search stopped), lines are read in place through a start offset, and the consumed front of
//! the buffer is dropped only when it is at least half of it, so copying is amortized too.

/// The largest single event accepted by default: a model that streams more than this in one
/// event is broken or hostile, and the bytes would otherwise pile up in memory.
pub(crate) const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, if the server sent one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SseError {
    #[error(
        "one streamed event grew past the {} limit for a single event",
        describe_bytes(*.limit)
    )]
    EventTooLarge { limit: usize },
}

/// Feeds on arbitrary byte chunks and yields complete events. Lines end with `\n` or `\r\n`;
/// a blank line ends an event; lines starting with `:` are comments.
#[derive(Debug)]
pub(crate) struct SseParser {
    /// Received bytes; `buffer[start..]` is the line not yet terminated.
    buffer: Vec<u8>,
    start: usize,
    /// `buffer[start..scanned]` is known to hold no `\n`: the next search begins here.
    scanned: usize,
    event: Option<String>,
    data: Option<String>,
    max_event_bytes: usize,
    /// How many bytes the line-end searches went over, to prove the parser linear.
    #[cfg(test)]
    bytes_searched: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser that fails once an event (its fields and its unfinished line) exceeds
    /// `max_event_bytes`.
    pub(crate) fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            event: None,
            data: None,
            max_event_bytes,
            #[cfg(test)]
            bytes_searched: 0,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Splitting on the byte `\n` is safe for UTF-8: it never occurs inside a character.
        while let Some(offset) = memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
            let end = self.scanned + offset;
            self.count_searched(offset + 1);
            self.check_size(end - self.start)?;
            let mut line = &self.buffer[self.start..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = String::from_utf8_lossy(line).into_owned();
            self.start = end + 1;
            self.scanned = self.start;
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        self.count_searched(self.buffer.len() - self.scanned);
        self.scanned = self.buffer.len();
        self.check_size(self.buffer.len() - self.start)?;
        self.compact();
        Ok(events)
    }

    /// The event still open when the stream ends, if it has data. Servers that close right
    /// after the last `data:` line without a blank line still get their event delivered; a
    /// line cut off mid-way is dropped since it is likely truncated.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        self.buffer.clear();
        self.start = 0;
        self.scanned = 0;
        self.dispatch()
    }

    /// Drops the consumed front of the buffer once it is at least half of it: each byte is
    /// moved at most a bounded number of times overall.
    fn compact(&mut self) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
        } else if self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
        } else {
            return;
        }
        self.scanned -= self.start;
        self.start = 0;
    }

    /// Measured the same way whatever the chunking: the event's fields so far plus the raw
    /// bytes of its current line (whole, or as much of it as has arrived).
    fn check_size(&self, line_bytes: usize) -> Result<(), SseError> {
        let open = line_bytes
            + self.event.as_ref().map_or(0, String::len)
            + self.data.as_ref().map_or(0, String::len);
        if open > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    #[cfg(test)]
    fn count_searched(&mut self, bytes: usize) {
        self.bytes_searched += bytes;
    }

    #[cfg(not(test))]
    fn count_searched(&mut self, _bytes: usize) {}

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // `id:` and `retry:` matter for browsers reconnecting, not here.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        self.data.take().map(|data| SseEvent { event, data })
    }
}

/// `64 MiB`, `4 KiB`, or `1000 bytes`: a limit as a person would write it.
pub(crate) fn describe_bytes(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk).expect("within the cap"));
        }
        events.extend(parser.finish());
        events
    }

    fn event(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn parses_events_split_across_chunks_at_any_byte() {
        let stream = "event: a\ndata: {\"x\":\"é\"}\n\ndata: two\n\n";
        let expected = vec![event(Some("a"), "{\"x\":\"é\"}"), event(None, "two")];
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            assert_eq!(
                parse_all(&[&bytes[..split], &bytes[split..]]),
                expected,
                "split at {split}"
            );
        }
    }

    #[test]
    fn joins_multi_line_data_and_tolerates_crlf_and_comments() {
        let stream = b": keep-alive\r\nevent: e\r\ndata: line one\r\ndata:line two\r\n\r\n";
        assert_eq!(
            parse_all(&[stream]),
            vec![event(Some("e"), "line one\nline two")]
        );
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_name_does_not_leak() {
        let stream = b"event: ping\n\ndata: x\n\n";
        assert_eq!(parse_all(&[stream]), vec![event(None, "x")]);
    }

    #[test]
    fn delivers_a_last_event_without_blank_line_but_drops_a_cut_line() {
        assert_eq!(parse_all(&[b"data: [DONE]\n"]), vec![event(None, "[DONE]")]);
        assert_eq!(parse_all(&[b"data: {\"trunc"]), vec![]);
    }

    #[test]
    fn empty_data_field_gives_an_empty_event() {
        assert_eq!(parse_all(&[b"data\n\n"]), vec![event(None, "")]);
    }

    #[test]
    fn a_multi_megabyte_event_fed_in_small_chunks_is_searched_once() {
        let data = "x".repeat(4 * 1024 * 1024);
        let stream = format!("event: big\ndata: {data}\n\ndata: after\n\n");
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in stream.as_bytes().chunks(1000) {
            events.extend(parser.feed(chunk).expect("within the cap"));
        }
        // The consumed front was dropped once the big event was read.
        assert!(
            parser.buffer.len() < 1000,
            "{} bytes kept",
            parser.buffer.len()
        );
        events.extend(parser.finish());
        assert_eq!(
            events,
            vec![event(Some("big"), &data), event(None, "after")]
        );
        // Rescanning the pending line on every chunk would search about 8 GB here.
        assert!(
            parser.bytes_searched <= stream.len(),
            "searched {} bytes of a {}-byte stream",
            parser.bytes_searched,
            stream.len()
        );
    }

    #[test]
    fn an_event_over_the_cap_fails_the_stream_naming_the_limit() {
        let mut parser = SseParser::with_max_event_bytes(4096);
        let mut result = parser.feed(b"data: ");
        // One line that never ends: the cap must hold before any line end arrives.
        for _ in 0..10 {
            result = parser.feed(&[b'x'; 512]);
            if result.is_err() {
                break;
            }
        }
        let error = result.expect_err("5 KiB of one line is over a 4 KiB cap");
        assert_eq!(error, SseError::EventTooLarge { limit: 4096 });
        assert!(error.to_string().contains("4 KiB limit"), "{error}");

        // Many short data lines add up to one event the same way.
        let mut parser = SseParser::with_max_event_bytes(4096);
        let error = parser
            .feed("data: 0123456789\n".repeat(500).as_bytes())
            .expect_err("5 KB of data in one event");
        assert!(error.to_string().contains("4 KiB limit"), "{error}");

        // While many small events, each under the cap, pass whatever their total.
        let mut parser = SseParser::with_max_event_bytes(4096);
        let events = parser
            .feed("data: 0123456789\n\n".repeat(500).as_bytes())
            .expect("each event is small");
        assert_eq!(events.len(), 500);
    }

    #[test]
    fn the_default_cap_is_64_mib() {
        assert_eq!(
            SseParser::default().max_event_bytes,
            DEFAULT_MAX_EVENT_BYTES
        );
        assert_eq!(describe_bytes(DEFAULT_MAX_EVENT_BYTES), "64 MiB");
        assert_eq!(describe_bytes(1000), "1000 bytes");
    }

    /// Everything a parser yields for `bytes` cut at `cuts`: its events, or its error (the
    /// events before an error are not compared: a caller drops them with the stream).
    fn outcome(bytes: &[u8], cuts: &[usize], cap: usize) -> Result<Vec<SseEvent>, SseError> {
        let mut parser = SseParser::with_max_event_bytes(cap);
        let mut events = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut from = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            events.extend(parser.feed(&bytes[from..cut])?);
            from = cut;
            // Memory: the unfinished line is within the cap, and the buffer within twice it.
            assert!(
                parser.buffer.len() <= 2 * cap.max(1),
                "{}",
                parser.buffer.len()
            );
        }
        events.extend(parser.finish());
        Ok(events)
    }

    /// Streams rich in field names, line ends and multi-byte characters.
    fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data:".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"event: ".to_vec()),
            Just(b": ping".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just("é".as_bytes().to_vec()),
            "[a-z{}\":]{1,12}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 1..6),
        ];
        proptest::collection::vec(piece, 0..80).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            cap in 1usize..256,
        ) {
            let _ = outcome(&bytes, &cuts, cap);
        }

        #[test]
        fn the_events_do_not_depend_on_the_chunking(
            bytes in sse_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
            cap in prop_oneof![Just(DEFAULT_MAX_EVENT_BYTES), 8usize..200],
        ) {
            prop_assert_eq!(outcome(&bytes, &cuts, cap), outcome(&bytes, &[], cap));
        }
    }
}
