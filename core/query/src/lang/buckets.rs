//! `timeChart()` and `bucket()`: an aggregate per time bucket (and per series), as
//! LogScale has them. The parser gives a [`TimeBuckets`] whose span may depend on the
//! query's time range (`span=auto`, `buckets=N`); [`Query::resolve_buckets`] fixes the
//! bucket grid once the range (and the request's `timeZoneOffsetMinutes`) is known, and
//! refuses a grid too large to answer before any segment is read.
//!
//! The grid, as LogScale draws it (its query-job responses: `bucket_first_bucket` is the
//! query's start rounded down to the span, `bucket_last_bucket` its end rounded down):
//! with a span, buckets start at multiples of the span since the epoch in the request's
//! time zone, from the one holding `start` to the one holding `end`; with `buckets=N`, N
//! buckets of `ceil(range / N)` from `start`; with neither (`auto`), the span is the
//! smallest of [`NICE_SPANS`] (or a whole number of days) that makes at most
//! [`AUTO_BUCKETS`] buckets of the range (5 minutes: 3 s, 1 hour: 1 min, 24 hours: 15 min,
//! 7 days: 2 h, 30 days: 8 h). `_bucket` is a bucket's start in ms since the epoch (UTC).

use super::{Aggregate, ParseError, Query, Step};

/// LogScale's `MAX_SERIES_LIMIT` default: the most `limit=` a time chart takes.
pub const DEFAULT_MAX_SERIES: usize = 500;
/// LogScale's default `limit=` of `timeChart()` and `bucket()`.
pub const DEFAULT_SERIES_LIMIT: usize = 10;
/// LogScale's largest `buckets=`; Weir also refuses a span that makes more.
pub const MAX_BUCKETS: i64 = 1500;
/// Buckets an automatic span aims at (LogScale draws 5 minutes as 3 s buckets).
pub const AUTO_BUCKETS: i64 = 100;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Spans `span=auto` chooses from, smallest first; past the last, whole days.
pub const NICE_SPANS: [i64; 27] = [
    SECOND,
    2 * SECOND,
    3 * SECOND,
    5 * SECOND,
    10 * SECOND,
    15 * SECOND,
    20 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    3 * MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    20 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    4 * HOUR,
    6 * HOUR,
    8 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
];

/// How wide the buckets are, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Chosen from the time range (`span=auto` or nothing).
    Auto,
    /// `span=1h`: milliseconds.
    Fixed(i64),
    /// `buckets=N`: the range cut into N.
    Buckets(i64),
}

/// The buckets of one query: `count` buckets of `span_ms` from `first_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub first_ms: i64,
    pub span_ms: i64,
    pub count: i64,
}

impl Grid {
    /// The start of the bucket holding `timestamp_ms`, if one does.
    pub fn bucket_of(&self, timestamp_ms: i64) -> Option<i64> {
        if timestamp_ms < self.first_ms {
            return None;
        }
        let index = (timestamp_ms - self.first_ms) / self.span_ms;
        (index < self.count).then(|| self.first_ms + index * self.span_ms)
    }

    pub fn last_ms(&self) -> i64 {
        self.first_ms + (self.count - 1) * self.span_ms
    }

    pub fn buckets(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.count).map(|i| self.first_ms + i * self.span_ms)
    }
}

/// `timeChart(series, function=count(), span=auto, buckets=, limit=10)` and
/// `bucket(span, field=[], function=count(), buckets=, limit=10)`.
#[derive(Debug, Clone)]
pub struct TimeBuckets {
    /// `group_by` holds the series fields (timeChart's `series`, bucket's `field`);
    /// `limit` the most (bucket, series) cells held while reading.
    pub aggregate: Aggregate,
    pub span: Span,
    /// The most series answered: the largest by their functions' values, summed over the
    /// buckets (LogScale's "top-N series").
    pub series_limit: usize,
    /// `limit=` was written: more series than it are left out without a warning.
    pub limit_given: bool,
    /// `timeChart` (its job says so in `extraData`) rather than `bucket`.
    pub chart: bool,
    /// Set by [`Query::resolve_buckets`].
    pub grid: Option<Grid>,
}

/// A span as `span=` takes it: `1m`, `5min`, `1h`, `1d`, `3 weeks`, `auto`.
pub(super) fn parse_span(text: &str) -> Result<Span, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Span::Auto);
    }
    let ms = crate::time::relative_ms(text.trim())?;
    if ms <= 0 {
        return Err(format!("span={text} is empty; give a span like 1m, 5min, 1h or 1d"));
    }
    Ok(Span::Fixed(ms))
}

/// The automatic span of a range (see the module doc).
pub fn auto_span(range_ms: i64) -> i64 {
    let wanted = (range_ms.max(1) + AUTO_BUCKETS - 1) / AUTO_BUCKETS;
    NICE_SPANS.iter().copied().find(|span| *span >= wanted).unwrap_or_else(|| (wanted + DAY - 1) / DAY * DAY)
}

