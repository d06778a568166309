//! A small incremental parser for `text/event-stream` bodies (the WHATWG SSE format).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, if the server sent one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Feeds on arbitrary byte chunks and yields complete events. Lines end with `\n` or `\r\n`;
/// a blank line ends an event; lines starting with `:` are comments.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes of a line not yet terminated.
    pending: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Splitting on the byte `\n` is safe for UTF-8: it never occurs inside a character.
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    /// The event still open when the stream ends, if it has data. Servers that close right
    /// after the last `data:` line without a blank line still get their event delivered; a
    /// line cut off mid-way is dropped since it is likely truncated.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        self.pending.clear();
        self.dispatch()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk));
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
}
