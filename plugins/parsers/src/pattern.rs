//! The configurable pattern parser: a regex with named groups; each group that
//! matched becomes a field. Optional settings pick the group holding the event
//! time and the groups to turn into numbers.

use crate::model::{Input, Parsed, Settings, Value, infer};
use crate::time;
use regex::Regex;

/// Settings this parser accepts, with their description and default.
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "pattern",
        "regex with named groups, e.g. `^(?P<level>\\w+) (?P<msg>.*)$` (required)",
        "",
    ),
    (
        "timestamp_group",
        "group holding the event time (RFC 3339, CLF or epoch number)",
        "",
    ),
    (
        "typed_groups",
        "comma-separated groups whose value becomes a number when it is one",
        "",
    ),
    (
        "size_limit",
        "maximum compiled regex size in bytes",
        "1048576",
    ),
];

/// A configured pattern parser.
#[derive(Debug, Clone)]
pub struct PatternParser {
    regex: Regex,
    names: Vec<(usize, String)>,
    timestamp_group: Option<String>,
    typed: Vec<String>,
}

impl PatternParser {
    /// Builds a parser from settings; fails on a missing or invalid pattern.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        settings.reject_unknown(&SETTINGS.iter().map(|s| s.0).collect::<Vec<_>>())?;
        let pattern = settings.get("pattern").filter(|p| !p.is_empty()).ok_or(
            "setting `pattern` is required: a regex with named groups such as `(?P<level>\\w+)`",
        )?;
        let size_limit = match settings.get("size_limit") {
            Some(s) => s.parse().map_err(|_| {
                format!("setting `size_limit`: expected a number of bytes, got `{s}`")
            })?,
            None => 1 << 20,
        };
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(size_limit)
            .build()
            .map_err(|e| format!("setting `pattern`: {e}"))?;
        let names: Vec<(usize, String)> = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
            .collect();
        if names.is_empty() {
            return Err(
                "setting `pattern`: has no named group; name them like `(?P<field>...)`".into(),
            );
        }
        let known = |g: &str| names.iter().any(|(_, n)| n == g);
        let timestamp_group = settings
            .get("timestamp_group")
            .filter(|g| !g.is_empty())
            .map(String::from);
        if let Some(g) = &timestamp_group
            && !known(g)
        {
            return Err(format!(
                "setting `timestamp_group`: `{g}` is not a named group of the pattern"
            ));
        }
        let typed: Vec<String> = settings
            .get("typed_groups")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        if let Some(g) = typed.iter().find(|g| !known(g)) {
            return Err(format!(
                "setting `typed_groups`: `{g}` is not a named group of the pattern"
            ));
        }
        Ok(PatternParser {
            regex,
            names,
            timestamp_group,
            typed,
        })
    }

    /// Parses one line.
    pub fn parse(&self, input: &Input<'_>) -> Result<Parsed, String> {
        let caps = self
            .regex
            .captures(input.raw)
            .ok_or("line does not match the pattern")?;
        let mut out = Parsed::default();
        for (i, name) in &self.names {
            let Some(m) = caps.get(*i) else { continue };
            let value = if self.typed.contains(name) {
                infer(m.as_str())
            } else {
                Value::text(m.as_str())
            };
            if self.timestamp_group.as_deref() == Some(name.as_str()) {
                let text = m.as_str();
                out.timestamp_ns = time::parse_rfc3339(text)
                    .or_else(|| time::parse_clf(text))
                    .or_else(|| text.parse::<i64>().ok().and_then(time::from_epoch_int))
                    .or_else(|| text.parse::<f64>().ok().and_then(time::from_epoch_number));
                if out.timestamp_ns.is_none() {
                    return Err(format!(
                        "group `{name}`: `{text}` is not a time this parser knows"
                    ));
                }
            }
            out.push(name.clone(), value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_groups_become_fields() {
        let p = PatternParser::new(&Settings::from_pairs(&[
            (
                "pattern",
                r"^(?P<ts>\S+) (?P<level>[A-Z]+) (?P<ms>\d+)ms(?: (?P<opt>x))?$",
            ),
            ("timestamp_group", "ts"),
            ("typed_groups", "ms"),
        ]))
        .unwrap();
        let out = p
            .parse(&Input::line("2024-01-02T03:04:05Z WARN 12ms", 0))
            .unwrap();
        assert_eq!(out.get("level"), Some(&Value::text("WARN")));
        assert_eq!(out.get("ms"), Some(&Value::Int(12)));
        assert_eq!(out.get("opt"), None);
        assert!(out.timestamp_ns.is_some());
        assert!(p.parse(&Input::line("nope", 0)).is_err());
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        assert!(
            PatternParser::new(&Settings::default())
                .unwrap_err()
                .contains("required")
        );
        assert!(
            PatternParser::new(&Settings::from_pairs(&[("pattern", "(")]))
                .unwrap_err()
                .contains("pattern")
        );
        assert!(
            PatternParser::new(&Settings::from_pairs(&[("pattern", "a+")]))
                .unwrap_err()
                .contains("no named group")
        );
    }
}