/// A span in words, as LogScale's `bucket_span_humanized` (`3 seconds`, `1 hour`).
pub fn humanize(span_ms: i64) -> String {
    for (unit, name) in [(DAY, "day"), (HOUR, "hour"), (MINUTE, "minute"), (SECOND, "second"), (1, "millisecond")] {
        if span_ms % unit == 0 {
            let n = span_ms / unit;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    unreachable!("every span is a whole number of milliseconds")
}

/// The grid of `span` over `[start_ms, end_ms]` with the time zone `offset_ms` east of UTC.
pub fn grid(span: Span, start_ms: i64, end_ms: i64, offset_ms: i64) -> Result<Grid, String> {
    let range = end_ms - start_ms;
    let grid = match span {
        Span::Buckets(n) => Grid { first_ms: start_ms, span_ms: ((range + 1) + n - 1) / n, count: n },
        Span::Auto | Span::Fixed(_) => {
            let span_ms = match span {
                Span::Fixed(ms) => ms,
                _ => auto_span(range),
            };
            let floor = |t: i64| (t + offset_ms).div_euclid(span_ms) * span_ms - offset_ms;
            let first_ms = floor(start_ms);
            let count = (floor(end_ms) - first_ms) / span_ms + 1;
            Grid { first_ms, span_ms, count }
        }
    };
    if grid.count > MAX_BUCKETS {
        return Err(format!(
            "span={} over the query's {} makes {} buckets; at most {MAX_BUCKETS}: give a larger span (at least {}) or a shorter time range",
            humanize(grid.span_ms),
            humanize(range.max(1)),
            grid.count,
            humanize(((range + MAX_BUCKETS - 1) / MAX_BUCKETS + SECOND - 1) / SECOND * SECOND)
        ));
    }
    Ok(grid)
}

impl Query {
    /// Fixes the bucket grid of each `timeChart`/`bucket` for the range `[start_ms,
    /// end_ms]` and the request's `timeZoneOffsetMinutes` (east of UTC); refuses a grid of
    /// more than [`MAX_BUCKETS`] buckets, or whose buckets × series limit exceeds
    /// `max_cells` (`query.max_groups`): the answer would be too large to hold.
    pub fn resolve_buckets(&mut self, start_ms: i64, end_ms: i64, offset_minutes: i64, max_cells: usize) -> Result<(), ParseError> {
        for step in &mut self.steps {
            let Step::TimeBuckets(buckets) = step else { continue };
            let name = if buckets.chart { "timeChart" } else { "bucket" };
            let grid = grid(buckets.span, start_ms, end_ms, offset_minutes * MINUTE).map_err(|e| ParseError { message: format!("{name}(): {e}") })?;
            let cells = grid.count as usize * buckets.series_limit;
            if !buckets.aggregate.group_by.is_empty() && cells > max_cells {
                return Err(ParseError {
                    message: format!(
                        "{name}(): {} buckets × limit={} series is {cells} rows, more than {max_cells} (query.max_groups); give a larger span, a lower limit or a shorter time range",
                        grid.count, buckets.series_limit
                    ),
                });
            }
            buckets.grid = Some(grid);
        }
        Ok(())
    }

    /// The query's `timeChart`/`bucket`, if it has one.
    pub fn time_buckets(&self) -> Option<&TimeBuckets> {
        self.steps.iter().find_map(|s| match s {
            Step::TimeBuckets(b) => Some(b),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::{Limits, parse};

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn the_grid_is_drawn_as_logscale_draws_it() {
        // (span, start, end, offset minutes) -> (first bucket, span, buckets).
        type Case = (Span, i64, i64, i64, (i64, i64, i64));
        let table: &[Case] = &[
            // LogScale's own answer for 5 minutes, no span: 3 s buckets from the start
            // rounded down to the end rounded down (bucket_first_bucket/last_bucket).
            (Span::Auto, 1_543_314_287_074, 1_543_314_587_074, 0, (1_543_314_285_000, 3_000, 101)),
            (Span::Auto, 1_543_311_435_057, 1_543_311_735_057, 0, (1_543_311_435_000, 3_000, 101)),
            // One hour, span=1m: whole minutes.
            (Span::Fixed(MINUTE), NOW - HOUR + 1, NOW, 0, (NOW - HOUR, MINUTE, 61)),
            (Span::Fixed(MINUTE), NOW - HOUR + 1, NOW - 1, 0, (NOW - HOUR, MINUTE, 60)),
            (Span::Fixed(5 * MINUTE), NOW - HOUR, NOW, 0, (NOW - HOUR, 5 * MINUTE, 13)),
            // Days start at midnight UTC, or in the request's time zone (UTC+02:00: 22:00 UTC).
            (Span::Fixed(DAY), 3 * DAY + 5 * HOUR, 5 * DAY + HOUR, 0, (3 * DAY, DAY, 3)),
            (Span::Fixed(DAY), 3 * DAY + 5 * HOUR, 5 * DAY + HOUR, 120, (3 * DAY - 2 * HOUR, DAY, 3)),
            (Span::Fixed(DAY), 3 * DAY + 5 * HOUR, 5 * DAY + HOUR, -300, (3 * DAY + 5 * HOUR, DAY, 2)),
            // buckets=N: the range cut into N from its start.
            (Span::Buckets(4), 1_000, 1_999, 0, (1_000, 250, 4)),
            (Span::Buckets(3), 0, 10, 0, (0, 4, 3)),
            // The automatic span of longer ranges.
            (Span::Auto, NOW - HOUR, NOW, 0, (NOW - HOUR, MINUTE, 61)),
            (Span::Auto, NOW - DAY, NOW, 0, (NOW - DAY, 15 * MINUTE, 97)),
            (Span::Auto, NOW - 7 * DAY, NOW, 0, (NOW - 7 * DAY, 2 * HOUR, 85)),
        ];
        for &(span, start, end, offset, (first_ms, span_ms, count)) in table {
            let got = grid(span, start, end, offset * MINUTE).unwrap();
            assert_eq!(got, Grid { first_ms, span_ms, count }, "{span:?} over [{start}, {end}] at {offset} min");
            assert_eq!(got.bucket_of(start), Some(first_ms), "the start is in the first bucket");
            assert_eq!(got.bucket_of(end), Some(got.last_ms()), "the end is in the last bucket");
            assert_eq!(got.bucket_of(first_ms - 1), None);
        }
    }

    #[test]
    fn spans_are_written_and_said_as_logscale_does() {
        for (text, ms) in [("1m", MINUTE), ("5min", 5 * MINUTE), ("1h", HOUR), ("1d", DAY), ("1hour", HOUR), ("3 weeks", 21 * DAY), ("30s", 30 * SECOND)] {
            assert_eq!(parse_span(text), Ok(Span::Fixed(ms)), "{text}");
        }
        assert_eq!(parse_span("auto"), Ok(Span::Auto));
        assert!(parse_span("0m").unwrap_err().contains("empty"));
        assert!(parse_span("soon").is_err());
        for (ms, words) in [(3_000, "3 seconds"), (MINUTE, "1 minute"), (2 * HOUR, "2 hours"), (DAY, "1 day"), (1_500, "1500 milliseconds")] {
            assert_eq!(humanize(ms), words);
        }
    }

    #[test]
    fn a_grid_too_large_is_refused_before_reading() {
        let resolve = |q: &str, range: i64| {
            let mut query = parse(q, &Limits::default()).map_err(|e| e.message)?;
            query.resolve_buckets(NOW - range, NOW, 0, 20_000).map_err(|e| e.message)?;
            Ok::<_, String>(query.time_buckets().unwrap().grid.unwrap())
        };
        assert_eq!(resolve("timeChart(span=1m)", HOUR).unwrap().count, 61);
        let error = resolve("timeChart(span=1s)", DAY).unwrap_err();
        assert!(error.contains("makes 86401 buckets; at most 1500") && error.contains("at least 58 seconds"), "{error}");
        let error = resolve("timeChart(#host, span=1m, limit=500)", DAY).unwrap_err();
        assert!(error.contains("1441 buckets × limit=500 series") && error.contains("query.max_groups"), "{error}");
        // Without a series field there is one series, whatever the limit.
        assert!(resolve("timeChart(span=1m, limit=500)", DAY).is_ok());
        assert_eq!(resolve("bucket(buckets=7)", DAY).unwrap().count, 7);
    }

    #[test]
    fn arguments_are_checked_by_name() {
        let err = |q: &str| parse(q, &Limits::default()).unwrap_err().message;
        let table = [
            ("timeChart(span=1h, buckets=4)", "give span= or buckets=, not both"),
            ("timeChart(buckets=0)", "a whole number from 1 to 1500"),
            ("timeChart(buckets=1501)", "a whole number from 1 to 1500"),
            ("timeChart(span=fortnight)", "timeChart(span=fortnight)"),
            ("timeChart(limit=501)", "between 1 and 500 (query.max_series)"),
            ("timeChart(series=[a, b])", "timeChart(series=...) is one field"),
            ("timeChart(timezone=UTC)", "send timeZoneOffsetMinutes in the request instead"),
            ("bucket(series=x)", "parameter `series` is not supported"),
            ("timeChart(function=head())", "function head() is not supported as an aggregate"),
        ];
        for (query, expected) in table {
            let error = err(query);
            assert!(error.contains(expected), "{query}: {error}");
        }
        let query = parse("timechart(#host, function=[count(), avg(n)], span=5min, limit=3)", &Limits::default()).unwrap();
        let b = query.time_buckets().unwrap();
        assert_eq!(
            (b.aggregate.group_by.clone(), b.span, b.series_limit, b.limit_given, b.chart),
            (vec!["#host".to_owned()], Span::Fixed(5 * MINUTE), 3, true, true)
        );
        let query = parse("bucket(1h, field=[a, b])", &Limits::default()).unwrap();
        let b = query.time_buckets().unwrap();
        assert_eq!((b.aggregate.group_by.len(), b.span, b.series_limit, b.limit_given, b.chart), (2, Span::Fixed(HOUR), 10, false, false));
        assert!(query.has_aggregate());
    }
}
