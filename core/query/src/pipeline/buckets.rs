//! The `timeChart`/`bucket` step: its groups keyed by (bucket, series...), then, at the
//! end, the `limit` largest series (by their functions' values summed over the buckets)
//! with a row for every bucket of the grid, empty buckets too (`_count: "0"`), as
//! LogScale answers a time chart: bucket by bucket, series by series within one.
//!
//! Memory: at most `query.max_groups` (bucket, series) cells while reading, past which
//! the query fails naming the fix; the answer (buckets × limit rows) was bounded by the
//! same setting before the query started (`Query::resolve_buckets`).

use std::collections::{BTreeMap, HashMap};

use super::StepError;
use super::aggregate::Groups;
use crate::lang::{Aggregate, Grid, TimeBuckets};
use crate::render::{Event, field_text};

pub(crate) struct Chart {
    groups: Groups,
    series_fields: Vec<String>,
    outputs: Vec<String>,
    grid: Grid,
    series_limit: usize,
    limit_given: bool,
    name: &'static str,
    cells_limit: usize,
}

impl Chart {
    pub(crate) fn new(spec: &TimeBuckets) -> Chart {
        let grid = spec.grid.expect("the service resolves a query's bucket grid before running it");
        let mut group_by = vec!["_bucket".to_owned()];
        group_by.extend(spec.aggregate.group_by.iter().cloned());
        // One more than the cap, so that this step, not the groups, says what to do.
        let aggregate = Aggregate { group_by, limit: usize::MAX, ..spec.aggregate.clone() };
        Chart {
            groups: Groups::new(aggregate),
            series_fields: spec.aggregate.group_by.clone(),
            outputs: spec.aggregate.functions.iter().flat_map(|f| f.outputs()).collect(),
            grid,
            series_limit: spec.series_limit,
            limit_given: spec.limit_given,
            name: if spec.chart { "timeChart" } else { "bucket" },
            cells_limit: spec.aggregate.limit,
        }
    }

    pub(crate) fn push(&mut self, event: &Event) -> Result<(), StepError> {
        let Some(timestamp) = field_text(event, "@timestamp").and_then(|t| t.parse::<i64>().ok()) else { return Ok(()) };
        let Some(bucket) = self.grid.bucket_of(timestamp) else { return Ok(()) };
        let mut key = Vec::with_capacity(1 + self.series_fields.len());
        key.push(bucket.to_string());
        for field in &self.series_fields {
            match field_text(event, field) {
                Some(value) => key.push(value.into_owned()),
                // As groupBy: an event without the series field is in no series.
                None => return Ok(()),
            }
        }
        if self.groups.len() >= self.cells_limit && !self.groups.contains(&key) {
            return Err(StepError(format!(
                "{}() holds more than {} (bucket, series) cells; give a larger span, a filter that leaves fewer series, or a shorter time range (query.max_groups)",
                self.name, self.cells_limit
            )));
        }
        self.groups.push_keyed(key, event)
    }

    /// The rows, bucket by bucket; a warning if series were left out unasked.
    pub(crate) fn finish(&mut self) -> (Vec<Event>, Option<String>) {
        let rows = self.groups.finish();
        let series_of =
            |row: &Event| -> Vec<String> { self.series_fields.iter().map(|f| field_text(row, f).map(|v| v.into_owned()).unwrap_or_default()).collect() };
        // The series' weights: their functions' values over all buckets.
        let mut weights: HashMap<Vec<String>, f64> = HashMap::new();
        let mut cells: BTreeMap<(i64, Vec<String>), Event> = BTreeMap::new();
        for row in rows {
            let series = series_of(&row);
            let weight: f64 = self.outputs.iter().filter_map(|o| field_text(&row, o).and_then(|v| v.parse::<f64>().ok())).filter(|n| n.is_finite()).sum();
            *weights.entry(series.clone()).or_default() += weight;
            let bucket = field_text(&row, "_bucket").and_then(|b| b.parse::<i64>().ok()).unwrap_or(self.grid.first_ms);
            cells.insert((bucket, series), row);
        }
        let mut series: Vec<(Vec<String>, f64)> = weights.into_iter().collect();
        series.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut warning = None;
        if series.len() > self.series_limit {
            if !self.limit_given {
                warning = Some(format!(
                    "{}() found {} series and shows the {} largest; give limit= (at most query.max_series) to choose how many",
                    self.name,
                    series.len(),
                    self.series_limit
                ));
            }
            series.truncate(self.series_limit);
        }
        let mut kept: Vec<Vec<String>> = series.into_iter().map(|(s, _)| s).collect();
        kept.sort();
        if kept.is_empty() && self.series_fields.is_empty() {
            kept.push(Vec::new());
        }
        let mut out = Vec::with_capacity(self.grid.count as usize * kept.len());
        for bucket in self.grid.buckets() {
            for series in &kept {
                let row = cells.remove(&(bucket, series.clone())).unwrap_or_else(|| {
                    let mut key = vec![bucket.to_string()];
                    key.extend(series.iter().cloned());
                    self.groups.empty_row(key)
                });
                out.push(row);
            }
        }
        (out, warning)
    }
}
