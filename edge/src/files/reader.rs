//! Cuts a file's bytes into events: lines, joined into multiline events by the
//! `multiline_start` rule, each at most `max_line_bytes` long. Pure: it is given bytes
//! and the offsets they start at, and knows nothing of files, gzip or the spool.
//!
//! Every event carries `end`, the offset just past its last line: once the event is in
//! the spool, reading may resume there without losing or repeating anything. The bytes
//! of an unfinished line or of a multiline event still waiting for its next line are
//! held here (at most `max_line_bytes` of each) and are not part of any `end` yet, so a
//! crash re-reads them.
//!
//! Rules: a line ends at `\n` (a `\r` before it is dropped); empty lines are skipped
//! outside multiline events; invalid UTF-8 is replaced, not refused. A line (or a joined
//! multiline event) longer than `max_line_bytes` keeps its first `max_line_bytes` bytes
//! and the event gets the attribute `@truncated_bytes` with how many were dropped; the
//! dropped bytes are read past, never held in memory.

use regex::Regex;

/// One event cut from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEvent {
    pub raw: String,
    /// Bytes of the event beyond `max_line_bytes` that were dropped (0: none).
    pub truncated_bytes: u64,
    /// Offset just past the event's last line (its newline included).
    pub end: u64,
}

/// A multiline event waiting for a line that starts the next one.
#[derive(Debug)]
struct Pending {
    text: Vec<u8>,
    start: u64,
    end: u64,
    dropped: u64,
}

impl Pending {
    fn into_event(self) -> ReadEvent {
        ReadEvent { raw: String::from_utf8_lossy(&self.text).into_owned(), truncated_bytes: self.dropped, end: self.end }
    }
}

/// The line and multiline state of one file.
#[derive(Debug)]
pub struct LineReader {
    max: usize,
    multiline: Option<Regex>,
    /// The line being read, up to `max` bytes of it.
    line: Vec<u8>,
    line_start: u64,
    /// Bytes of the current line beyond `max`, read past.
    line_dropped: u64,
    pending: Option<Pending>,
    pos: u64,
}

impl LineReader {
    /// A reader whose next byte is at offset `pos`.
    pub fn new(pos: u64, max_line_bytes: usize, multiline: Option<Regex>) -> LineReader {
        LineReader {
            max: max_line_bytes.max(1),
            multiline,
            line: Vec::new(),
            line_start: pos,
            line_dropped: 0,
            pending: None,
            pos,
        }
    }

