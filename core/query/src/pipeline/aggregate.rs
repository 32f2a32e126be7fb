//! Aggregate functions per group, in bounded memory: `count`, `sum`, `avg`, `min`, `max`,
//! `percentile`, alone (`stats`, one group) or under `groupBy`.
//!
//! [`Groups`] keys its groups by a list of values; `groupBy` takes them from the event's
//! fields, and a time-bucketed aggregate (`timeChart`, `bucket`) can put its bucket first
//! through [`Groups::push_keyed`]. Each group keeps one [`State`] per function: a few
//! numbers, except `count(distinct=true)` (the distinct values), `percentile` (the
//! values) and `collect` (its values), which count against one cap for the whole step; past it, or past the group
//! limit, the query fails instead of answering a wrong number.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::StepError;
use crate::lang::{AggFunction, AggKind, Aggregate, format_number};
use crate::render::{Event, field_text};

/// A function's running state in one group.
#[derive(Debug, Clone)]
enum State {
    Count(u64),
    Distinct(HashSet<String>),
    Sum(f64),
    Avg {
        sum: f64,
        n: u64,
    },
    Min(Option<f64>),
    Max(Option<f64>),
    Values(Vec<f64>),
    /// Per field, its distinct values in the order first seen.
    Collect(Vec<(HashSet<String>, Vec<String>)>),
    /// The `@timestamp` and the fields of the latest event so far.
    Last(Option<(i64, Vec<Option<String>>)>),
}

impl State {
    fn new(function: &AggFunction) -> State {
        match &function.kind {
            AggKind::Count { distinct: true, .. } => State::Distinct(HashSet::new()),
            AggKind::Count { .. } => State::Count(0),
            AggKind::Sum(_) => State::Sum(0.0),
            AggKind::Avg(_) => State::Avg { sum: 0.0, n: 0 },
            AggKind::Min(_) => State::Min(None),
            AggKind::Max(_) => State::Max(None),
            AggKind::Percentile { .. } => State::Values(Vec::new()),
            AggKind::Collect { fields, .. } => State::Collect(fields.iter().map(|_| Default::default()).collect()),
            AggKind::SelectLast(_) => State::Last(None),
        }
    }

    /// Adds the event; the values newly held (distinct values, percentile inputs, collected
    /// values) and the bytes of the text among them.
    fn update(&mut self, function: &AggFunction, event: &Event) -> (usize, usize) {
        let number = |field: &str| field_text(event, field).and_then(|v| v.trim().parse::<f64>().ok()).filter(|n| n.is_finite());
        match (self, &function.kind) {
            (State::Count(n), AggKind::Count { field, .. }) => {
                if field.as_deref().is_none_or(|f| field_text(event, f).is_some()) {
                    *n += 1;
                }
                (0, 0)
            }
            (State::Distinct(values), AggKind::Count { field: Some(field), .. }) => match field_text(event, field) {
                Some(value) if !values.contains(value.as_ref()) => {
                    let bytes = value.len();
                    values.insert(value.into_owned());
                    (1, bytes)
                }
                _ => (0, 0),
            },
            (State::Sum(sum), AggKind::Sum(field)) => {
                *sum += number(field).unwrap_or(0.0);
                (0, 0)
            }
            (State::Avg { sum, n }, AggKind::Avg(field)) => {
                if let Some(x) = number(field) {
                    *sum += x;
                    *n += 1;
                }
                (0, 0)
            }
            (State::Min(min), AggKind::Min(field)) => {
                if let Some(x) = number(field) {
                    *min = Some(min.map_or(x, |m| m.min(x)));
                }
                (0, 0)
            }
            (State::Max(max), AggKind::Max(field)) => {
                if let Some(x) = number(field) {
                    *max = Some(max.map_or(x, |m| m.max(x)));
                }
                (0, 0)
            }
            (State::Values(values), AggKind::Percentile { field, .. }) => match number(field) {
                Some(x) => {
                    values.push(x);
                    (1, 0)
                }
                None => (0, 0),
            },
            (State::Collect(per_field), AggKind::Collect { fields, limit, .. }) => {
                let (mut added, mut bytes) = (0, 0);
                for ((seen, values), field) in per_field.iter_mut().zip(fields) {
                    if let Some(value) = field_text(event, field)
                        && values.len() < *limit
                        && !seen.contains(value.as_ref())
                    {
                        // Held twice: in the set and in the list.
                        bytes += 2 * value.len();
                        seen.insert(value.clone().into_owned());
                        values.push(value.into_owned());
                        added += 1;
                    }
                }
                (added, bytes)
            }
            (State::Last(last), AggKind::SelectLast(fields)) => {
                let timestamp = field_text(event, "@timestamp").and_then(|t| t.parse::<i64>().ok()).unwrap_or(i64::MIN);
                if last.as_ref().is_none_or(|(latest, _)| timestamp >= *latest) {
                    *last = Some((timestamp, fields.iter().map(|f| field_text(event, f).map(|v| v.into_owned())).collect()));
                }
                (0, 0)
            }
            _ => unreachable!("a state is made for its function"),
        }
    }

