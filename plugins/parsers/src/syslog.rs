//! The syslog parser: RFC 5424 (`<165>1 2003-10-11T22:14:15.003Z host app
//! procid msgid [sd] msg`) and RFC 3164 / BSD (`<34>Oct 11 22:14:15 host
//! tag[pid]: msg`, PRI optional as in files). RFC 3164 has no year: it is the
//! ingest time's year, or the one before when that would put the event more
//! than two days in the future.

use crate::model::{Input, Parsed, Settings, Value};
use crate::time;

/// Settings this parser accepts, with their description and default.
pub const SETTINGS: &[(&str, &str, &str)] = &[("format", "`auto`, `rfc5424` or `rfc3164`", "auto")];

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Which syslog dialect to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Auto,
    Rfc5424,
    Rfc3164,
}

/// A configured syslog parser.
#[derive(Debug, Clone, Default)]
pub struct SyslogParser {
    format: Format,
}

impl SyslogParser {
    /// Builds a parser from settings; fails on unknown or invalid ones.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&["format"])?;
        let format = match settings.get("format").unwrap_or("auto") {
            "auto" => Format::Auto,
            "rfc5424" => Format::Rfc5424,
            "rfc3164" => Format::Rfc3164,
            other => {
                return Err(format!(
                    "setting `format`: expected `auto`, `rfc5424` or `rfc3164`, got `{other}`"
                ));
            }
        };
        Ok(SyslogParser { format })
    }

    /// Parses one line.
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let line = input.raw.trim_end_matches(['\r', '\n']);
        let mut out = Parsed::default();
        let rest = match line.strip_prefix('<') {
            Some(after) => {
                let end = after
                    .find('>')
                    .filter(|&e| (1..=3).contains(&e))
                    .ok_or("malformed PRI: expected `<0>` to `<191>`")?;
                let pri: u32 = after[..end]
                    .parse()
                    .map_err(|_| "malformed PRI: not a number")?;
                if pri > 191 {
                    return Err(format!("malformed PRI: {pri} is above 191"));
                }
                out.push("syslog.facility", Value::Int(i64::from(pri / 8)));
                out.push("syslog.severity", Value::Int(i64::from(pri % 8)));
                out.push_text("syslog.severity_name", SEVERITIES[(pri % 8) as usize]);
                &after[end + 1..]
            }
            None if self.format == Format::Rfc5424 => {
                return Err("RFC 5424 message without PRI".into());
            }
            None => line,
        };
        let is_5424 =
            rest.len() > 2 && rest.as_bytes()[0].is_ascii_digit() && rest[1..].starts_with(' ');
        match self.format {
            Format::Rfc5424 if !is_5424 => Err("expected RFC 5424 version `1` after PRI".into()),
            Format::Rfc5424 | Format::Auto if is_5424 => parse_5424(rest, out),
            _ => parse_3164(rest, input.ingest_time_ns, out),
        }
    }
}

fn next_token<'a>(rest: &mut &'a str, what: &str) -> Result<&'a str, String> {
    let s = *rest;
    if s.is_empty() {
        return Err(format!("line ends before {what}"));
    }
    let end = s.find(' ').unwrap_or(s.len());
    *rest = s.get(end + 1..).unwrap_or("");
    Ok(&s[..end])
}

fn parse_5424(mut rest: &str, mut out: Parsed) -> Result<Parsed, String> {
    let version = next_token(&mut rest, "VERSION")?;
    out.push(
        "syslog.version",
        Value::Int(
            version
                .parse()
                .map_err(|_| format!("bad VERSION `{version}`"))?,
        ),
    );
    let ts = next_token(&mut rest, "TIMESTAMP")?;
    if ts != "-" {
        out.timestamp_ns =
            Some(time::parse_rfc3339(ts).ok_or_else(|| format!("bad RFC 5424 TIMESTAMP `{ts}`"))?);
    }
    for (name, what) in [
        ("host", "HOSTNAME"),
        ("app", "APP-NAME"),
        ("pid", "PROCID"),
        ("msgid", "MSGID"),
    ] {
        let tok = next_token(&mut rest, what)?;
        if tok != "-" {
            let value = if name == "pid" {
                crate::model::infer(tok)
            } else {
                Value::text(tok)
            };
            out.push(name, value);
        }
    }
    if rest.is_empty() {
        return Err("line ends before STRUCTURED-DATA".into());
    }
    if let Some(r) = rest.strip_prefix('-') {
        rest = r;
    } else {
        while rest.starts_with('[') {
            rest = structured_element(&rest[1..], &mut out)?;
        }
        if !rest.is_empty() && !rest.starts_with(' ') {
            return Err("malformed STRUCTURED-DATA: expected `[` or a space".into());
        }
    }
    let msg = rest.strip_prefix(' ').unwrap_or(rest);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    if !msg.is_empty() {
        out.push_text("message", msg);
    }
    Ok(out)
}

