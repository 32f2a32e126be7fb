//! A query's time range, as LogScale's search API takes it (`start`, `end`).
//!
//! A JSON number is absolute: milliseconds since the Unix epoch (UTC). A string is
//! relative to now (`"15m"`, `"24hours"`, `"2 days"`, with LogScale's unit words), or
//! `"now"`; a string of digits is taken as absolute milliseconds too. Omitted: `start` is
//! 24 hours ago and `end` is now, as in LogScale. Both ends are inclusive.

use serde_json::Value;

/// LogScale's default when `start` is omitted.
pub const DEFAULT_START: &str = "24hours";

/// `[start_ms, end_ms]`, both inclusive, `start_ms <= end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl TimeRange {
    pub fn contains(&self, timestamp_ms: i64) -> bool {
        self.start_ms <= timestamp_ms && timestamp_ms <= self.end_ms
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(pub String);

/// The range of a request's `start` and `end` (either may be absent or null) at `now_ms`.
pub fn resolve(start: Option<&Value>, end: Option<&Value>, now_ms: i64) -> Result<TimeRange, TimeError> {
    let start_ms = match start.filter(|v| !v.is_null()) {
        None => point(&Value::String(DEFAULT_START.into()), now_ms, "start")?,
        Some(v) => point(v, now_ms, "start")?,
    };
    let end_ms = match end.filter(|v| !v.is_null()) {
        None => now_ms,
        Some(v) => point(v, now_ms, "end")?,
    };
    if start_ms > end_ms {
        return Err(TimeError(format!("start ({start_ms} ms) is after end ({end_ms} ms); give start earlier than end")));
    }
    Ok(TimeRange { start_ms, end_ms })
}

fn point(value: &Value, now_ms: i64, which: &str) -> Result<i64, TimeError> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| TimeError(format!("{which}: {n} is not a time; give milliseconds since the epoch (a whole number) or a relative time like \"15m\""))),
        Value::String(text) => parse_text(text, now_ms).map_err(|reason| TimeError(format!("{which}: {reason}"))),
        other => Err(TimeError(format!("{which}: {other} is not a time; give a number of milliseconds or a string like \"24h\""))),
    }
}

/// A time written as text, as `start` and `end` take it (and `weir-core reparse`'s
/// `--from`/`--to`): `now`, milliseconds since the epoch as digits, or a relative time
/// (`15m`, `24hours`, `2 days`) before `now_ms`.
pub fn parse_text(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text} is too large to be a time"));
    }
    let span = relative_ms(text)?;
    Ok(now_ms.saturating_sub(span).max(0))
}

/// Milliseconds of a relative time like `15m`, `24 hours`, `7d`.
pub fn relative_ms(text: &str) -> Result<i64, String> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let unit = unit.trim_start();
    let Ok(number) = number.parse::<i64>() else {
        return Err(format!("{text:?} is not a relative time; write a number and a unit, like \"15m\", \"24hours\" or \"7d\""));
    };
    let unit_ms: i64 = match unit.to_ascii_lowercase().as_str() {
        "ms" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        "mon" | "month" | "months" => 30 * 86_400_000,
        "q" | "qtr" | "qtrs" | "quarter" | "quarters" => 90 * 86_400_000,
        "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400_000,
        "" => return Err(format!("{text:?} has no unit; write e.g. \"{number}m\" for minutes (a bare number must be a JSON number of milliseconds since the epoch)")),
        other => return Err(format!("unknown time unit {other:?} in {text:?}; use ms, s, m, h, d, w, mon, q or y (or their words)")),
    };
    number.checked_mul(unit_ms).ok_or_else(|| format!("{text:?} is too long a time span"))
}

pub use weir_proto::event::now_ms;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn relative_units_as_logscale_spells_them() {
        for (text, ms) in [
            ("30s", 30_000),
            ("15m", 900_000),
            ("15minutes", 900_000),
            ("15 minutes", 900_000),
            ("1h", 3_600_000),
            ("24h", 86_400_000),
            ("24hours", 86_400_000),
            ("7d", 604_800_000),
            ("2 days", 172_800_000),
            ("1w", 604_800_000),
            ("500ms", 500),
            ("1y", 31_536_000_000),
        ] {
            assert_eq!(relative_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn bad_relative_times_say_what_to_write() {
        for text in ["15", "m", "15 fortnights", "-5m", "1.5h", "15m30s"] {
            let error = relative_ms(text).unwrap_err();
            assert!(error.contains(text) || error.contains("unit"), "{text}: {error}");
        }
    }

    #[test]
    fn defaults_are_24_hours_ago_to_now() {
        let range = resolve(None, None, NOW).unwrap();
        assert_eq!(range, TimeRange { start_ms: NOW - 86_400_000, end_ms: NOW });
        let range = resolve(Some(&Value::Null), Some(&Value::Null), NOW).unwrap();
        assert_eq!(range.end_ms, NOW);
    }

    #[test]
    fn absolute_relative_and_mixed() {
        let range = resolve(Some(&json!(1_000)), Some(&json!(2_000)), NOW).unwrap();
        assert_eq!(range, TimeRange { start_ms: 1_000, end_ms: 2_000 });
        let range = resolve(Some(&json!("15m")), Some(&json!("now")), NOW).unwrap();
        assert_eq!(range, TimeRange { start_ms: NOW - 900_000, end_ms: NOW });
        let range = resolve(Some(&json!(1_000)), Some(&json!("2days")), NOW).unwrap();
        assert_eq!(range, TimeRange { start_ms: 1_000, end_ms: NOW - 172_800_000 });
        let range = resolve(Some(&json!("1000")), None, NOW).unwrap();
        assert_eq!(range.start_ms, 1_000);
        assert!(range.contains(1_000) && range.contains(NOW) && !range.contains(999));
    }

    #[test]
    fn bad_ranges_are_refused_with_the_reason() {
        let error = resolve(Some(&json!(2_000)), Some(&json!(1_000)), NOW).unwrap_err();
        assert!(error.0.contains("after end"), "{error}");
        let error = resolve(Some(&json!(-5)), None, NOW).unwrap_err();
        assert!(error.0.starts_with("start:"), "{error}");
        let error = resolve(Some(&json!(1.5)), None, NOW).unwrap_err();
        assert!(error.0.contains("milliseconds"), "{error}");
        let error = resolve(None, Some(&json!(true)), NOW).unwrap_err();
        assert!(error.0.starts_with("end:"), "{error}");
        let error = resolve(Some(&json!("yesterday")), None, NOW).unwrap_err();
        assert!(error.0.contains("relative time"), "{error}");
    }
}
