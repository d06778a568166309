//! Bounded capture of a command's output: the first bytes, the last bytes and a count of what
//! was cut in between, so a command that prints gigabytes costs a fixed amount of memory.

use std::collections::VecDeque;

/// How much of a command's output is kept for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCap {
    /// Bytes kept from the start of the output.
    pub head_bytes: usize,
    /// Bytes kept from the end of the output.
    pub tail_bytes: usize,
}

impl Default for OutputCap {
    /// 10 KiB head + 10 KiB tail, so the model sees how a long output starts and ends.
    fn default() -> Self {
        Self {
            head_bytes: 10 * 1024,
            tail_bytes: 10 * 1024,
        }
    }
}

/// Keeps the first `head_bytes` and a ring of the last `tail_bytes` of a byte stream.
#[derive(Debug)]
pub(crate) struct HeadTailBuffer {
    cap: OutputCap,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl HeadTailBuffer {
    pub(crate) fn new(cap: OutputCap) -> Self {
        Self {
            cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = self.cap.head_bytes.saturating_sub(self.head.len());
        let into_head = head_room.min(bytes.len());
        self.head.extend_from_slice(&bytes[..into_head]);
        bytes = &bytes[into_head..];
        if bytes.is_empty() || self.cap.tail_bytes == 0 {
            return;
        }
        // Only the last `tail_bytes` of this chunk can survive; skip the rest up front.
        if bytes.len() > self.cap.tail_bytes {
            bytes = &bytes[bytes.len() - self.cap.tail_bytes..];
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.cap.tail_bytes);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// Bytes that were seen but are in neither the head nor the tail.
    pub(crate) fn cut_bytes(&self) -> u64 {
        self.total - self.head.len() as u64 - self.tail.len() as u64
    }

    /// The kept output as text (lossy UTF-8), with a line saying how much was cut.
    pub(crate) fn render(&self) -> String {
        let cut = self.cut_bytes();
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if cut > 0 {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!(
                "[... {cut} bytes cut from the middle of the output ...]\n"
            ));
        }
        let (first, second) = self.tail.as_slices();
        let mut tail = Vec::with_capacity(self.tail.len());
        tail.extend_from_slice(first);
        tail.extend_from_slice(second);
        text.push_str(&String::from_utf8_lossy(&tail));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(head_bytes: usize, tail_bytes: usize) -> OutputCap {
        OutputCap {
            head_bytes,
            tail_bytes,
        }
    }

    #[test]
    fn small_output_is_kept_whole() {
        let mut buffer = HeadTailBuffer::new(cap(8, 8));
        buffer.push(b"hello ");
        buffer.push(b"world");
        assert_eq!(buffer.render(), "hello world");
        assert_eq!(buffer.cut_bytes(), 0);
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_says_what_was_cut() {
        let mut buffer = HeadTailBuffer::new(cap(4, 4));
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qr", b"stuvwxyz"] {
            buffer.push(chunk);
        }
        assert_eq!(buffer.cut_bytes(), 26 - 8);
        assert_eq!(
            buffer.render(),
            "abcd\n[... 18 bytes cut from the middle of the output ...]\nwxyz"
        );
    }

    #[test]
    fn one_huge_chunk_is_split_between_head_and_tail() {
        let mut buffer = HeadTailBuffer::new(cap(3, 3));
        buffer.push(&[b'x'; 1000]);
        buffer.push(b"end");
        assert_eq!(buffer.cut_bytes(), 1000 - 3);
        assert!(
            buffer
                .render()
                .ends_with("bytes cut from the middle of the output ...]\nend")
        );
    }
}