    /// Offset of the next byte to read.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Whether a multiline event waits for its next line.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Reads `bytes` (the file's bytes from [`pos`](Self::pos) on); appends the events
    /// they complete to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<ReadEvent>) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.take(&bytes[..newline]);
                    self.pos += newline as u64 + 1;
                    self.end_line(out);
                    bytes = &bytes[newline + 1..];
                }
                None => {
                    self.take(bytes);
                    self.pos += bytes.len() as u64;
                    return;
                }
            }
        }
    }

    /// Emits the multiline event waiting for its next line (the file went quiet).
    pub fn flush_pending(&mut self, out: &mut Vec<ReadEvent>) {
        if let Some(pending) = self.pending.take() {
            out.push(pending.into_event());
        }
    }

    /// The file ends here for good (deleted, rotated away, a gzip stream's end): the
    /// last line counts even without its newline, and a waiting event is emitted.
    pub fn finish(&mut self, out: &mut Vec<ReadEvent>) {
        if !self.line.is_empty() || self.line_dropped > 0 {
            self.end_line(out);
        }
        self.flush_pending(out);
    }

    fn take(&mut self, part: &[u8]) {
        let keep = (self.max - self.line.len()).min(part.len());
        self.line.extend_from_slice(&part[..keep]);
        self.line_dropped += (part.len() - keep) as u64;
    }

    fn end_line(&mut self, out: &mut Vec<ReadEvent>) {
        let mut line = std::mem::take(&mut self.line);
        if self.line_dropped == 0 && line.last() == Some(&b'\r') {
            line.pop();
        }
        let (start, end, dropped) = (self.line_start, self.pos, self.line_dropped);
        self.line_start = self.pos;
        self.line_dropped = 0;
        let Some(rule) = &self.multiline else {
            if !line.is_empty() || dropped > 0 {
                out.push(ReadEvent { raw: String::from_utf8_lossy(&line).into_owned(), truncated_bytes: dropped, end });
            }
            return;
        };
        let begins = match &self.pending {
            None => !line.is_empty() || dropped > 0,
            Some(_) => rule.is_match(&String::from_utf8_lossy(&line)),
        };
        if begins {
            self.flush_pending(out);
            self.pending = Some(Pending { text: line, start, end, dropped });
        } else if let Some(pending) = &mut self.pending {
            // A continuation: joined with a newline, within the same limit as a line.
            let room = self.max.saturating_sub(pending.text.len());
            let joined = 1 + line.len();
            let keep = room.min(joined);
            if keep > 0 {
                pending.text.push(b'\n');
                pending.text.extend_from_slice(&line[..keep - 1]);
            }
            pending.dropped += (joined - keep) as u64 + dropped;
            pending.end = end;
        }
        // else: an empty line before any event; skipped.
    }

    /// Where reading would resume to repeat nothing that is not in an emitted event: the
    /// start of the waiting multiline event, else of the unfinished line.
    pub fn resume_offset(&self) -> u64 {
        self.pending.as_ref().map_or(self.line_start, |p| p.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of every size from 1 to its length; all must agree.
    fn events(input: &[u8], max: usize, multiline: Option<&str>, finish: bool) -> Vec<ReadEvent> {
        let mut first: Option<Vec<ReadEvent>> = None;
        for piece in 1..=input.len().max(1) {
            let mut reader = LineReader::new(100, max, multiline.map(|r| Regex::new(r).unwrap()));
            let mut out = Vec::new();
            for chunk in input.chunks(piece) {
                reader.push(chunk, &mut out);
            }
            if finish {
                reader.finish(&mut out);
            }
            assert_eq!(reader.pos(), 100 + input.len() as u64);
            match &first {
                None => first = Some(out),
                Some(first) => assert_eq!(&out, first, "pieces of {piece} bytes"),
            }
        }
        first.unwrap()
    }

    fn ev(raw: &str, truncated_bytes: u64, end: u64) -> ReadEvent {
        ReadEvent { raw: raw.into(), truncated_bytes, end: 100 + end }
    }

    #[test]
    fn lines_end_at_newlines_and_carry_their_end_offset() {
        assert_eq!(
            events(b"one\r\ntwo\n\nthree\npartial", 100, None, false),
            [ev("one", 0, 5), ev("two", 0, 9), ev("three", 0, 16)]
        );
        // The unfinished last line counts once the file ends for good.
        assert_eq!(events(b"one\npartial", 100, None, true), [ev("one", 0, 4), ev("partial", 0, 11)]);
        assert_eq!(events(b"a\xffb\n", 100, None, false), [ev("a\u{fffd}b", 0, 4)]);
    }

    #[test]
    fn a_line_over_the_limit_is_cut_and_says_how_much_was_dropped() {
        let long = format!("{}\nshort\n", "x".repeat(25));
        assert_eq!(events(long.as_bytes(), 10, None, false), [ev(&"x".repeat(10), 15, 26), ev("short", 0, 32)]);
        // Exactly at the limit is whole.
        assert_eq!(events(b"0123456789\n", 10, None, false), [ev("0123456789", 0, 11)]);
        assert_eq!(events(b"0123456789\r\n", 10, None, false), [ev("0123456789", 1, 12)]);
    }

    #[test]
    fn the_held_bytes_stay_within_the_limit_for_an_endless_line() {
        let mut reader = LineReader::new(0, 1000, None);
        let mut out = Vec::new();
        for _ in 0..1000 {
            reader.push(&[b'y'; 4096], &mut out);
        }
        assert!(reader.line.capacity() < 8192, "{}", reader.line.capacity());
        assert!(out.is_empty());
        reader.push(b"\n", &mut out);
        assert_eq!(out[0].truncated_bytes, 4096 * 1000 - 1000);
        assert_eq!(reader.resume_offset(), 4096 * 1000 + 1);
    }

    #[test]
    fn multiline_joins_continuations_until_the_next_start() {
        let input = b"2024-01-01 first\n  at a\n  at b\n2024-01-02 second\n\n2024-01-03 third\n  at c\n";
        let got = events(input, 1000, Some(r"^\d{4}-"), false);
        assert_eq!(got, [ev("2024-01-01 first\n  at a\n  at b", 0, 31), ev("2024-01-02 second\n", 0, 50)]);
        // The third waits for its next line; finishing (or the timeout) emits it.
        let got = events(input, 1000, Some(r"^\d{4}-"), true);
        assert_eq!(got[2], ev("2024-01-03 third\n  at c", 0, 74));
        // Lines before the first start line form an event of their own.
        let got = events(b"orphan\n2024-01-01 x\n", 1000, Some(r"^\d{4}-"), true);
        assert_eq!(got, [ev("orphan", 0, 7), ev("2024-01-01 x", 0, 20)]);
    }

    #[test]
    fn a_multiline_event_over_the_limit_is_cut() {
        let input = b"S head\n continuation one\n continuation two\nS next\n";
        let got = events(input, 12, Some("^S"), false);
        assert_eq!(got, [ev("S head\n cont", 30, 43)]);
    }

    #[test]
    fn resume_offset_is_the_start_of_what_is_not_emitted() {
        let mut reader = LineReader::new(0, 100, Some(Regex::new("^S").unwrap()));
        let mut out = Vec::new();
        reader.push(b"S a\n b\nS c\n d", &mut out);
        assert_eq!(out, [ReadEvent { raw: "S a\n b".into(), truncated_bytes: 0, end: 7 }]);
        assert_eq!(reader.resume_offset(), 7);
        reader.flush_pending(&mut out);
        assert_eq!(reader.resume_offset(), 11, "the unfinished line");
        let mut plain = LineReader::new(0, 100, None);
        plain.push(b"a\nbc", &mut out);
        assert_eq!(plain.resume_offset(), 2);
    }
}
