//! The web access log parser: Apache/NGINX combined format
//! (`%h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"`), the common
//! format being the same without the last two quoted fields. A request line
//! that is not `METHOD TARGET VERSION` (scanners send garbage) is kept whole
//! in `http.request`.

use crate::model::{Input, Parsed, Settings, Value};
use crate::time;

/// Settings this parser accepts (none).
pub const SETTINGS: &[(&str, &str, &str)] = &[];

/// The access log parser.
#[derive(Debug, Clone, Default)]
pub struct AccessParser;

impl AccessParser {
    /// Builds a parser; it takes no settings.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&[])?;
        Ok(AccessParser)
    }

    /// Parses one line.
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let mut out = Parsed::default();
        let mut rest = input.raw.trim_end_matches(['\r', '\n']);
        let word = |rest: &mut &str, what: &str| -> Result<String, String> {
            let end = rest
                .find(' ')
                .ok_or_else(|| format!("line ends before {what}"))?;
            let w = rest[..end].to_string();
            *rest = &rest[end + 1..];
            Ok(w)
        };
        let ip = word(&mut rest, "the identity field")?;
        out.push_text("client.ip", ip);
        for name in ["user.ident", "user.name"] {
            let w = word(&mut rest, "the time")?;
            if w != "-" {
                out.push_text(name, w);
            }
        }
        let after = rest
            .strip_prefix('[')
            .ok_or("expected `[` before the time")?;
        let close = after
            .find("] ")
            .ok_or("unterminated time: expected `] ` after it")?;
        out.timestamp_ns = Some(
            time::parse_clf(&after[..close])
                .ok_or_else(|| format!("bad time `{}`", &after[..close]))?,
        );
        rest = &after[close + 2..];
        let (request, r) = quoted(rest).ok_or("expected the quoted request line")?;
        rest = r;
        let mut parts = request.split(' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(target), Some(v), None)
                if !m.is_empty()
                    && m.bytes().all(|b| b.is_ascii_uppercase())
                    && v.starts_with("HTTP/") =>
            {
                out.push_text("http.method", m);
                out.push_text("url.original", target);
                out.push_text("http.version", &v[5..]);
            }
            _ => out.push_text("http.request", request.as_str()),
        }
        let mut tail = rest.trim_start().splitn(3, ' ');
        let status = tail
            .next()
            .filter(|s| !s.is_empty())
            .ok_or("line ends before the status")?;
        let status: i64 = status
            .parse()
            .map_err(|_| format!("bad status `{status}`"))?;
        out.push("http.status", Value::Int(status));
        let bytes = tail.next().ok_or("line ends before the size")?;
        out.push(
            "http.bytes",
            if bytes == "-" {
                Value::Int(0)
            } else {
                Value::Int(bytes.parse().map_err(|_| format!("bad size `{bytes}`"))?)
            },
        );
        if let Some(extra) = tail.next() {
            let (referer, r) = quoted(extra).ok_or("expected the quoted referer")?;
            if referer != "-" {
                out.push_text("http.referer", referer);
            }
            let (agent, r) = quoted(r.trim_start()).ok_or("expected the quoted user agent")?;
            if agent != "-" {
                out.push_text("http.user_agent", agent);
            }
            if !r.trim().is_empty() {
                out.push_text("extra", r.trim());
            }
        }
        Ok(out)
    }
}

/// Reads `"..."` (`\"` and `\\` unescaped, other escapes such as NGINX's `\x16` kept as written) at the start of `s`; returns the text and what follows.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()?.1 {
                e @ ('"' | '\\') => text.push(e),
                e => {
                    text.push('\\');
                    text.push(e);
                }
            },
            '"' => return Some((text, &body[i + 1..])),
            c => text.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_line() {
        let line = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;
        let out = AccessParser.parse(&Input::line(line, 0)).unwrap();
        assert_eq!(out.get("user.name"), Some(&Value::text("frank")));
        assert_eq!(out.get("http.status"), Some(&Value::Int(200)));
        assert_eq!(
            out.get("http.user_agent"),
            Some(&Value::text("Mozilla/4.08 [en] (Win98; I ;Nav)"))
        );
        assert_eq!(out.timestamp_ns, Some(971_211_336_000_000_000));
    }

    #[test]
    fn truncated_line_fails() {
        assert!(
            AccessParser
                .parse(&Input::line(
                    "127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] \"GET /",
                    0
                ))
                .is_err()
        );
    }
}
