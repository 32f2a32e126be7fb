//! Running a parsed query's steps over a stream of events, in bounded memory.
//!
//! Streaming steps (filters, `:=`/`eval` (`eval`), `test`, `case`/`match`, `regex`,
//! `select`, `drop`, `rename`, `default`, and the text steps of `transform`: `replace`,
//! `format`, `formatTime`, `parseJson`, `kvParse`, `split`) and `head` pass events on as
//! they come (`head` also tells the reader to stop once it has its rows). The others keep
//! only what their result needs: `tail(N)` the last N events, an aggregate (`count`,
//! `stats`, `groupBy`, `top`, ...: the `aggregate` module) a few numbers per group
//! (past its limits the query fails rather than answer a wrong number), `sort`/`table` a
//! heap of its `limit` best events. Their rows come out when the input ends, and flow
//! through the later steps. No step makes one event into an unbounded amount of memory
//! (`transform::MAX_VALUE_BYTES`, `transform::MAX_SPLIT_BYTES`).

mod aggregate;
mod buckets;
mod eval;
mod transform;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::lang::{CmpOp, Filter, Matcher, Order, Query, SortBy, SortType, Step, format_number};
use crate::render::{Event, field_text};
use aggregate::Groups;
use buckets::Chart;

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

/// Sets the named groups of `regex`'s first match in `text` as fields.
fn set_captures(regex: &Regex, text: &str, event: &mut Event) -> bool {
    let Some(captures) = regex.captures(text) else {
        return false;
    };
    let values: Vec<(String, String)> =
        regex.capture_names().flatten().filter_map(|name| captures.name(name).map(|m| (name.to_owned(), m.as_str().to_owned()))).collect();
    for (name, value) in values {
        event.insert(name, Value::String(value));
    }
    true
}

/// After a filter passed: the named groups of its regexes that must have matched (the
/// filter itself, or a term of a top-level `and`) become fields, as in LogScale.
fn extract(filter: &Filter, event: &mut Event) {
    match filter {
        Filter::And(terms) => terms.iter().for_each(|t| extract(t, event)),
        Filter::FreeText(Matcher::Regex(regex)) | Filter::Field { matcher: Matcher::Regex(regex), negate: false, .. }
            if regex.capture_names().flatten().next().is_some() =>
        {
            let name = match filter {
                Filter::Field { name, .. } => name.as_str(),
                _ => "@rawstring",
            };
            if let Some(text) = field_text(event, name).map(|t| t.into_owned()) {
                set_captures(regex, &text, event);
            }
        }
        _ => {}
    }
}

/// Runs one streaming step on an event: the event to pass on, or `None` to drop it.
fn apply(step: &Step, mut event: Event) -> Option<Event> {
    match step {
        Step::Filter(filter) => {
            if !matches(filter, &event) {
                return None;
            }
            extract(filter, &mut event);
        }
        Step::Assign { field, expr } => {
            if let Some(value) = eval::eval(expr, &event).map(|v| v.into_owned()) {
                event.insert(field.clone(), Value::String(value));
            }
        }
        Step::Test(expr) => {
            if !eval::truthy(eval::eval(expr, &event).as_deref()) {
                return None;
            }
        }
        Step::Default { fields, value } => {
            for field in fields {
                if field_text(&event, field).is_none() {
                    event.insert(field.clone(), Value::String(value.clone()));
                }
            }
        }
        Step::Case(branches) => {
            return branches.iter().find_map(|steps| steps.iter().try_fold(event.clone(), |e, step| apply(step, e)));
        }
        Step::Regex { field, regex } => {
            let text = field_text(&event, field)?.into_owned();
            if !set_captures(regex, &text, &mut event) {
                return None;
            }
        }
        Step::Select(fields) => {
            let mut selected = Event::new();
            for field in fields {
                if let Some(value) = event.remove(field) {
                    selected.insert(field.clone(), value);
                }
            }
            return Some(selected);
        }
        Step::Drop(fields) => {
            for field in fields {
                event.remove(field);
            }
        }
        Step::Rename(pairs) => {
            for (from, to) in pairs {
                if let Some(value) = event.remove(from) {
                    event.insert(to.clone(), value);
                }
            }
        }
        Step::Replace { regex, with, field, output } => {
            if let Some(replaced) = field_text(&event, field).and_then(|text| transform::replace(regex, &text, with)) {
                event.insert(output.clone(), Value::String(replaced));
            }
        }
        Step::Format { format, fields, output } => {
            let values: Option<Vec<String>> = fields.iter().map(|f| field_text(&event, f).map(|v| v.into_owned())).collect();
            if let Some(text) = values.and_then(|values| transform::printf(format, &values)) {
                event.insert(output.clone(), Value::String(text));
            }
        }
        Step::FormatTime { format, field, output, unit } => {
            if let Some(text) = field_text(&event, field).and_then(|v| transform::format_time(format, &v, *unit)) {
                event.insert(output.clone(), Value::String(text));
            }
        }
        Step::ParseJson { field, prefix } => transform::parse_json(&mut event, field, prefix),
        Step::KvParse { field, pairs, prefix, overwrite } => transform::kv_parse(&mut event, field, pairs, prefix, *overwrite),
        Step::Head(_) | Step::Tail(_) | Step::Aggregate(_) | Step::Top { .. } | Step::TimeBuckets(_) | Step::Sort { .. } | Step::Split { .. } => {
            unreachable!("not a streaming step")
        }
    }
    Some(event)
}

