//! The text steps' work on one event: `format()`'s printf, `formatTime()`'s strftime (UTC),
//! `parseJson()`, `kvParse()` and `split()`. Each leaves an event it cannot work on as it
//! is (no field, not a number, not JSON), as LogScale does.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::lang::TimeUnit;
use crate::render::{Event, field_text, flatten};

/// The longest value a step writes (LogScale's largest event); a longer one is not
/// written, so one event cannot make a step allocate without bound.
pub(crate) const MAX_VALUE_BYTES: usize = 1 << 20;

/// `replace()`: every match of `regex` in `text` replaced by `with` (`$1`, `${name}`);
/// `None` when the result would pass [`MAX_VALUE_BYTES`].
pub(crate) fn replace(regex: &Regex, text: &str, with: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for captures in regex.captures_iter(text) {
        let whole = captures.get(0).expect("group 0 is the match");
        out.push_str(&text[last..whole.start()]);
        captures.expand(with, &mut out);
        last = whole.end();
        if out.len() > MAX_VALUE_BYTES {
            return None;
        }
    }
    out.push_str(&text[last..]);
    (out.len() <= MAX_VALUE_BYTES).then_some(out)
}

/// Widths and precisions past this are cut to it (the parser refuses them already).
const MAX_WIDTH: usize = 1000;

/// One `%[-0][width][.precision]conv` of a format string.
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    conversion: char,
}

