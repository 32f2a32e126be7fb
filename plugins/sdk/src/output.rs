//! The writer of the contract's packed `parse-output` (layout: the record
//! `parse-output` in `wit/parser.wit`): [`Events`] for one input's outcome,
//! [`EventWriter`] for one event's fields. Owns the guest's copy of the layout
//! (the host's is in `core/plugin-host/src/decode.rs`); a parser only sees the
//! [`Sink`] methods.

use crate::Sink;

const OUTCOME_ERROR: u8 = 0x01;
const OUTCOME_OK: u8 = 0x02;
const ITEM_TEXT: u8 = 0x10;
const ITEM_INT: u8 = 0x11;
const ITEM_FLOAT: u8 = 0x12;
const ITEM_BOOL: u8 = 0x13;
const ITEM_NULL: u8 = 0x14;
const ITEM_TIMESTAMP: u8 = 0x20;
const ITEM_RAW: u8 = 0x21;

/// The two buffers of a batch's `parse-output`.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Output {
    pub index: Vec<u8>,
    pub text: Vec<u8>,
}

impl Output {
    /// Buffers sized for a batch of `events` inputs holding `bytes` of text.
    pub fn for_batch(events: usize, bytes: usize) -> Self {
        Output {
            index: Vec::with_capacity(events * 16 + bytes / 2),
            text: Vec::with_capacity(bytes + 64),
        }
    }

    /// Writes the outcome of one input: `ok` with the events `parse` wrote,
    /// or, if it fails, `error` with its message (what it wrote is dropped).
    pub fn outcome(&mut self, parse: impl FnOnce(&mut Events<'_>) -> Result<(), String>) {
        let (index_at, text_at) = (self.index.len(), self.text.len());
        self.index.push(OUTCOME_OK);
        self.index.extend_from_slice(&[0; 4]);
        let mut events = Events {
            out: self,
            index_at,
            text_at,
            count: 0,
            verbatim: false,
        };
        let result = parse(&mut events);
        let (count, verbatim) = (events.count, events.verbatim);
        if verbatim {
            return;
        }
        match result {
            Ok(()) => self.index[index_at + 1..index_at + 5].copy_from_slice(&count.to_le_bytes()),
            Err(msg) => self.error(index_at, text_at, &msg),
        }
    }

    /// Replaces everything from `(index_at, text_at)` on by an error outcome.
    fn error(&mut self, index_at: usize, text_at: usize, msg: &str) {
        self.index.truncate(index_at);
        self.text.truncate(text_at);
        self.index.push(OUTCOME_ERROR);
        self.str(msg);
    }

    fn str(&mut self, s: &str) {
        // A wasm32 string is shorter than 4 GiB.
        self.index
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.text.extend_from_slice(s.as_bytes());
    }
}

/// The events parsed from one input; each [`Events::event`] starts one. An
/// input that starts none is dropped.
pub struct Events<'a> {
    out: &'a mut Output,
    index_at: usize,
    text_at: usize,
    count: u32,
    verbatim: bool,
}

impl Events<'_> {
    /// Starts the next event of this input; it is complete when the writer
    /// is dropped.
    pub fn event(&mut self) -> EventWriter<'_> {
        self.count += 1;
        let count_at = self.out.index.len();
        self.out.index.extend_from_slice(&[0; 4]);
        EventWriter {
            out: self.out,
            count_at,
            items: 0,
        }
    }

    /// Test hook for the hostile `chaos` plugin only: drops this outcome and
    /// lets `write` put any bytes into `index` and `text` instead, bypassing
    /// the encoding (to test the host against malformed output).
    #[doc(hidden)]
    pub fn verbatim(&mut self, write: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) {
        self.out.index.truncate(self.index_at);
        self.out.text.truncate(self.text_at);
        self.verbatim = true;
        write(&mut self.out.index, &mut self.out.text);
    }
}

/// Writes one event's fields straight into the batch's buffers (see
/// [`Sink`] for the methods).
pub struct EventWriter<'a> {
    out: &'a mut Output,
    count_at: usize,
    items: u32,
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        self.out.index[self.count_at..self.count_at + 4].copy_from_slice(&self.items.to_le_bytes());
    }
}

impl EventWriter<'_> {
    fn named(&mut self, tag: u8, name: &str) {
        self.items += 1;
        self.out.index.push(tag);
        self.out.str(name);
    }
}

impl Sink for EventWriter<'_> {
    fn text(&mut self, name: &str, value: &str) {
        self.named(ITEM_TEXT, name);
        self.out.str(value);
    }
    fn int(&mut self, name: &str, value: i64) {
        self.named(ITEM_INT, name);
        self.out.index.extend_from_slice(&value.to_le_bytes());
    }
    fn float(&mut self, name: &str, value: f64) {
        self.named(ITEM_FLOAT, name);
        self.out.index.extend_from_slice(&value.to_bits().to_le_bytes());
    }
    fn bool(&mut self, name: &str, value: bool) {
        self.named(ITEM_BOOL, name);
        self.out.index.push(u8::from(value));
    }
    fn null(&mut self, name: &str) {
        self.named(ITEM_NULL, name);
    }
    fn timestamp(&mut self, ns: i64) {
        self.items += 1;
        self.out.index.push(ITEM_TIMESTAMP);
        self.out.index.extend_from_slice(&ns.to_le_bytes());
    }
    fn raw(&mut self, raw: &str) {
        self.items += 1;
        self.out.index.push(ITEM_RAW);
        self.out.str(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_events_are_laid_out_as_the_contract_says() {
        let mut out = Output::default();
        out.outcome(|events| {
            let mut e = events.event();
            e.int("n", 7);
            e.text("m", "hé");
            e.timestamp(5);
            drop(e);
            events.event().bool("b", true);
            Ok(())
        });
        out.outcome(|events| {
            events.event().text("dropped", "on error");
            Err("bad".into())
        });
        out.outcome(|_| Ok(()));
        let mut want = vec![OUTCOME_OK, 2, 0, 0, 0, 3, 0, 0, 0, ITEM_INT, 1, 0, 0, 0];
        want.extend(7i64.to_le_bytes());
        want.extend([ITEM_TEXT, 1, 0, 0, 0, 3, 0, 0, 0, ITEM_TIMESTAMP]);
        want.extend(5i64.to_le_bytes());
        want.extend([1, 0, 0, 0, ITEM_BOOL, 1, 0, 0, 0, 1]);
        want.extend([OUTCOME_ERROR, 3, 0, 0, 0]);
        want.extend([OUTCOME_OK, 0, 0, 0, 0]);
        assert_eq!(out.index, want);
        assert_eq!(out.text, "nmhébbad".as_bytes());
    }

    #[test]
    fn verbatim_replaces_the_outcome() {
        let mut out = Output::default();
        out.outcome(|events| {
            events.event().text("x", "y");
            events.verbatim(|index, text| {
                index.push(0x7f);
                text.push(0xff);
            });
            Ok(())
        });
        assert_eq!((out.index, out.text), (vec![0x7f], vec![0xff]));
    }
}
