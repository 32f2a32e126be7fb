//! Timestamp arithmetic without a date crate: civil date <-> days, RFC 3339,
//! month names, numeric epochs. All results are nanoseconds since the Unix
//! epoch, UTC. Never reads a clock: "now" always comes from the caller.

const NS_PER_SEC: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The UTC year of a nanosecond timestamp.
pub fn year_of(ns: i64) -> i64 {
    civil_from_days(ns.div_euclid(NS_PER_SEC * 86_400)).0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Nanoseconds of a validated civil date and time, UTC.
pub fn civil_to_ns(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second);
    secs.checked_mul(NS_PER_SEC)?.checked_add(i64::from(nanos))
}

/// Month number (1-12) of an English three-letter abbreviation.
pub fn month_from_abbrev(s: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    part.iter().try_fold(0u32, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Parses `±HH:MM`, `±HHMM` or `Z` into seconds east of UTC; returns the
/// offset and the number of bytes used.
fn zone(s: &[u8]) -> Option<(i64, usize)> {
    match s.first()? {
        b'Z' | b'z' => Some((0, 1)),
        sign @ (b'+' | b'-') => {
            let h = digits(s, 1, 2)?;
            let (m, used) = if s.get(3) == Some(&b':') {
                (digits(s, 4, 2)?, 6)
            } else {
                (digits(s, 3, 2)?, 5)
            };
            if h > 23 || m > 59 {
                return None;
            }
            let off = i64::from(h * 3600 + m * 60);
            Some((if *sign == b'-' { -off } else { off }, used))
        }
        _ => None,
    }
}

/// Parses RFC 3339 / ISO 8601 (`2024-03-01T12:34:56.789+02:00`, a space
/// instead of `T`, `Z`, or no zone meaning UTC). The whole string must match.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits(b, 0, 4)?);
    let (month, day) = (digits(b, 5, 2)?, digits(b, 8, 2)?);
    let (hour, minute, second) = (digits(b, 11, 2)?, digits(b, 14, 2)?, digits(b, 17, 2)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = if i == b.len() {
        0
    } else {
        let (off, used) = zone(&b[i..])?;
        if i + used != b.len() {
            return None;
        }
        off
    };
    civil_to_ns(year, month, day, hour, minute, second, nanos)?.checked_sub(offset * NS_PER_SEC)
}

/// Parses `10/Oct/2000:13:55:36 -0700` (Apache/NGINX `%t` without brackets).
pub fn parse_clf(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 26
        || b[2] != b'/'
        || b[6] != b'/'
        || b[11] != b':'
        || b[14] != b':'
        || b[17] != b':'
        || b[20] != b' '
    {
        return None;
    }
    let day = digits(b, 0, 2)?;
    let month = month_from_abbrev(s.get(3..6)?)?;
    let year = i64::from(digits(b, 7, 4)?);
    let (hour, minute, second) = (digits(b, 12, 2)?, digits(b, 15, 2)?, digits(b, 18, 2)?);
    let (offset, used) = zone(&b[21..])?;
    if used != 5 {
        return None;
    }
    civil_to_ns(year, month, day, hour, minute, second, 0)?.checked_sub(offset * NS_PER_SEC)
}

/// Interprets a number as an epoch timestamp, guessing the unit from its
/// magnitude: seconds, milliseconds, microseconds or nanoseconds.
pub fn from_epoch_number(n: f64) -> Option<i64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let ns = if n < 1e11 {
        n * 1e9
    } else if n < 1e14 {
        n * 1e6
    } else if n < 1e17 {
        n * 1e3
    } else {
        n
    };
    (ns < 9.2e18).then_some(ns as i64)
}

/// Like [`from_epoch_number`] for whole numbers, exact to the nanosecond.
pub fn from_epoch_int(n: i64) -> Option<i64> {
    match n {
        ..0 => None,
        0..100_000_000_000 => n.checked_mul(NS_PER_SEC),
        100_000_000_000..100_000_000_000_000 => n.checked_mul(1_000_000),
        100_000_000_000_000..100_000_000_000_000_000 => n.checked_mul(1_000),
        _ => Some(n),
    }
}

/// Formats nanoseconds as RFC 3339 UTC with nanosecond precision.
pub fn format_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NS_PER_SEC);
    let nanos = ns.rem_euclid(NS_PER_SEC);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_through_civil_arithmetic() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T12:00:00Z", 951_825_600 * NS_PER_SEC),
            ("2024-03-01T12:34:56.789+02:00", 1_709_289_296_789_000_000),
            ("2024-03-01 10:34:56.789", 1_709_289_296_789_000_000),
            ("2003-10-11T22:14:15.003Z", 1_065_910_455_003_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), Some(want), "{text}");
            assert_eq!(parse_rfc3339(&format_rfc3339(want)), Some(want), "{text}");
        }
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00+",
            "yesterday",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn clf_time_with_offset() {
        assert_eq!(
            parse_clf("10/Oct/2000:13:55:36 -0700"),
            Some(971_211_336 * NS_PER_SEC)
        );
        assert_eq!(parse_clf("10/Foo/2000:13:55:36 -0700"), None);
    }

    #[test]
    fn epoch_units_are_guessed_by_magnitude() {
        let s = 1_700_000_000i64;
        assert_eq!(from_epoch_number(s as f64), Some(s * NS_PER_SEC));
        assert_eq!(from_epoch_number((s * 1000) as f64), Some(s * NS_PER_SEC));
        assert_eq!(from_epoch_number(-1.0), None);
        assert_eq!(
            from_epoch_int(1_714_557_600_123),
            Some(1_714_557_600_123_000_000)
        );
        assert_eq!(from_epoch_int(-5), None);
    }
}
