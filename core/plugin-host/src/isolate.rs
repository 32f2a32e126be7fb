//! Failure isolation: when a `parse` call fails as a whole (trap, deadline,
//! memory cap, output that breaks the layout), its events are parsed again in
//! smaller calls, each on a fresh instance, halving the failed part until
//! every failure is pinned on the events that fail alone. Those carry the
//! failure of their own call in `@error_msg`; every other event is parsed.
//!
//! The cost is bounded. One bad event among n costs 2·⌈log2 n⌉ re-runs (at
//! each level the half holding it fails and its sibling parses). A batch has
//! a budget of re-runs (`[parsers] isolation_max_reruns`); when it runs out,
//! the events not yet resolved are marked "isolation budget exhausted". A
//! plugin that fails everything is caught after at most four re-runs: when
//! both halves of the batch fail and so does the first event of each half on
//! its own, the rest is marked without isolation (see [`Isolation::failed_batch`]).
//!
//! "Alone" means alone in a call on a fresh instance: an event that fails
//! only in company (a plugin keeping state from one event to the next) parses
//! when re-run alone, and is kept parsed; the events around it that caused the
//! failure parse too.
//!
//! Owns the search and its budget; the calls themselves are the caller's
//! (`plugin`). It must never lose, duplicate or reorder an event, nor make a
//! call past the budget.

use crate::event::{ErrorKind, Event, RawEvent};

/// Why a call failed as a whole.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub kind: ErrorKind,
    pub msg: String,
}

/// What one call did with the events it was given.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Every input came back, parsed or with its own parse error.
    Parsed(Vec<Event>),
    /// The call failed as a whole; the inputs come back untouched.
    Failed(Vec<RawEvent>, Failure),
    /// The outcomes of the first `at` inputs are good (`parsed`); the first
    /// of `rest` broke the output layout, so no later outcome can be read.
    BrokeAt {
        parsed: Vec<Event>,
        at: usize,
        rest: Vec<RawEvent>,
        failure: Failure,
    },
    /// No instance could be started: nothing to do with the events.
    Unavailable(Vec<RawEvent>, Failure),
}

/// What isolation did for one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub reruns: u32,
    pub isolated: u32,
    pub unresolved: u32,
}

/// The isolation of one failed batch. Output pieces are kept by the index of
/// their first input and put in input order by [`Isolation::finish`], so
/// calls may run in any order.
pub(crate) struct Isolation<'a, F> {
    attempt: F,
    parser: &'a str,
    max_reruns: u32,
    counts: Counts,
    pieces: Vec<(usize, Vec<Event>)>,
    /// Set once no instance can be started: no more calls are made.
    unavailable: Option<Failure>,
}

impl<'a, F: FnMut(Vec<RawEvent>) -> Attempt> Isolation<'a, F> {
    /// `attempt` parses a batch in one call on a fresh instance.
    pub(crate) fn new(parser: &'a str, max_reruns: u32, attempt: F) -> Self {
        Isolation {
            attempt,
            parser,
            max_reruns,
            counts: Counts::default(),
            pieces: Vec::new(),
            unavailable: None,
        }
    }

    /// `batch` (index 0 onwards) failed as a whole in one call. Its halves
    /// are re-run; when both fail, the first event of each half is re-run
    /// alone, and when those fail too the plugin is taken to fail every
    /// event: the rest is marked without isolation ("not isolated") rather
    /// than searched at n·log n calls. A batch whose bad events fall exactly
    /// so (one first in each half) has its good events marked too.
    pub(crate) fn failed_batch(&mut self, mut batch: Vec<RawEvent>, failure: Failure) {
        if batch.len() == 1 || self.max_reruns == 0 {
            // Alone already, or isolation turned off.
            let alone = batch.len() == 1;
            for (i, e) in batch.into_iter().enumerate() {
                self.mark(i, e, failure.kind, &failure.msg, alone);
            }
            return;
        }
        let mid = batch.len() / 2;
        let right = batch.split_off(mid);
        let l = self.call(0, batch, &failure);
        let r = self.call(mid, right, &failure);
        match (l, r) {
            (Some(Attempt::Failed(left, lf)), Some(Attempt::Failed(right, rf))) => {
                self.probe_halves([(0, left, lf), (mid, right, rf)]);
            }
            (l, r) => {
                if let Some(a) = l {
                    self.settle(0, a);
                }
                if let Some(a) = r {
                    self.settle(mid, a);
                }
            }
        }
    }