enum Stage {
    /// A streaming step (see [`apply`]).
    Map(Step),
    /// `split(field)`: one event in, one per array element out.
    Split(String),
    Head {
        limit: usize,
        seen: usize,
    },
    Tail {
        limit: usize,
        kept: VecDeque<Event>,
    },
    Aggregate(Groups),
    /// `timeChart()`, `bucket()`.
    Chart(Box<Chart>),
    /// `top()`: its groups, then the largest `limit` of them.
    Top {
        groups: Groups,
        output: String,
        first_field: String,
        limit: usize,
        percent: bool,
        rest: Option<String>,
    },
    Sort {
        by: Vec<SortBy>,
        orders: Arc<[Order]>,
        limit: usize,
        heap: BinaryHeap<Reverse<Ranked>>,
        seq: u64,
    },
}

impl Stage {
    /// Passes each event on as it comes (no state that needs the end of the input).
    fn is_streaming(&self) -> bool {
        matches!(self, Stage::Map(_) | Stage::Split(_) | Stage::Head { .. })
    }

    /// Will pass nothing more on, whatever comes.
    fn is_saturated(&self) -> bool {
        matches!(self, Stage::Head { limit, seen } if seen >= limit)
    }
}

pub struct Pipeline {
    stages: Vec<Stage>,
    /// Said in a query job's `metaData.warnings` (a time chart's series left out).
    warnings: Vec<String>,
}

