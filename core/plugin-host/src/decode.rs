//! Decodes a plugin's packed `parse-output` (layout: `wit/parser.wit`, record
//! `parse-output`) into parsed events, in one pass over `index` and one UTF-8
//! check of `text`. Owns the host's copy of the layout (the guest's is in
//! `plugins/sdk`). The buffers come from an untrusted guest: every count,
//! length, tag and string is checked, capacities are bounded by the bytes
//! actually present, and nothing here may panic; a bad buffer is reported as
//! [`Malformed`], never trusted.

use crate::event::{Field, Value};

const OUTCOME_ERROR: u8 = 0x01;
const OUTCOME_OK: u8 = 0x02;
const ITEM_TEXT: u8 = 0x10;
const ITEM_INT: u8 = 0x11;
const ITEM_FLOAT: u8 = 0x12;
const ITEM_BOOL: u8 = 0x13;
const ITEM_NULL: u8 = 0x14;
const ITEM_TIMESTAMP: u8 = 0x20;
const ITEM_RAW: u8 = 0x21;

/// Smallest encoding of an event (its item count) and of an item (tag and a
/// name length), to bound capacities by what the buffer can really hold.
const MIN_EVENT: usize = 4;
const MIN_ITEM: usize = 5;

/// One parsed event as the plugin wrote it.
#[derive(Debug, PartialEq)]
pub(crate) struct Parsed {
    pub timestamp_ns: Option<i64>,
    /// Replacement raw text.
    pub raw: Option<String>,
    pub fields: Vec<Field>,
    /// Bytes of names, values and replacement raw text, for the output cap.
    pub size: usize,
}

/// The plugin's answer for one input event.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Ok(Vec<Parsed>),
    Error(String),
}

/// How the output broke the layout.
#[derive(Debug, PartialEq)]
pub(crate) enum Malformed {
    /// Outcome `at` could not be decoded, so neither can any later one; the
    /// outcomes before it are good.
    From { at: usize, reason: String },
    /// The batch as a whole: wrong number of outcomes, bytes left over.
    Batch(String),
}