    /// Handles an [`Attempt::BrokeAt`] of the first call: `rest` starts at
    /// index `start` of the batch.
    pub(crate) fn broke_at(
        &mut self,
        start: usize,
        rest: Vec<RawEvent>,
        failure: Failure,
        alone: bool,
    ) {
        if alone {
            self.fail_alone(start, rest, failure);
        } else {
            self.culprit_then_rest(start, rest, failure);
        }
    }

    /// Puts the pieces in input order after `out`'s events.
    pub(crate) fn finish(mut self, out: &mut Vec<Event>) -> Counts {
        // Stable: an empty piece may share its index with the next one.
        self.pieces.sort_by_key(|(start, _)| *start);
        out.reserve(self.pieces.iter().map(|(_, p)| p.len()).sum());
        for (_, piece) in self.pieces {
            out.extend(piece);
        }
        self.counts
    }

    /// Both halves failed whole: probe the first event of each alone (a
    /// half of one event was its own probe).
    fn probe_halves(&mut self, halves: [(usize, Vec<RawEvent>, Failure); 2]) {
        let mut every_probe_failed = true;
        let mut rests = Vec::with_capacity(2);
        for (start, mut half, failure) in halves {
            let rest = half.split_off(1);
            if rest.is_empty() {
                self.fail_alone(start, half, failure.clone());
            } else {
                match self.call(start, half, &failure) {
                    Some(Attempt::Failed(first, f)) => self.fail_alone(start, first, f),
                    Some(other) => {
                        every_probe_failed &= matches!(other, Attempt::BrokeAt { .. });
                        self.settle(start, other);
                    }
                    None => every_probe_failed = false,
                }
            }
            rests.push((start + 1, rest, failure));
        }
        for (start, rest, failure) in rests {
            if rest.is_empty() {
                continue;
            }
            if every_probe_failed {
                let msg = format!(
                    "not isolated: the plugin failed both halves of this batch of events and the first event of each alone, so it is taken to fail every event; the call holding this event failed: {}",
                    failure.msg
                );
                for (i, e) in rest.into_iter().enumerate() {
                    self.mark(start + i, e, failure.kind, &msg, false);
                }
            } else {
                self.rerun(start, rest, &failure);
            }
        }
    }

    /// Handles what a call on events from index `start` did.
    fn settle(&mut self, start: usize, attempt: Attempt) {
        match attempt {
            Attempt::Parsed(events) => self.pieces.push((start, events)),
            Attempt::Failed(batch, failure) => self.split(start, batch, failure),
            Attempt::BrokeAt {
                parsed,
                at,
                rest,
                failure,
            } => {
                self.pieces.push((start, parsed));
                if at == 0 && rest.len() == 1 {
                    self.fail_alone(start, rest, failure);
                } else {
                    self.culprit_then_rest(start + at, rest, failure);
                }
            }
            Attempt::Unavailable(batch, failure) => {
                let msg = failure.msg.clone();
                self.unavailable = Some(failure);
                for (i, e) in batch.into_iter().enumerate() {
                    self.mark(start + i, e, ErrorKind::PluginUnavailable, &msg, false);
                }
            }
        }
    }

    /// `batch` failed as a whole in a call of its own: halve it, or pin the
    /// failure on its one event.
    fn split(&mut self, start: usize, mut batch: Vec<RawEvent>, failure: Failure) {
        if batch.len() == 1 {
            self.fail_alone(start, batch, failure);
        } else {
            let mid = batch.len() / 2;
            let right = batch.split_off(mid);
            self.rerun(start, batch, &failure);
            self.rerun(start + mid, right, &failure);
        }
    }

    /// The first of `rest` broke the output in company: re-run it alone, then
    /// the events after it together.
    fn culprit_then_rest(&mut self, start: usize, mut rest: Vec<RawEvent>, failure: Failure) {
        let after = rest.split_off(1);
        self.rerun(start, rest, &failure);
        if !after.is_empty() {
            self.rerun(start + 1, after, &failure);
        }
    }

    /// Parses `batch`, part of a call that failed with `cause`, again, and
    /// isolates what fails.
    fn rerun(&mut self, start: usize, batch: Vec<RawEvent>, cause: &Failure) {
        if let Some(a) = self.call(start, batch, cause) {
            self.settle(start, a);
        }
    }