impl Pipeline {
    pub fn new(query: &Query) -> Pipeline {
        let stages = query
            .steps
            .iter()
            .map(|step| match step {
                Step::Head(limit) => Stage::Head { limit: *limit, seen: 0 },
                Step::Tail(limit) => Stage::Tail { limit: *limit, kept: VecDeque::new() },
                Step::Aggregate(spec) => Stage::Aggregate(Groups::new(spec.clone())),
                Step::Top { aggregate, limit, percent, rest } => Stage::Top {
                    groups: Groups::new(aggregate.clone()),
                    output: aggregate.functions[0].output.clone(),
                    first_field: aggregate.group_by[0].clone(),
                    limit: *limit,
                    percent: *percent,
                    rest: rest.clone(),
                },
                Step::Sort { by, limit } => {
                    Stage::Sort { by: by.clone(), orders: by.iter().map(|b| b.order).collect(), limit: *limit, heap: BinaryHeap::new(), seq: 0 }
                }
                Step::Split { field } => Stage::Split(field.clone()),
                Step::TimeBuckets(spec) => Stage::Chart(Box::new(Chart::new(spec))),
                streaming => Stage::Map(streaming.clone()),
            })
            .collect();
        Pipeline { stages, warnings: Vec::new() }
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
    /// Returns the warnings a query job shows (a time chart's series left out).
    pub fn finish(mut self, out: &mut Vec<Event>) -> Result<Vec<String>, StepError> {
        for i in 0..self.stages.len() {
            let rows = match &mut self.stages[i] {
                Stage::Chart(chart) => {
                    let (rows, warning) = chart.finish();
                    self.warnings.extend(warning);
                    rows
                }
                stage => drain(stage),
            };
            for row in rows {
                self.feed(i + 1, row, out)?;
            }
        }
        Ok(self.warnings)
    }

    fn feed(&mut self, i: usize, event: Event, out: &mut Vec<Event>) -> Result<(), StepError> {
        let Some(stage) = self.stages.get_mut(i) else {
            out.push(event);
            return Ok(());
        };
        match stage {
            Stage::Map(step) => {
                if let Some(event) = apply(step, event) {
                    return self.feed(i + 1, event, out);
                }
            }
            Stage::Split(field) => {
                let field = field.clone();
                for part in transform::split(event, &field).map_err(StepError)? {
                    self.feed(i + 1, part, out)?;
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
            Stage::Aggregate(groups) | Stage::Top { groups, .. } => groups.push(&event)?,
            Stage::Chart(chart) => chart.push(&event)?,
            Stage::Sort { by, orders, limit, heap, seq } => {
                let keys = by.iter().map(|b| SortKey::of(&event, &b.field, b.kind)).collect();
                *seq += 1;
                heap.push(Reverse(Ranked { keys, orders: orders.clone(), seq: *seq, event }));
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
        Stage::Map(_) | Stage::Split(_) | Stage::Head { .. } => Vec::new(),
        Stage::Tail { kept, .. } => kept.drain(..).collect(),
        Stage::Aggregate(groups) => groups.finish(),
        Stage::Chart(_) => unreachable!("Pipeline::finish drains a chart itself"),
        Stage::Top { groups, output, first_field, limit, percent, rest } => top(groups.finish(), output, first_field, *limit, *percent, rest.as_deref()),
        Stage::Sort { heap, .. } => {
            // Ascending in rank order is worst first.
            let mut ranked: Vec<Ranked> = std::mem::take(heap).into_iter().map(|Reverse(r)| r).collect();
            ranked.sort_by(|a, b| b.cmp(a));
            ranked.into_iter().map(|r| r.event).collect()
        }
    }
}

/// `top()`'s rows from its groups' rows: largest `output` first (ties in group order).
fn top(rows: Vec<Event>, output: &str, first_field: &str, limit: usize, percent: bool, rest: Option<&str>) -> Vec<Event> {
    let value = |row: &Event| field_text(row, output).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let total: f64 = rows.iter().map(value).sum();
    let mut rows: Vec<(f64, Event)> = rows.into_iter().map(|row| (value(&row), row)).collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let left_out: f64 = rows.iter().skip(limit).map(|(v, _)| v).sum();
    let had_rest = rows.len() > limit;
    rows.truncate(limit);
    let mut out: Vec<Event> = rows.into_iter().map(|(_, row)| row).collect();
    if let Some(rest) = rest
        && had_rest
    {
        let mut row = Event::new();
        row.insert(first_field.to_owned(), Value::String(rest.to_owned()));
        row.insert(output.to_owned(), Value::String(format_number(left_out)));
        out.push(row);
    }
    if percent && total != 0.0 {
        for row in &mut out {
            let share = value(row) * 100.0 / total;
            row.insert("percent".into(), Value::String(format_number(share)));
        }
    }
    out
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
    fn of(event: &Event, field: &str, kind: SortType) -> SortKey {
        let Some(text) = field_text(event, field) else { return SortKey::Missing };
        let number = match kind {
            SortType::String => None,
            SortType::Number => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            SortType::Hex => {
                let digits = text.trim();
                let digits = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")).unwrap_or(digits);
                u64::from_str_radix(digits, 16).ok().map(|n| n as f64)
            }
        };
        match number {
            Some(n) => SortKey::Number(n),
            None => SortKey::Text(text.into_owned()),
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
    keys: Vec<SortKey>,
    /// The sort's orders, one per key (shared by the heap's events).
    orders: Arc<[Order]>,
    seq: u64,
    event: Event,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        for ((a, b), order) in self.keys.iter().zip(&other.keys).zip(self.orders.iter()) {
            let by_key = match (a, b) {
                (SortKey::Missing, SortKey::Missing) => Ordering::Equal,
                (SortKey::Missing, _) => Ordering::Less,
                (_, SortKey::Missing) => Ordering::Greater,
                (a, b) => match order {
                    Order::Desc => a.cmp_values(b),
                    Order::Asc => b.cmp_values(a),
                },
            };
            if by_key != Ordering::Equal {
                return by_key;
            }
        }
        // Ties: the event read first comes first.
        other.seq.cmp(&self.seq)
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