/// Parses one `id param="value" ...]` element (after its `[`), returning what follows it.
fn structured_element<'a>(s: &'a str, out: &mut Parsed) -> Result<&'a str, String> {
    let id_end = s
        .find([' ', ']'])
        .ok_or("unterminated STRUCTURED-DATA element")?;
    let id = &s[..id_end];
    if id.is_empty() {
        return Err("STRUCTURED-DATA element without an SD-ID".into());
    }
    let mut rest = &s[id_end..];
    loop {
        rest = rest.trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix(']') {
            return Ok(after);
        }
        let eq = rest
            .find("=\"")
            .ok_or_else(|| format!("malformed SD-PARAM in `{id}`: expected name=\"value\""))?;
        let name = &rest[..eq];
        if name.is_empty() || name.contains([' ', ']']) {
            return Err(format!("malformed SD-PARAM name in `{id}`"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut closed = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\' | ']'))) => value.push(e),
                    Some((_, e)) => {
                        value.push('\\');
                        value.push(e)
                    }
                    None => break,
                },
                '"' => {
                    closed = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let used = closed.ok_or_else(|| format!("unterminated SD-PARAM value in `{id}`"))?;
        out.push(format!("sd.{id}.{name}"), Value::Text(value));
        rest = &rest[used..];
    }
}

fn parse_3164(rest: &str, ingest_time_ns: i64, mut out: Parsed) -> Result<Parsed, String> {
    let mut rest = rest;
    // Timestamp: "Mmm dd hh:mm:ss" (day space-padded) or an RFC 3339 token.
    let first = rest.split(' ').next().unwrap_or("");
    if let Some(ts) = time::parse_rfc3339(first) {
        out.timestamp_ns = Some(ts);
        rest = &rest[first.len()..];
    } else {
        let b = rest.as_bytes();
        if b.len() < 15 || b[3] != b' ' || b[6] != b' ' || b[9] != b':' || b[12] != b':' {
            return Err("expected an RFC 3164 timestamp like `Oct 11 22:14:15`".into());
        }
        let month = time::month_from_abbrev(&rest[..3])
            .ok_or_else(|| format!("bad month `{}`", &rest[..3]))?;
        let num = |s: &str| {
            s.trim_start()
                .parse::<u32>()
                .map_err(|_| format!("bad number `{s}` in timestamp"))
        };
        let (day, hour, min, sec) = (
            num(&rest[4..6])?,
            num(&rest[7..9])?,
            num(&rest[10..12])?,
            num(&rest[13..15])?,
        );
        let year = time::year_of(ingest_time_ns);
        let at = |y| time::civil_to_ns(y, month, day, hour, min, sec, 0);
        let mut ts = at(year).ok_or("invalid date in timestamp")?;
        if ts > ingest_time_ns.saturating_add(2 * 86_400 * 1_000_000_000) {
            ts = at(year - 1).ok_or("invalid date in timestamp")?;
        }
        out.timestamp_ns = Some(ts);
        rest = &rest[15..];
    }
    let mut rest = rest
        .strip_prefix(' ')
        .ok_or("expected a space and a hostname after the timestamp")?;
    let host = next_token(&mut rest, "HOSTNAME")?;
    out.push_text("host", host);
    // TAG[PID]: message; the tag is optional.
    let tag_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
        .unwrap_or(rest.len());
    let (tag, after) = rest.split_at(tag_end);
    let mut msg = rest;
    if !tag.is_empty() {
        if let Some(p) = after.strip_prefix('[') {
            if let Some((pid, tail)) = p.split_once("]:") {
                out.push_text("app", tag);
                out.push("pid", crate::model::infer(pid));
                msg = tail;
            }
        } else if let Some(tail) = after.strip_prefix(':') {
            out.push_text("app", tag);
            msg = tail;
        }
    }
    let msg = msg.strip_prefix(' ').unwrap_or(msg);
    out.push_text("message", msg);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data() {
        let line = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appli\"cation"][x@1 a="b"] An application event"#;
        let out = SyslogParser::default()
            .parse(&Input::line(line, 0))
            .unwrap();
        assert_eq!(out.get("syslog.facility"), Some(&Value::Int(20)));
        assert_eq!(out.get("syslog.severity"), Some(&Value::Int(5)));
        assert_eq!(
            out.get("sd.exampleSDID@32473.eventSource"),
            Some(&Value::text("Appli\"cation"))
        );
        assert_eq!(out.get("sd.x@1.a"), Some(&Value::text("b")));
        assert_eq!(
            out.get("message"),
            Some(&Value::text("An application event"))
        );
        assert_eq!(out.get("pid"), None);
    }

    #[test]
    fn rfc3164_year_comes_from_ingest_time() {
        let ingest = time::parse_rfc3339("2024-01-01T00:10:00Z").unwrap();
        let out = SyslogParser::default()
            .parse(&Input::line(
                "<34>Dec 31 23:59:59 host1 su[42]: failed",
                ingest,
            ))
            .unwrap();
        assert_eq!(
            out.timestamp_ns,
            time::parse_rfc3339("2023-12-31T23:59:59Z")
        );
        assert_eq!(out.get("pid"), Some(&Value::Int(42)));
    }
}