    /// One re-run within the budget; `None` when the budget or the instances
    /// ran out (the events are marked).
    fn call(&mut self, start: usize, batch: Vec<RawEvent>, cause: &Failure) -> Option<Attempt> {
        if let Some(unavailable) = &self.unavailable {
            let msg = unavailable.msg.clone();
            for (i, e) in batch.into_iter().enumerate() {
                self.mark(start + i, e, ErrorKind::PluginUnavailable, &msg, false);
            }
            return None;
        }
        if self.counts.reruns >= self.max_reruns {
            let msg = budget_exhausted(self.max_reruns, &cause.msg);
            for (i, e) in batch.into_iter().enumerate() {
                self.mark(start + i, e, cause.kind, &msg, false);
            }
            return None;
        }
        self.counts.reruns += 1;
        Some((self.attempt)(batch))
    }

    /// `batch` holds one event that failed in a call of its own.
    fn fail_alone(&mut self, start: usize, batch: Vec<RawEvent>, failure: Failure) {
        for (i, e) in batch.into_iter().enumerate() {
            self.mark(start + i, e, failure.kind, &failure.msg, true);
        }
    }

    fn mark(&mut self, index: usize, e: RawEvent, kind: ErrorKind, msg: &str, alone: bool) {
        if alone {
            self.counts.isolated += 1;
        } else {
            self.counts.unresolved += 1;
        }
        let event = Event::failed(e.raw, self.parser, kind, msg);
        self.pieces.push((index, vec![event]));
    }
}