/// Decodes the outcomes of `n` input events. On [`Malformed::From`] the
/// returned outcomes are the good ones before it.
pub(crate) fn decode(index: &[u8], text: &[u8], n: usize) -> (Vec<Outcome>, Option<Malformed>) {
    // One UTF-8 pass over every string of the batch. Strings before the first
    // bad byte stay usable; one that reaches past it is reported.
    let valid = match std::str::from_utf8(text) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&text[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut r = Reader {
        index,
        pos: 0,
        text_len: text.len(),
        valid,
        tpos: 0,
    };
    let mut outcomes = Vec::with_capacity(n);
    for at in 0..n {
        if r.pos == index.len() {
            let reason = format!("returned {at} outcomes for {n} events; the contract is one per event");
            return (outcomes, Some(Malformed::Batch(reason)));
        }
        match r.outcome() {
            Ok(o) => outcomes.push(o),
            Err(reason) => {
                let reason = format!("malformed output for event {} of {n}: {reason}", at + 1);
                return (outcomes, Some(Malformed::From { at, reason }));
            }
        }
    }
    let malformed = if r.pos < index.len() {
        Some(Malformed::Batch(format!(
            "returned more than {n} outcomes for {n} events ({} bytes left over in `index`); the contract is one per event",
            index.len() - r.pos
        )))
    } else if r.tpos < text.len() {
        Some(Malformed::Batch(format!(
            "left {} bytes of `text` unused; every string must be referred to by `index`",
            text.len() - r.tpos
        )))
    } else {
        None
    };
    (outcomes, malformed)
}

struct Reader<'a> {
    index: &'a [u8],
    pos: usize,
    text_len: usize,
    /// The UTF-8-valid prefix of `text`.
    valid: &'a str,
    tpos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.index.len() - self.pos
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self
            .index
            .get(self.pos..self.pos.saturating_add(N))
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "{what} at index byte {} runs past the end of `index` ({} bytes)",
                    self.pos,
                    self.index.len()
                )
            })?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        self.take::<1>(what).map(|[b]| b)
    }

    fn u32(&mut self, what: &str) -> Result<usize, String> {
        self.take::<4>(what)
            .map(|b| usize::try_from(u32::from_le_bytes(b)).unwrap_or(usize::MAX))
    }

    fn i64(&mut self, what: &str) -> Result<i64, String> {
        self.take::<8>(what).map(i64::from_le_bytes)
    }

    /// A string: its length from `index`, its bytes the next ones of `text`.
    fn str(&mut self, what: &str) -> Result<&'a str, String> {
        let len = self.u32(what)?;
        let start = self.tpos;
        let end = start.saturating_add(len);
        if end > self.text_len {
            return Err(format!(
                "{what} of {len} bytes at text byte {start} runs past the end of `text` ({} bytes)",
                self.text_len
            ));
        }
        if end > self.valid.len() {
            return Err(format!(
                "{what} at text byte {start} is not valid UTF-8 (bad byte at {})",
                self.valid.len()
            ));
        }
        let s = self.valid.get(start..end).ok_or_else(|| {
            format!("{what} at text bytes {start}..{end} splits a UTF-8 character")
        })?;
        self.tpos = end;
        Ok(s)
    }

    fn outcome(&mut self) -> Result<Outcome, String> {
        let at = self.pos;
        match self.u8("outcome tag")? {
            OUTCOME_ERROR => Ok(Outcome::Error(self.str("error message")?.to_string())),
            OUTCOME_OK => {
                let n = self.u32("event count")?;
                let mut events = Vec::with_capacity(n.min(self.remaining() / MIN_EVENT));
                for _ in 0..n {
                    events.push(self.event()?);
                }
                Ok(Outcome::Ok(events))
            }
            tag => Err(format!("bad outcome tag 0x{tag:02x} at index byte {at}")),
        }
    }

    fn event(&mut self) -> Result<Parsed, String> {
        let m = self.u32("item count")?;
        let mut fields = Vec::with_capacity(m.min(self.remaining() / MIN_ITEM));
        let (mut timestamp_ns, mut raw, mut size) = (None, None::<&str>, 0usize);
        for _ in 0..m {
            let at = self.pos;
            let tag = self.u8("item tag")?;
            let value = match tag {
                ITEM_TIMESTAMP => {
                    timestamp_ns = Some(self.i64("timestamp")?);
                    continue;
                }
                ITEM_RAW => {
                    raw = Some(self.str("replacement raw text")?);
                    continue;
                }
                ITEM_TEXT..=ITEM_NULL => {
                    let name = self.str("field name")?;
                    let value = match tag {
                        ITEM_TEXT => Value::Text(self.str("text value")?.to_string()),
                        ITEM_INT => Value::Int(self.i64("int value")?),
                        ITEM_FLOAT => Value::Float(f64::from_bits(self.i64("float value")? as u64)),
                        ITEM_BOOL => match self.u8("bool value")? {
                            0 => Value::Boolean(false),
                            1 => Value::Boolean(true),
                            b => {
                                return Err(format!(
                                    "bool value {b} of field `{name}` at index byte {} is neither 0 nor 1",
                                    self.pos - 1
                                ));
                            }
                        },
                        _ => Value::Null,
                    };
                    (name, value)
                }
                tag => return Err(format!("bad item tag 0x{tag:02x} at index byte {at}")),
            };
            size = size.saturating_add(value.0.len() + value.1.size());
            fields.push(Field {
                name: value.0.to_string(),
                value: value.1,
            });
        }
        Ok(Parsed {
            timestamp_ns,
            size: size.saturating_add(raw.map_or(0, str::len)),
            raw: raw.map(str::to_string),
            fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds buffers the way a plugin does.
    #[derive(Default)]
    struct W {
        index: Vec<u8>,
        text: Vec<u8>,
    }

    impl W {
        fn tag(&mut self, t: u8) -> &mut Self {
            self.index.push(t);
            self
        }
        fn n(&mut self, n: u32) -> &mut Self {
            self.index.extend(n.to_le_bytes());
            self
        }
        fn s(&mut self, s: &[u8]) -> &mut Self {
            self.n(s.len() as u32);
            self.text.extend(s);
            self
        }
        fn i(&mut self, i: i64) -> &mut Self {
            self.index.extend(i.to_le_bytes());
            self
        }
        fn decode(&self, n: usize) -> (Vec<Outcome>, Option<Malformed>) {
            decode(&self.index, &self.text, n)
        }
    }

    fn field(name: &str, value: Value) -> Field {
        Field {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn every_item_kind_round_trips() {
        let mut w = W::default();
        w.tag(OUTCOME_OK).n(2);
        w.n(7)
            .tag(ITEM_TEXT)
            .s(b"msg")
            .s("café".as_bytes())
            .tag(ITEM_INT)
            .s(b"n")
            .i(-3)
            .tag(ITEM_FLOAT)
            .s(b"f")
            .i(1.5f64.to_bits() as i64)
            .tag(ITEM_BOOL)
            .s(b"b")
            .tag(1)
            .tag(ITEM_NULL)
            .s(b"z")
            .tag(ITEM_TIMESTAMP)
            .i(42)
            .tag(ITEM_RAW)
            .s(b"new raw");
        w.n(0);
        w.tag(OUTCOME_ERROR).s(b"bad line");
        w.tag(OUTCOME_OK).n(0);
        let (outcomes, malformed) = w.decode(3);
        assert_eq!(malformed, None);
        assert_eq!(
            outcomes,
            vec![
                Outcome::Ok(vec![
                    Parsed {
                        timestamp_ns: Some(42),
                        raw: Some("new raw".into()),
                        fields: vec![
                            field("msg", Value::Text("café".into())),
                            field("n", Value::Int(-3)),
                            field("f", Value::Float(1.5)),
                            field("b", Value::Boolean(true)),
                            field("z", Value::Null),
                        ],
                        size: 3 + 5 + 1 + 8 + 1 + 8 + 1 + 8 + 1 + 8 + 7,
                    },
                    Parsed {
                        timestamp_ns: None,
                        raw: None,
                        fields: vec![],
                        size: 0
                    },
                ]),
                Outcome::Error("bad line".into()),
                Outcome::Ok(vec![]),
            ]
        );
    }

    fn good(w: &mut W) {
        w.tag(OUTCOME_OK).n(1).n(1).tag(ITEM_INT).s(b"a").i(1);
    }

    fn from(m: Option<Malformed>) -> (usize, String) {
        match m {
            Some(Malformed::From { at, reason }) => (at, reason),
            other => panic!("expected a malformed outcome, got {other:?}"),
        }
    }

    #[test]
    fn a_malformed_outcome_keeps_the_good_ones_before_it() {
        type Write = Box<dyn Fn(&mut W)>;
        let cases: Vec<(&str, Write)> = vec![
            ("bad outcome tag 0x07", Box::new(|w: &mut W| {
                w.tag(7);
            })),
            ("bad item tag 0x99", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(1).n(1).tag(0x99);
            })),
            ("runs past the end of `text`", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(1).n(1).tag(ITEM_NULL).n(1000);
            })),
            // Cut short: 4 bytes of an 8-byte int, and nothing after.
            ("runs past the end of `index`", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(1).n(1).tag(ITEM_INT).s(b"a").n(1);
            })),
            ("not valid UTF-8", Box::new(|w: &mut W| {
                w.tag(OUTCOME_ERROR).s(b"ok \xff\xfe");
            })),
            ("splits a UTF-8 character", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(1).n(1).tag(ITEM_TEXT).s(&"é".as_bytes()[..1]).s(&"é".as_bytes()[1..]);
            })),
            ("neither 0 nor 1", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(1).n(1).tag(ITEM_BOOL).s(b"b").tag(2);
            })),
            // A hostile count must not make the host reserve gigabytes.
            ("runs past the end of `index`", Box::new(|w: &mut W| {
                w.tag(OUTCOME_OK).n(u32::MAX).n(u32::MAX);
            })),
        ];
        for (fragment, write) in cases {
            let mut w = W::default();
            good(&mut w);
            write(&mut w);
            // A good outcome after a truncated one would be read as its rest.
            if !fragment.contains("`index`") {
                good(&mut w);
            }
            let (outcomes, malformed) = w.decode(3);
            let (at, reason) = from(malformed);
            assert_eq!((outcomes.len(), at), (1, 1), "{fragment}: {reason}");
            assert!(
                reason.starts_with("malformed output for event 2 of 3: ") && reason.contains(fragment),
                "{fragment}: {reason}"
            );
        }
    }

    #[test]
    fn wrong_number_of_outcomes_or_leftovers_break_the_batch() {
        let batch = |w: &W, n: usize| match w.decode(n).1 {
            Some(Malformed::Batch(reason)) => reason,
            other => panic!("expected a batch failure, got {other:?}"),
        };
        let mut w = W::default();
        good(&mut w);
        assert!(batch(&w, 2).contains("returned 1 outcomes for 2 events"));
        good(&mut w);
        assert!(batch(&w, 1).contains("returned more than 1 outcomes"));
        let mut w = W::default();
        good(&mut w);
        w.text.extend(b"extra");
        assert!(batch(&w, 1).contains("left 5 bytes of `text` unused"));
        assert_eq!(W::default().decode(0), (vec![], None));
    }
}