    /// Writes the result into `row`; a function with no input value writes nothing (as
    /// LogScale leaves `_avg`, `_min`, `_max` out), except the counts and `sum` (0).
    fn write(self, function: &AggFunction, row: &mut Event) {
        let mut put = |name: String, n: f64| {
            row.insert(name, Value::String(format_number(n)));
        };
        match self {
            State::Count(n) => put(function.output.clone(), n as f64),
            State::Distinct(values) => put(function.output.clone(), values.len() as f64),
            State::Sum(sum) => put(function.output.clone(), sum),
            State::Avg { sum, n } if n > 0 => put(function.output.clone(), sum / n as f64),
            State::Min(Some(x)) | State::Max(Some(x)) => put(function.output.clone(), x),
            State::Values(mut values) if !values.is_empty() => {
                values.sort_by(f64::total_cmp);
                let AggKind::Percentile { percentiles, .. } = &function.kind else { unreachable!("values are percentile's") };
                for (p, name) in percentiles.iter().zip(function.outputs()) {
                    put(name, nearest_rank(&values, *p));
                }
            }
            State::Collect(per_field) => {
                let AggKind::Collect { fields, separator, .. } = &function.kind else { unreachable!("collect's state") };
                for ((_, values), field) in per_field.into_iter().zip(fields) {
                    if !values.is_empty() {
                        row.insert(field.clone(), Value::String(values.join(separator)));
                    }
                }
            }
            State::Last(Some((_, values))) => {
                let AggKind::SelectLast(fields) = &function.kind else { unreachable!("selectLast's state") };
                for (value, field) in values.into_iter().zip(fields) {
                    if let Some(value) = value {
                        row.insert(field.clone(), Value::String(value));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The value at percentile `p` of sorted `values` (nearest rank; LogScale estimates).
fn nearest_rank(values: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The groups of one aggregate step.
pub(crate) struct Groups {
    spec: Aggregate,
    groups: BTreeMap<Vec<String>, Vec<State>>,
    /// Distinct values and percentile inputs held, over all groups.
    values_held: usize,
    /// Bytes of the distinct and collected text held, over all groups.
    bytes_held: usize,
}

/// Most bytes of distinct and collected text one aggregate step holds.
pub(crate) const MAX_HELD_BYTES: usize = 64 << 20;

impl Groups {
    pub(crate) fn new(spec: Aggregate) -> Groups {
        Groups { spec, groups: BTreeMap::new(), values_held: 0, bytes_held: 0 }
    }

    /// Adds an event to the group of its `group_by` values; as in LogScale, an event
    /// lacking one of them is in no group.
    pub(crate) fn push(&mut self, event: &Event) -> Result<(), StepError> {
        let mut key = Vec::with_capacity(self.spec.group_by.len());
        for field in &self.spec.group_by {
            match field_text(event, field) {
                Some(value) => key.push(value.into_owned()),
                None => return Ok(()),
            }
        }
        self.push_keyed(key, event)
    }

    /// Adds an event to the group `key` (the `group_by` values, after any bucket).
    pub(crate) fn push_keyed(&mut self, key: Vec<String>, event: &Event) -> Result<(), StepError> {
        let held = self.groups.len();
        let states = match self.groups.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                if held >= self.spec.limit {
                    return Err(StepError(format!(
                        "groupBy([{}]) has more than {} groups; narrow the query (a filter, a shorter time range) or raise limit= (at most query.max_groups)",
                        self.spec.group_by.join(", "),
                        self.spec.limit
                    )));
                }
                entry.insert(self.spec.functions.iter().map(State::new).collect())
            }
        };
        for (state, function) in states.iter_mut().zip(&self.spec.functions) {
            let (values, bytes) = state.update(function, event);
            self.values_held += values;
            self.bytes_held += bytes;
        }
        if self.bytes_held > MAX_HELD_BYTES {
            return Err(StepError(format!(
                "count(distinct=true) and collect() hold more than {} MiB of text; narrow the query or collect shorter fields",
                MAX_HELD_BYTES >> 20
            )));
        }
        if self.values_held > self.spec.max_values {
            return Err(StepError(format!(
                "count(distinct=true), percentile() and collect() hold more than {} values; narrow the query or group by fewer values (query.max_aggregate_values)",
                self.spec.max_values
            )));
        }
        Ok(())
    }

    /// Groups held.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    pub(crate) fn contains(&self, key: &[String]) -> bool {
        self.groups.contains_key(key)
    }

    /// The row of a group no event reached (`key`: the `group_by` values): the counts and
    /// `sum` 0, the others absent, as LogScale fills a time chart's empty buckets.
    pub(crate) fn empty_row(&self, key: Vec<String>) -> Event {
        let mut row = Event::new();
        for (field, value) in self.spec.group_by.iter().zip(key) {
            row.insert(field.clone(), Value::String(value));
        }
        for function in &self.spec.functions {
            State::new(function).write(function, &mut row);
        }
        row
    }

    /// One row per group, by key; with no `group_by` always one row (`count()` of
    /// nothing is `_count: 0`).
    pub(crate) fn finish(&mut self) -> Vec<Event> {
        let mut groups = std::mem::take(&mut self.groups);
        if groups.is_empty() && self.spec.group_by.is_empty() {
            groups.insert(Vec::new(), self.spec.functions.iter().map(State::new).collect());
        }
        groups
            .into_iter()
            .map(|(key, states)| {
                let mut row = Event::new();
                for (field, value) in self.spec.group_by.iter().zip(key) {
                    row.insert(field.clone(), Value::String(value));
                }
                for (state, function) in states.into_iter().zip(&self.spec.functions) {
                    state.write(function, &mut row);
                }
                row
            })
            .collect()
    }
}
