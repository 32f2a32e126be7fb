//! Running a parsed query's steps over a stream of events, in bounded memory.
//!
//! Filters and `head` pass events on as they come (`head` also tells the reader to stop
//! once it has its rows). The aggregates keep only what their result needs: `tail(N)` the
//! last N events, `count()` one number, `groupBy` one counter per group (past its limit
//! the query fails rather than answer a wrong count), `sort` a heap of its `limit` best
//! events. Their rows come out when the input ends, and flow through the later steps.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use serde_json::Value;

use crate::lang::{CmpOp, Filter, Order, Query, Step};
use crate::render::{Event, field_text};

/// A step could not finish: a person can act on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

pub fn matches(filter: &Filter, event: &Event) -> bool {
    match filter {
        Filter::All => true,
        Filter::And(terms) => terms.iter().all(|t| matches(t, event)),
        Filter::Or(terms) => terms.iter().any(|t| matches(t, event)),
        Filter::Not(inner) => !matches(inner, event),
        Filter::FreeText(matcher) => field_text(event, "@rawstring").is_some_and(|raw| matcher.is_match(&raw)),
        Filter::Field { name, matcher, negate } => {
            let found = field_text(event, name).is_some_and(|value| matcher.is_match(&value));
            found != *negate
        }
        Filter::Compare { name, op, value } => {
            let Some(number) = field_text(event, name).and_then(|v| v.trim().parse::<f64>().ok()) else {
                return false;
            };
            match op {
                CmpOp::Lt => number < *value,
                CmpOp::Le => number <= *value,
                CmpOp::Gt => number > *value,
                CmpOp::Ge => number >= *value,
            }
        }
    }
}

enum Stage {
    Filter(Filter),
    Head { limit: usize, seen: usize },
    Tail { limit: usize, kept: VecDeque<Event> },
    Count { n: u64 },
    GroupBy { fields: Vec<String>, limit: usize, groups: BTreeMap<Vec<String>, u64> },
    Sort { field: String, order: Order, limit: usize, heap: BinaryHeap<Reverse<Ranked>>, seq: u64 },
}

impl Stage {
    /// Passes each event on as it comes (no state that needs the end of the input).
    fn is_streaming(&self) -> bool {
        matches!(self, Stage::Filter(_) | Stage::Head { .. })
    }

    /// Will pass nothing more on, whatever comes.
    fn is_saturated(&self) -> bool {
        matches!(self, Stage::Head { limit, seen } if seen >= limit)
    }
}

pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    pub fn new(query: &Query) -> Pipeline {
        let stages = query
            .steps
            .iter()
            .map(|step| match step {
                Step::Filter(filter) => Stage::Filter(filter.clone()),
                Step::Head(limit) => Stage::Head { limit: *limit, seen: 0 },
                Step::Tail(limit) => Stage::Tail { limit: *limit, kept: VecDeque::new() },
                Step::Count => Stage::Count { n: 0 },
                Step::GroupBy { fields, limit } => Stage::GroupBy { fields: fields.clone(), limit: *limit, groups: BTreeMap::new() },
                Step::Sort { field, order, limit } => {
                    Stage::Sort { field: field.clone(), order: *order, limit: *limit, heap: BinaryHeap::new(), seq: 0 }
                }
            })
            .collect();
        Pipeline { stages }
    }

    /// Whether the result is made of aggregate rows rather than events (LogScale's
    /// `isAggregate`).
    pub fn is_aggregate(&self) -> bool {
        self.stages.iter().any(|s| !s.is_streaming())
    }

    /// Whether more input can still change the result: false once a `head` that only
    /// streaming steps feed has all its rows.
    pub fn wants_more(&self) -> bool {
        for stage in &self.stages {
            if stage.is_saturated() {
                return false;
            }
            if !stage.is_streaming() {
                return true;
            }
        }
        true
    }

    /// Feeds one input event; rows the pipeline emits now are appended to `out`.
    pub fn push(&mut self, event: Event, out: &mut Vec<Event>) -> Result<(), StepError> {
        self.feed(0, event, out)
    }

    /// Ends the input: the aggregates' rows flow through the remaining steps into `out`.
    pub fn finish(mut self, out: &mut Vec<Event>) -> Result<(), StepError> {
        for i in 0..self.stages.len() {
            let rows = drain(&mut self.stages[i]);
            for row in rows {
                self.feed(i + 1, row, out)?;
            }
        }
        Ok(())
    }

    fn feed(&mut self, i: usize, event: Event, out: &mut Vec<Event>) -> Result<(), StepError> {
        let Some(stage) = self.stages.get_mut(i) else {
            out.push(event);
            return Ok(());
        };
        match stage {
            Stage::Filter(filter) => {
                if matches(filter, &event) {
                    return self.feed(i + 1, event, out);
                }
            }
            Stage::Head { limit, seen } => {
                if *seen < *limit {
                    *seen += 1;
                    return self.feed(i + 1, event, out);
                }
            }
            Stage::Tail { limit, kept } => {
                if kept.len() == *limit {
                    kept.pop_front();
                }
                kept.push_back(event);
            }
            Stage::Count { n } => *n += 1,
            Stage::GroupBy { fields, limit, groups } => {
                // As in LogScale, an event lacking one of the fields is in no group.
                let mut key = Vec::with_capacity(fields.len());
                for field in fields.iter() {
                    match field_text(&event, field) {
                        Some(value) => key.push(value.into_owned()),
                        None => return Ok(()),
                    }
                }
                if let Some(n) = groups.get_mut(&key) {
                    *n += 1;
                } else if groups.len() >= *limit {
                    return Err(StepError(format!(
                        "groupBy([{}]) has more than {limit} groups; narrow the query (a filter, a shorter time range) or raise limit= (at most query.max_groups)",
                        fields.join(", ")
                    )));
                } else {
                    groups.insert(key, 1);
                }
            }
            Stage::Sort { field, order, limit, heap, seq } => {
                let key = SortKey::of(&event, field);
                *seq += 1;
                heap.push(Reverse(Ranked { key, order: *order, seq: *seq, event }));
                if heap.len() > *limit {
                    heap.pop();
                }
            }
        }
        Ok(())
    }
}

