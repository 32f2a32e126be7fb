//! The key=value / logfmt parser: `level=info msg="disk full" took=12ms ok`.
//! Quoted values keep their text, bare values are typed (int, float, text),
//! a bare key without `=` is `true` (logfmt). Time comes from `time`, `ts`,
//! `timestamp` or `t` when it is RFC 3339.

use crate::model::{Input, Parsed, Settings, Value, infer};
use crate::time;

/// Settings this parser accepts, with their description and default.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "delimiter",
        "the character between a key and its value",
        "=",
    ),
    (
        "typed",
        "turn bare numeric values into numbers (`true`/`false`)",
        "true",
    ),
];

/// A configured key=value parser.
#[derive(Debug, Clone)]
pub struct KvParser {
    delimiter: char,
    typed: bool,
}

impl Default for KvParser {
    fn default() -> Self {
        KvParser {
            delimiter: '=',
            typed: true,
        }
    }
}

impl KvParser {
    /// Builds a parser from settings; fails on unknown or invalid ones.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>())?;
        let mut p = KvParser {
            typed: settings.bool_or("typed", true)?,
            ..KvParser::default()
        };
        if let Some(d) = settings.get("delimiter") {
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c != '"' && !c.is_whitespace() => p.delimiter = c,
                _ => {
                    return Err(format!(
                        "setting `delimiter`: expected one non-space character other than `\"`, got `{d}`"
                    ));
                }
            }
        }
        Ok(p)
    }

    /// Parses one line.
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let mut out = Parsed::default();
        let mut rest = input.raw.trim();
        let mut pairs = 0;
        while !rest.is_empty() {
            let key_end = rest
                .find(|c: char| c == self.delimiter || c.is_whitespace())
                .unwrap_or(rest.len());
            let key = &rest[..key_end];
            if key.is_empty() {
                return Err(format!(
                    "empty key before `{}` at `{}`",
                    self.delimiter,
                    excerpt(rest)
                ));
            }
            if key.contains('"') {
                return Err(format!("quote inside key `{key}`"));
            }
            rest = &rest[key_end..];
            if rest.starts_with(self.delimiter) {
                rest = &rest[self.delimiter.len_utf8()..];
                let value = if let Some(quoted) = rest.strip_prefix('"') {
                    let (text, used) = unquote(quoted)
                        .ok_or_else(|| format!("unterminated quote in the value of `{key}`"))?;
                    rest = &quoted[used..];
                    Value::Text(text)
                } else {
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    let token = &rest[..end];
                    rest = &rest[end..];
                    if token.is_empty() {
                        Value::Text(String::new())
                    } else if self.typed {
                        infer(token)
                    } else {
                        Value::text(token)
                    }
                };
                pairs += 1;
                out.push(key, value);
            } else {
                out.push(key, Value::Bool(true));
            }
            rest = rest.trim_start();
        }
        if pairs == 0 {
            return Err(format!("no key{}value pairs found", self.delimiter));
        }
        for name in ["time", "ts", "timestamp", "t"] {
            if let Some(Value::Text(s)) = out.get(name)
                && let Some(ts) = time::parse_rfc3339(s)
            {
                out.timestamp_ns = Some(ts);
                break;
            }
        }
        Ok(out)
    }
}

/// Reads a quoted value after its opening quote: returns the unescaped text and
/// the bytes used, closing quote included.
fn unquote(s: &str) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((text, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => text.push('\n'),
                't' => text.push('\t'),
                other => text.push(other),
            },
            other => text.push(other),
        }
    }
    None
}

fn excerpt(s: &str) -> &str {
    s.char_indices().nth(20).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_line_with_quotes_flags_and_types() {
        let out = KvParser::default()
            .parse(&Input::line(
                r#"time=2024-01-02T03:04:05Z level=warn msg="disk \"sda\" full" pct=97.5 n=3 dry"#,
                0,
            ))
            .unwrap();
        assert_eq!(out.get("msg"), Some(&Value::text(r#"disk "sda" full"#)));
        assert_eq!(out.get("pct"), Some(&Value::Float(97.5)));
        assert_eq!(out.get("n"), Some(&Value::Int(3)));
        assert_eq!(out.get("dry"), Some(&Value::Bool(true)));
        assert!(out.timestamp_ns.is_some());
    }

    #[test]
    fn malformed_lines_fail() {
        let p = KvParser::default();
        assert!(
            p.parse(&Input::line("a=\"open", 0))
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            p.parse(&Input::line("just words", 0))
                .unwrap_err()
                .contains("no key=value")
        );
        assert!(
            p.parse(&Input::line("=x", 0))
                .unwrap_err()
                .contains("empty key")
        );
    }
}