fn pad(text: String, spec: &Spec, numeric: bool) -> String {
    let len = text.chars().count();
    if len >= spec.width {
        return text;
    }
    let fill = spec.width - len;
    if spec.left {
        format!("{text}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        let (sign, digits) = if let Some(rest) = text.strip_prefix('-') { ("-", rest) } else { ("", text.as_str()) };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

fn integer(value: &str) -> Option<i64> {
    let value = value.trim();
    value.parse::<i64>().ok().or_else(|| value.parse::<f64>().ok().filter(|n| n.fract() == 0.0 && n.abs() < 9.0e15).map(|n| n as i64))
}

/// Java's `%e`: `1.500000e+03`.
fn scientific(n: f64, precision: usize) -> String {
    let text = format!("{n:.precision$e}");
    let (mantissa, exponent) = text.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("an integer exponent");
    format!("{mantissa}e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
}

/// `format()`: `None` when a value does not fit its conversion (text for `%d`), or the
/// result would pass [`MAX_VALUE_BYTES`].
pub(crate) fn printf(format: &str, values: &[String]) -> Option<String> {
    let mut out = String::new();
    let mut values = values.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec { left: false, zero: false, width: 0, precision: None, conversion: 's' };
        while let Some(&flag @ ('-' | '0')) = chars.peek() {
            if flag == '-' {
                spec.left = true;
            } else {
                spec.zero = true;
            }
            chars.next();
        }
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            spec.width = spec.width.saturating_mul(10).saturating_add(d as usize).min(MAX_WIDTH);
            chars.next();
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut precision = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                precision = (precision * 10 + d as usize).min(MAX_WIDTH);
                chars.next();
            }
            spec.precision = Some(precision);
        }
        spec.conversion = chars.next()?;
        if spec.conversion == '%' {
            out.push('%');
            continue;
        }
        let value = values.next()?;
        let text = match spec.conversion {
            's' | 'S' => {
                let mut text = match spec.precision {
                    Some(p) => value.chars().take(p).collect(),
                    None => value.clone(),
                };
                if spec.conversion == 'S' {
                    text = text.to_uppercase();
                }
                pad(text, &spec, false)
            }
            'd' | 'i' => pad(integer(value)?.to_string(), &spec, true),
            'x' => pad(format!("{:x}", integer(value)?), &spec, true),
            'X' => pad(format!("{:X}", integer(value)?), &spec, true),
            'f' => {
                let n = value.trim().parse::<f64>().ok()?;
                pad(format!("{n:.*}", spec.precision.unwrap_or(6)), &spec, true)
            }
            'e' => pad(scientific(value.trim().parse::<f64>().ok()?, spec.precision.unwrap_or(6)), &spec, true),
            _ => return None,
        };
        out.push_str(&text);
        if out.len() > MAX_VALUE_BYTES {
            return None;
        }
    }
    Some(out)
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// `formatTime()` in UTC: `None` when the value is not a number.
pub(crate) fn format_time(format: &str, value: &str, unit: TimeUnit) -> Option<String> {
    let n = value.trim().parse::<i64>().ok().or_else(|| value.trim().parse::<f64>().ok().filter(|n| n.is_finite() && n.abs() < 9.0e15).map(|n| n as i64))?;
    let ms = match unit {
        TimeUnit::Milliseconds => n,
        TimeUnit::Seconds => n.checked_mul(1000)?,
        TimeUnit::Auto if n <= 100_000_000_000 => n.checked_mul(1000)?,
        TimeUnit::Auto => n,
    };
    let days = ms.div_euclid(86_400_000);
    let of_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second, millis) = (of_day / 3_600_000, of_day / 60_000 % 60, of_day / 1000 % 60, of_day % 1000);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let month_name = MONTHS[month as usize - 1];
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let part = match chars.next()? {
            'Y' => format!("{year:04}"),
            'y' => format!("{:02}", year.rem_euclid(100)),
            'm' => format!("{month:02}"),
            'd' => format!("{day:02}"),
            'e' => day.to_string(),
            'H' => format!("{hour:02}"),
            'I' => format!("{hour12:02}"),
            'k' => hour.to_string(),
            'l' => hour12.to_string(),
            'M' => format!("{minute:02}"),
            'S' => format!("{second:02}"),
            'L' => format!("{millis:03}"),
            'N' => format!("{:09}", millis * 1_000_000),
            'p' => (if hour < 12 { "am" } else { "pm" }).to_owned(),
            'j' => format!("{day_of_year:03}"),
            'a' => weekday[..3].to_owned(),
            'A' => weekday.to_owned(),
            'b' | 'h' => month_name[..3].to_owned(),
            'B' => month_name.to_owned(),
            'Z' => "UTC".to_owned(),
            'z' => "+0000".to_owned(),
            's' => ms.div_euclid(1000).to_string(),
            'Q' => ms.to_string(),
            'F' => format!("{year:04}-{month:02}-{day:02}"),
            'T' => format!("{hour:02}:{minute:02}:{second:02}"),
            'D' => format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'R' => format!("{hour:02}:{minute:02}"),
            '%' => "%".to_owned(),
            _ => return None,
        };
        out.push_str(&part);
    }
    Some(out)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `parseJson()`: a JSON object in `field` becomes fields named `prefix` + their
/// flattened names.
pub(crate) fn parse_json(event: &mut Event, field: &str, prefix: &str) {
    let Some(text) = field_text(event, field) else { return };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(&text) else { return };
    for (key, value) in &object {
        flatten(format!("{prefix}{key}"), value, event);
    }
}

/// `kvParse()`: each `key=value` (value bare, `"double"` or `'single'` quoted) becomes a
/// field, not replacing one the event has unless `overwrite`.
pub(crate) fn kv_parse(event: &mut Event, field: &str, pairs: &Regex, prefix: &str, overwrite: bool) {
    let Some(text) = field_text(event, field).map(|t| t.into_owned()) else { return };
    for captures in pairs.captures_iter(&text) {
        let key = format!("{prefix}{}", &captures[1]);
        let value = match (captures.get(2), captures.get(3), captures.get(4)) {
            (Some(quoted), _, _) => quoted.as_str().replace("\\\"", "\"").replace("\\\\", "\\"),
            (_, Some(single), _) => single.as_str().to_owned(),
            (_, _, Some(bare)) => bare.as_str().to_owned(),
            _ => continue,
        };
        if overwrite || !event.contains_key(&key) {
            event.insert(key, Value::String(value));
        }
    }
}

/// Most bytes the events `split()` makes from one event may add up to.
pub(crate) const MAX_SPLIT_BYTES: usize = 64 << 20;

/// `split()`: the event once per element of the array flattened as `field[i]...`, the
/// element's fields under `field`, its position in `_index`; an event without the array
/// passes as it is. Refused (with the reason) when the copies would pass
/// [`MAX_SPLIT_BYTES`].
pub(crate) fn split(mut event: Event, field: &str) -> Result<Vec<Event>, String> {
    let prefix = format!("{field}[");
    let keys: Vec<String> = event.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
    let mut elements: BTreeMap<usize, Vec<(String, Value)>> = BTreeMap::new();
    for key in keys {
        let rest = &key[prefix.len()..];
        let Some((index, suffix)) = rest.split_once(']') else { continue };
        let Ok(index) = index.parse::<usize>() else { continue };
        let suffix = suffix.to_owned();
        let value = event.remove(&key).expect("listed above");
        elements.entry(index).or_default().push((suffix, value));
    }
    if elements.is_empty() {
        return Ok(vec![event]);
    }
    let base_bytes: usize = event.iter().map(|(k, v)| k.len() + v.as_str().map_or(16, str::len)).sum();
    let total = base_bytes.saturating_mul(elements.len());
    if total > MAX_SPLIT_BYTES {
        return Err(format!(
            "split({field}) would copy a {base_bytes}-byte event {} times (over {} MiB); drop([...]) the large fields before split()",
            elements.len(),
            MAX_SPLIT_BYTES >> 20
        ));
    }
    Ok(elements
        .into_iter()
        .map(|(index, fields)| {
            let mut part = event.clone();
            for (suffix, value) in fields {
                part.insert(format!("{field}{suffix}"), value);
            }
            part.insert("_index".into(), Value::String(index.to_string()));
            part
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-719_468, -1, 0, 59, 365, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