fn drain(stage: &mut Stage) -> Vec<Event> {
    match stage {
        Stage::Filter(_) | Stage::Head { .. } => Vec::new(),
        Stage::Tail { kept, .. } => kept.drain(..).collect(),
        Stage::Count { n } => {
            let mut row = Event::new();
            row.insert("_count".into(), Value::String(n.to_string()));
            vec![row]
        }
        Stage::GroupBy { fields, groups, .. } => std::mem::take(groups)
            .into_iter()
            .map(|(key, n)| {
                let mut row = Event::new();
                for (field, value) in fields.iter().zip(key) {
                    row.insert(field.clone(), Value::String(value));
                }
                row.insert("_count".into(), Value::String(n.to_string()));
                row
            })
            .collect(),
        Stage::Sort { heap, .. } => {
            // Ascending in rank order is worst first.
            let mut ranked: Vec<Ranked> = std::mem::take(heap).into_iter().map(|Reverse(r)| r).collect();
            ranked.sort_by(|a, b| b.cmp(a));
            ranked.into_iter().map(|r| r.event).collect()
        }
    }
}

/// What `sort` orders by: numbers numerically, other text as text (numbers before text);
/// an event without the field comes last whatever the order.
#[derive(Debug, Clone, PartialEq)]
enum SortKey {
    Missing,
    Number(f64),
    Text(String),
}

impl SortKey {
    fn of(event: &Event, field: &str) -> SortKey {
        match field_text(event, field) {
            None => SortKey::Missing,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => SortKey::Number(n),
                _ => SortKey::Text(text.into_owned()),
            },
        }
    }

    fn cmp_values(&self, other: &SortKey) -> Ordering {
        match (self, other) {
            (SortKey::Number(a), SortKey::Number(b)) => a.total_cmp(b),
            (SortKey::Number(_), SortKey::Text(_)) => Ordering::Less,
            (SortKey::Text(_), SortKey::Number(_)) => Ordering::Greater,
            (SortKey::Text(a), SortKey::Text(b)) => a.cmp(b),
            _ => Ordering::Equal,
        }
    }
}

/// An event in a `sort` heap; `Greater` means it comes earlier in the result.
struct Ranked {
    key: SortKey,
    order: Order,
    seq: u64,
    event: Event,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_key = match (&self.key, &other.key) {
            (SortKey::Missing, SortKey::Missing) => Ordering::Equal,
            (SortKey::Missing, _) => Ordering::Less,
            (_, SortKey::Missing) => Ordering::Greater,
            (a, b) => match self.order {
                Order::Desc => a.cmp_values(b),
                Order::Asc => b.cmp_values(a),
            },
        };
        // Ties: the event read first comes first.
        by_key.then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

#[cfg(test)]
mod tests;