/// The `@error_msg` (after the parser's name) of an event left unresolved
/// when the budget ran out.
pub(crate) fn budget_exhausted(max_reruns: u32, cause: &str) -> String {
    format!(
        "isolation budget exhausted: {max_reruns} re-runs spent on this batch (`[parsers] isolation_max_reruns`) before this event was isolated, so it may be good; the call holding it failed: {cause}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake plugin: a call fails as a whole if it holds an event `bad*`
    /// (its message names the first), or `sick` after a `mark` in the same
    /// call; breaks its output at an event `broken`; otherwise every event
    /// parses to itself. Counts calls.
    fn fake(calls: &mut u32) -> impl FnMut(Vec<RawEvent>) -> Attempt + '_ {
        move |batch: Vec<RawEvent>| {
            *calls += 1;
            let marked = batch.iter().any(|e| e.raw == "mark");
            if let Some(bad) = batch
                .iter()
                .find(|e| e.raw.starts_with("bad") || (marked && e.raw == "sick"))
            {
                let msg = format!("trapped on {}", bad.raw);
                return Attempt::Failed(
                    batch,
                    Failure {
                        kind: ErrorKind::Trap,
                        msg,
                    },
                );
            }
            let parse = |b: Vec<RawEvent>| {
                b.into_iter()
                    .map(|e| Event::unparsed(e.raw))
                    .collect::<Vec<_>>()
            };
            match batch.iter().position(|e| e.raw == "broken") {
                Some(at) => {
                    let mut parsed = batch;
                    let rest = parsed.split_off(at);
                    Attempt::BrokeAt {
                        parsed: parse(parsed),
                        at,
                        rest,
                        failure: Failure {
                            kind: ErrorKind::ContractViolation,
                            msg: format!("malformed output for event {} of {}", at + 1, at + 1),
                        },
                    }
                }
                None => Attempt::Parsed(parse(batch)),
            }
        }
    }

    fn raws(lines: &[String]) -> Vec<RawEvent> {
        lines
            .iter()
            .map(|l| RawEvent::new(l.as_str(), "test", 0))
            .collect()
    }

    /// Runs a first call, then isolation; returns the events, the calls
    /// (first included) and the counts.
    fn run(lines: &[String], max_reruns: u32) -> (Vec<Event>, u32, Counts) {
        let mut calls = 0;
        let mut attempt = fake(&mut calls);
        let first = attempt(raws(lines));
        let mut out = Vec::new();
        let mut iso = Isolation::new("fake", max_reruns, attempt);
        match first {
            Attempt::Parsed(events) => out = events,
            Attempt::Failed(batch, failure) => iso.failed_batch(batch, failure),
            Attempt::BrokeAt {
                parsed,
                at,
                rest,
                failure,
            } => {
                out = parsed;
                iso.broke_at(at, rest, failure, lines.len() == 1);
            }
            Attempt::Unavailable(..) => unreachable!("the fake always starts"),
        }
        let counts = iso.finish(&mut out);
        (out, calls, counts)
    }

    fn lines(n: usize, bad: &[(usize, &str)]) -> Vec<String> {
        (0..n)
            .map(|i| match bad.iter().find(|(at, _)| *at == i) {
                Some((_, word)) => word.to_string(),
                None => format!("ok{i}"),
            })
            .collect()
    }

    /// Every event in order; which failed, with which message.
    fn failures(events: &[Event], lines: &[String]) -> Vec<(usize, String)> {
        assert_eq!(
            events.iter().map(|e| e.raw.as_str()).collect::<Vec<_>>(),
            lines.iter().map(String::as_str).collect::<Vec<_>>(),
            "every event once, in order"
        );
        events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.error_msg().map(|m| (i, m.to_string())))
            .collect()
    }

    fn ceil_log2(n: usize) -> u32 {
        n.next_power_of_two().trailing_zeros()
    }

    #[test]
    fn one_bad_event_anywhere_fails_alone_within_two_log2_n_reruns() {
        for n in [2, 3, 5, 8, 100, 256, 4096] {
            for at in [0, 1, n / 2, n - 1] {
                let lines = lines(n, &[(at, "bad")]);
                let (events, calls, counts) = run(&lines, 1000);
                assert_eq!(
                    failures(&events, &lines),
                    [(at, "parser `fake`: trapped on bad".to_string())],
                    "n={n} at={at}"
                );
                assert!(
                    counts.reruns <= 2 * ceil_log2(n),
                    "n={n} at={at}: {counts:?}"
                );
                assert_eq!(calls, counts.reruns + 1);
                assert_eq!((counts.isolated, counts.unresolved), (1, 0));
            }
        }
    }

    #[test]
    fn the_budget_runs_out_with_a_clear_message_on_the_unresolved_events() {
        let lines = lines(64, &[(5, "bad"), (40, "bad2")]);
        let (events, calls, counts) = run(&lines, 3);
        assert_eq!((calls, counts.reruns), (4, 3));
        let failed = failures(&events, &lines);
        // Halves [0, 32) and [32, 64) fail; the first event of the left half
        // (`ok0`) parses alone: not a plugin-wide failure; the budget is spent.
        assert!(events[0].error().is_none());
        assert_eq!(failed.len(), 63, "{failed:?}");
        let want = "parser `fake`: isolation budget exhausted: 3 re-runs spent on this batch (`[parsers] isolation_max_reruns`) before this event was isolated, so it may be good; the call holding it failed: trapped on bad";
        assert_eq!(failed[0], (1, want.to_string()));
        assert!(
            failed[40].1.ends_with("failed: trapped on bad2"),
            "{}",
            failed[40].1
        );
        assert_eq!(events[40].error(), Some("trap"));
        assert_eq!((counts.isolated, counts.unresolved), (0, 63));
    }

    #[test]
    fn a_plugin_that_fails_everything_costs_four_reruns() {
        let n = 4096;
        let lines: Vec<String> = (0..n).map(|i| format!("bad{i}")).collect();
        let (events, calls, counts) = run(&lines, 1000);
        let failed = failures(&events, &lines);
        assert_eq!(failed.len(), n);
        assert_eq!((calls, counts.reruns), (5, 4));
        assert_eq!(failed[0].1, "parser `fake`: trapped on bad0");
        assert_eq!(failed[2048].1, "parser `fake`: trapped on bad2048");
        assert!(
            failed[1]
                .1
                .contains("not isolated: the plugin failed both halves")
                && failed[1].1.ends_with("trapped on bad0")
        );
        assert_eq!((counts.isolated, counts.unresolved), (2, n as u32 - 2));
    }

    #[test]
    fn an_event_failing_only_in_company_is_parsed_when_alone() {
        let lines = lines(16, &[(3, "mark"), (11, "sick")]);
        let (events, _, counts) = run(&lines, 1000);
        assert_eq!(failures(&events, &lines), []);
        assert_eq!((counts.isolated, counts.unresolved), (0, 0));
        assert_eq!(counts.reruns, 2, "the two halves parse");
    }

    #[test]
    fn broken_output_is_pinned_on_its_event_and_the_rest_is_parsed() {
        let lines = lines(10, &[(4, "broken")]);
        let (events, calls, counts) = run(&lines, 1000);
        assert_eq!(
            failures(&events, &lines),
            [(
                4,
                "parser `fake`: malformed output for event 1 of 1".to_string()
            )]
        );
        assert_eq!(
            (calls, counts.isolated),
            (3, 1),
            "the culprit alone, then the events after it"
        );
    }

    #[test]
    fn isolation_off_fails_the_batch_as_before() {
        let lines = lines(8, &[(2, "bad")]);
        let (events, calls, counts) = run(&lines, 0);
        let failed = failures(&events, &lines);
        assert_eq!(failed.len(), 8);
        assert!(
            failed
                .iter()
                .all(|(_, m)| m == "parser `fake`: trapped on bad")
        );
        assert_eq!((calls, counts.reruns, counts.unresolved), (1, 0, 8));
    }
}
