//! The query language: a documented subset of LogScale's (README "Reading events back").
//!
//! A hand-written recursive-descent parser following LogScale's published grammar
//! (`library.humio.com/lql-grammar`): pipeline steps separated by `|`; a filter step is
//! `LogicalAnd := LogicalOr ('and'? LogicalOr)*`, `LogicalOr := Unary ('or' Unary)*`,
//! `Unary := ('not' | '!')* Primary`, so, as in LogScale and unlike most languages, `or`
//! binds tighter than `and` (`a and b or c` is `a and (b or c)`). Function steps are
//! `head`, `tail`, `count`, `groupBy` and `sort`; anything else is a [`ParseError`]
//! naming the unsupported part, which the HTTP layer answers with 400.
//!
//! Must never: touch events or files. Regexes are compiled here (with a size limit) so a
//! bad one is a 400 before any segment is read.

mod lex;

use lex::{Tok, Token};
use regex::{Regex, RegexBuilder};

/// Defaults and caps as LogScale has them, except where the config lowers them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `head`, `tail` and `sort` limit (and what `limit=max` means).
    pub max_rows: usize,
    /// Largest `groupBy` limit (and what `limit=max` means); also its default when
    /// LogScale's default (20,000) is larger.
    pub max_groups: usize,
    /// Compiled size limit of each regex, in bytes.
    pub regex_size_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_rows: 10_000, max_groups: DEFAULT_GROUP_LIMIT, regex_size_limit: 1 << 20 }
    }
}

/// LogScale's default for `head()`, `tail()` and `sort()`.
pub const DEFAULT_ROW_LIMIT: usize = 200;
/// LogScale's default for `groupBy(limit=)`.
pub const DEFAULT_GROUP_LIMIT: usize = 20_000;

/// A parsed query: the steps in pipeline order.
#[derive(Debug, Clone)]
pub struct Query {
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub enum Step {
    Filter(Filter),
    Head(usize),
    Tail(usize),
    Count,
    GroupBy { fields: Vec<String>, limit: usize },
    Sort { field: String, order: Order, limit: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone)]
pub enum Filter {
    /// The empty query or `*`.
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// Free text: matched against `@rawstring`, unanchored, case-insensitive.
    FreeText(Matcher),
    /// `field=pattern` (`negate` for `!=`: also true when the field is absent).
    Field { name: String, matcher: Matcher, negate: bool },
    /// `field < 3` and friends: true only if the field is present and a number.
    Compare { name: String, op: CmpOp, value: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// How a value is matched.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `*`: any value, so the field must only be present.
    Present,
    /// The whole value, case-sensitive.
    Exact(String),
    /// A compiled wildcard pattern or `/regex/`.
    Regex(Regex),
}

impl Matcher {
    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Matcher::Present => true,
            Matcher::Exact(expected) => value == expected,
            Matcher::Regex(regex) => regex.is_match(value),
        }
    }
}

/// A query the subset cannot run: says what and where (byte position), for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
}

impl ParseError {
    fn at(pos: usize, message: impl AsRef<str>) -> ParseError {
        ParseError { message: format!("{} (at character {})", message.as_ref(), pos + 1) }
    }
}

const SUPPORTED_FUNCTIONS: &str = "head(), tail(), count(), groupBy() and sort()";

/// Parses `input` into a [`Query`], or says which part is not supported.
pub fn parse(input: &str, limits: &Limits) -> Result<Query, ParseError> {
    let tokens = lex::tokenize(input)?;
    let mut parser = Parser { tokens, i: 0, limits, end: input.len() };
    let mut steps = Vec::new();
    loop {
        steps.push(parser.step()?);
        match parser.peek() {
            None => break,
            Some(Tok::Pipe) => {
                parser.i += 1;
            }
            Some(other) => {
                let other = other.describe();
                return Err(parser.error(format!("unexpected {other}")));
            }
        }
    }
    Ok(Query { steps })
}

struct Parser<'a> {
    tokens: Vec<Token>,
    i: usize,
    limits: &'a Limits,
    end: usize,
}

/// One argument of a function call: `name=value` or a positional value.
#[derive(Debug)]
struct Arg {
    name: Option<String>,
    value: ArgValue,
    pos: usize,
}

#[derive(Debug)]
enum ArgValue {
    Scalar(String),
    List(Vec<ArgValue>),
    Call(String, Vec<Arg>),
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.i).map(|t| &t.tok)
    }

    fn peek_at(&self, offset: usize) -> Option<&Token> {
        self.tokens.get(self.i + offset)
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.i).map_or(self.end, |t| t.pos)
    }

    fn error(&self, message: impl AsRef<str>) -> ParseError {
        ParseError::at(self.pos(), message)
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            Some(t) if *t == tok => {
                self.i += 1;
                Ok(())
            }
            Some(t) => {
                let t = t.describe();
                Err(self.error(format!("expected {what}, found {t}")))
            }
            None => Err(self.error(format!("expected {what}, found the end of the query"))),
        }
    }

    /// Whether the next tokens are `name(` with no space between: a function call.
    fn at_call(&self) -> bool {
        matches!(
            (self.peek_at(0), self.peek_at(1)),
            (Some(Token { tok: Tok::Word(_), .. }), Some(Token { tok: Tok::LParen, space_before: false, .. }))
        )
    }

    fn step(&mut self) -> Result<Step, ParseError> {
        match self.peek() {
            None | Some(Tok::Pipe) => {
                if self.i == 0 && self.peek().is_none() {
                    return Ok(Step::Filter(Filter::All));
                }
                Err(self.error("empty pipeline step (nothing between two `|` or after the last)"))
            }
            _ if self.at_call() => {
                let Some(Tok::Word(name)) = self.peek().cloned() else { unreachable!("at_call checked a word") };
                let pos = self.pos();
                self.i += 2;
                let args = self.args()?;
                self.function(&name, args, pos)
            }
            _ => Ok(Step::Filter(self.filter()?)),
        }
    }

    // ---- filters ----

    fn filter(&mut self) -> Result<Filter, ParseError> {
        let mut terms = vec![self.or_filter()?];
        loop {
            match self.peek() {
                None | Some(Tok::Pipe) | Some(Tok::RParen) => break,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("and") => {
                    self.i += 1;
                    terms.push(self.or_filter()?);
                }
                _ => terms.push(self.or_filter()?),
            }
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Filter::And(terms) })
    }

    fn or_filter(&mut self) -> Result<Filter, ParseError> {
        let mut terms = vec![self.unary()?];
        while matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("or")) {
            self.i += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Filter::Or(terms) })
    }

    fn unary(&mut self) -> Result<Filter, ParseError> {
        let mut negations = 0;
        loop {
            match self.peek() {
                Some(Tok::Bang) => negations += 1,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => negations += 1,
                _ => break,
            }
            self.i += 1;
        }
        let mut filter = self.primary()?;
        for _ in 0..negations {
            filter = Filter::Not(Box::new(filter));
        }
        Ok(filter)
    }

    fn primary(&mut self) -> Result<Filter, ParseError> {
        let pos = self.pos();
        let Some(token) = self.peek().cloned() else {
            return Err(self.error("expected a filter, found the end of the query"));
        };
        if self.at_call() {
            let Tok::Word(name) = token else { unreachable!("at_call checked a word") };
            return Err(if is_supported_function(&name) {
                self.error(format!("{name}() must be a pipeline step of its own, after a `|`"))
            } else {
                self.error(format!("function {name}() is not supported; the query subset has {SUPPORTED_FUNCTIONS}"))
            });
        }
        match token {
            Tok::LParen => {
                self.i += 1;
                if matches!(self.peek(), Some(Tok::RParen)) {
                    return Err(self.error("empty parentheses"));
                }
                let inner = self.filter()?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Word(_) | Tok::Str(_) if self.at_comparison() => self.field_filter(),
            Tok::Word(word) => {
                self.i += 1;
                if word == "*" {
                    return Ok(Filter::All);
                }
                if ["and", "or"].iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    return Err(ParseError::at(pos, format!("`{word}` needs a filter on each side")));
                }
                Ok(Filter::FreeText(self.free_text(&word)?))
            }
            Tok::Str(text) => {
                self.i += 1;
                Ok(Filter::FreeText(self.free_text(&text)?))
            }
            Tok::Regex { pattern, flags } => {
                self.i += 1;
                Ok(Filter::FreeText(Matcher::Regex(self.regex(&pattern, &flags, pos)?)))
            }
            Tok::Other(op) if op == ":=" => Err(self.error("field assignment `:=` is not supported (only filters and head, tail, count, groupBy, sort)")),
            Tok::Other(op) if op == "==" => Err(self.error("`==` is not supported in a filter; use `=`")),
            Tok::Other(op) if op == "{" || op == "}" || op == ";" => {
                Err(self.error(format!("`{op}` (case, match or subquery syntax) is not supported")))
            }
            other => {
                let other = other.describe();
                Err(self.error(format!("unexpected {other}; expected a filter")))
            }
        }
    }

    /// Whether the token after the current one makes it a field comparison (including
    /// the unsupported `:=` and `==`, to name them).
    fn at_comparison(&self) -> bool {
        match self.peek_at(1).map(|t| &t.tok) {
            Some(Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge) => true,
            Some(Tok::Other(o)) => o == ":=" || o == "==",
            _ => false,
        }
    }

    fn field_filter(&mut self) -> Result<Filter, ParseError> {
        let name = match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => w,
            _ => unreachable!("at_comparison checked a name"),
        };
        self.i += 1;
        let op_pos = self.pos();
        let op = self.peek().cloned().expect("at_comparison checked an operator");
        self.i += 1;
        match &op {
            Tok::Other(o) if o == ":=" => {
                return Err(ParseError::at(op_pos, "field assignment `:=` is not supported (only filters and head, tail, count, groupBy, sort)"));
            }
            Tok::Other(o) if o == "==" => {
                return Err(ParseError::at(op_pos, format!("`==` is not supported in a filter; use `{name}=...`")));
            }
            _ => {}
        }
        let value_pos = self.pos();
        let value = self.peek().cloned();
        let value = match value {
            Some(Tok::Word(_) | Tok::Str(_) | Tok::Regex { .. }) => {
                self.i += 1;
                value.expect("matched")
            }
            Some(other) => {
                let other = other.describe();
                return Err(ParseError::at(value_pos, format!("expected a value after `{name}` and its operator, found {other}")));
            }
            None => return Err(ParseError::at(value_pos, format!("expected a value after `{name}` and its operator, found the end of the query"))),
        };
        let cmp = match op {
            Tok::Lt => Some(CmpOp::Lt),
            Tok::Le => Some(CmpOp::Le),
            Tok::Gt => Some(CmpOp::Gt),
            Tok::Ge => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = cmp {
            let number = match &value {
                Tok::Word(w) | Tok::Str(w) => w.parse::<f64>().ok().filter(|n| n.is_finite()),
                _ => None,
            };
            let Some(number) = number else {
                return Err(ParseError::at(value_pos, format!("`{name}` can only be compared with <, <=, >, >= to a number, not {}", value.describe())));
            };
            return Ok(Filter::Compare { name, op, value: number });
        }
        let matcher = match value {
            Tok::Word(w) | Tok::Str(w) => self.anchored(&w, value_pos)?,
            Tok::Regex { pattern, flags } => Matcher::Regex(self.regex(&pattern, &flags, value_pos)?),
            _ => unreachable!("value kinds checked above"),
        };
        Ok(Filter::Field { name, matcher, negate: op == Tok::Ne })
    }

    /// A `field=value` pattern: the whole value, case-sensitive, `*` matching anything.
    fn anchored(&self, pattern: &str, pos: usize) -> Result<Matcher, ParseError> {
        if pattern.chars().all(|c| c == '*') && !pattern.is_empty() {
            return Ok(Matcher::Present);
        }
        if !pattern.contains('*') {
            return Ok(Matcher::Exact(pattern.to_owned()));
        }
        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
        self.build(&format!("^(?s:{})$", body.join(".*")), pos)
    }

    /// Free text: anywhere in `@rawstring`, case-insensitive, `*` matching anything.
    fn free_text(&self, pattern: &str) -> Result<Matcher, ParseError> {
        let pos = self.tokens.get(self.i.saturating_sub(1)).map_or(0, |t| t.pos);
        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
        self.build(&format!("(?is:{})", body.join(".*")), pos)
    }

    fn regex(&self, pattern: &str, flags: &str, pos: usize) -> Result<Regex, ParseError> {
        let mut prefix = String::new();
        for flag in flags.chars() {
            match flag {
                'i' => prefix.push('i'),
                'm' => prefix.push('m'),
                // LogScale's `d`: `.` also matches a newline.
                'd' => prefix.push('s'),
                other => return Err(ParseError::at(pos, format!("regex flag `{other}` is not supported (only i, m and d)"))),
            }
        }
        let full = if prefix.is_empty() { pattern.to_owned() } else { format!("(?{prefix}){pattern}") };
        match self.build(&full, pos)? {
            Matcher::Regex(regex) => Ok(regex),
            _ => unreachable!("build makes a regex"),
        }
    }

    fn build(&self, pattern: &str, pos: usize) -> Result<Matcher, ParseError> {
        RegexBuilder::new(pattern)
            .size_limit(self.limits.regex_size_limit)
            .build()
            .map(Matcher::Regex)
            .map_err(|e| ParseError::at(pos, format!("bad regex /{pattern}/: {}", first_line(&e.to_string()))))
    }

    // ---- functions ----

    /// The arguments after `(`, up to and including `)`.
    fn args(&mut self) -> Result<Vec<Arg>, ParseError> {
        let mut args = Vec::new();
        if matches!(self.peek(), Some(Tok::RParen)) {
            self.i += 1;
            return Ok(args);
        }
        loop {
            let pos = self.pos();
            let name = match (self.peek_at(0).map(|t| &t.tok), self.peek_at(1).map(|t| &t.tok)) {
                (Some(Tok::Word(w)), Some(Tok::Eq)) => {
                    let w = w.clone();
                    self.i += 2;
                    Some(w)
                }
                _ => None,
            };
            let value = self.arg_value()?;
            args.push(Arg { name, value, pos });
            match self.peek() {
                Some(Tok::Comma) => self.i += 1,
                Some(Tok::RParen) => {
                    self.i += 1;
                    return Ok(args);
                }
                _ => return Err(self.error("expected `,` or `)` in the argument list")),
            }
        }
    }

    fn arg_value(&mut self) -> Result<ArgValue, ParseError> {
        if self.at_call() {
            let Some(Tok::Word(name)) = self.peek().cloned() else { unreachable!("at_call checked a word") };
            self.i += 2;
            return Ok(ArgValue::Call(name, self.args()?));
        }
        match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                self.i += 1;
                Ok(ArgValue::Scalar(w))
            }
            Some(Tok::LBracket) => {
                self.i += 1;
                let mut items = Vec::new();
                if matches!(self.peek(), Some(Tok::RBracket)) {
                    self.i += 1;
                    return Ok(ArgValue::List(items));
                }
                loop {
                    items.push(self.arg_value()?);
                    match self.peek() {
                        Some(Tok::Comma) => self.i += 1,
                        Some(Tok::RBracket) => {
                            self.i += 1;
                            return Ok(ArgValue::List(items));
                        }
                        _ => return Err(self.error("expected `,` or `]` in a list")),
                    }
                }
            }
            Some(other) => {
                let other = other.describe();
                Err(self.error(format!("expected an argument value, found {other}")))
            }
            None => Err(self.error("expected an argument value, found the end of the query")),
        }
    }

    fn function(&mut self, name: &str, args: Vec<Arg>, pos: usize) -> Result<Step, ParseError> {
        let lower = name.to_ascii_lowercase();
        let step = match lower.as_str() {
            "head" | "tail" => {
                let mut args = Args::new(name, args, &["limit"])?;
                let limit = match args.take("limit") {
                    Some((value, pos)) => self.limit(name, value, pos, self.limits.max_rows, "query.max_rows")?,
                    None => DEFAULT_ROW_LIMIT.min(self.limits.max_rows),
                };
                if lower == "head" { Step::Head(limit) } else { Step::Tail(limit) }
            }
            "count" => {
                if let Some(arg) = args.first() {
                    let what = arg.name.clone().map_or("a field argument".to_owned(), |n| format!("parameter `{n}`"));
                    return Err(ParseError::at(arg.pos, format!("count(): {what} is not supported; the subset has count() only")));
                }
                Step::Count
            }
            "groupby" => {
                let mut args = Args::new(name, args, &["field", "function", "limit"])?;
                let Some((field, field_pos)) = args.take("field") else {
                    return Err(ParseError::at(pos, "groupBy() needs a field: groupBy(field) or groupBy([a, b])"));
                };
                let fields = field_names(name, field, field_pos)?;
                if let Some((function, fpos)) = args.take("function") {
                    check_count_function(function, fpos)?;
                }
                let limit = match args.take("limit") {
                    Some((value, pos)) => self.limit(name, value, pos, self.limits.max_groups, "query.max_groups")?,
                    None => DEFAULT_GROUP_LIMIT.min(self.limits.max_groups),
                };
                Step::GroupBy { fields, limit }
            }
            "sort" => {
                let mut args = Args::new(name, args, &["field", "order", "limit"])?;
                let field = match args.take("field") {
                    None => "_count".to_owned(),
                    Some((value, fpos)) => {
                        let mut fields = field_names(name, value, fpos)?;
                        if fields.len() != 1 {
                            return Err(ParseError::at(fpos, "sort() on several fields is not supported; give one field"));
                        }
                        fields.pop().expect("one field")
                    }
                };
                let order = match args.take("order") {
                    None => Order::Desc,
                    Some((ArgValue::Scalar(o), opos)) => match o.to_ascii_lowercase().as_str() {
                        "asc" | "ascending" => Order::Asc,
                        "desc" | "descending" => Order::Desc,
                        _ => return Err(ParseError::at(opos, format!("sort(order={o}): order is asc or desc"))),
                    },
                    Some((_, opos)) => return Err(ParseError::at(opos, "sort(order=...): order is asc or desc")),
                };
                let limit = match args.take("limit") {
                    Some((value, pos)) => self.limit(name, value, pos, self.limits.max_rows, "query.max_rows")?,
                    None => DEFAULT_ROW_LIMIT.min(self.limits.max_rows),
                };
                Step::Sort { field, order, limit }
            }
            _ => return Err(ParseError::at(pos, format!("function {name}() is not supported; the query subset has {SUPPORTED_FUNCTIONS}"))),
        };
        Ok(step)
    }

    fn limit(&self, function: &str, value: ArgValue, pos: usize, max: usize, setting: &str) -> Result<usize, ParseError> {
        let ArgValue::Scalar(text) = value else {
            return Err(ParseError::at(pos, format!("{function}(limit=...): the limit is a number or `max`")));
        };
        if text.eq_ignore_ascii_case("max") {
            return Ok(max);
        }
        let Ok(n) = text.parse::<usize>() else {
            return Err(ParseError::at(pos, format!("{function}(limit={text}): the limit is a whole number or `max`")));
        };
        if n == 0 || n > max {
            return Err(ParseError::at(pos, format!("{function}(limit={n}): the limit must be between 1 and {max} ({setting})")));
        }
        Ok(n)
    }
}

fn is_supported_function(name: &str) -> bool {
    ["head", "tail", "count", "groupby", "sort"].contains(&name.to_ascii_lowercase().as_str())
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or(text)
}

/// The field names of `groupBy(field)`, `groupBy([a, b])`, `sort(field)`.
fn field_names(function: &str, value: ArgValue, pos: usize) -> Result<Vec<String>, ParseError> {
    let names = match value {
        ArgValue::Scalar(name) => vec![name],
        ArgValue::List(items) => {
            let mut names = Vec::new();
            for item in items {
                let ArgValue::Scalar(name) = item else {
                    return Err(ParseError::at(pos, format!("{function}(): fields are names, not functions or lists")));
                };
                names.push(name);
            }
            names
        }
        ArgValue::Call(inner, _) => return Err(ParseError::at(pos, format!("{function}(): a field is a name, not the function {inner}()"))),
    };
    if names.is_empty() {
        return Err(ParseError::at(pos, format!("{function}(): the field list is empty")));
    }
    Ok(names)
}

/// `groupBy(..., function=count())`: the only aggregate the subset has.
fn check_count_function(value: ArgValue, pos: usize) -> Result<(), ParseError> {
    let calls = match value {
        ArgValue::List(items) => items,
        other => vec![other],
    };
    if calls.len() != 1 {
        return Err(ParseError::at(pos, "groupBy(function=...): only count() is supported, once"));
    }
    match &calls[0] {
        ArgValue::Call(name, args) if name.eq_ignore_ascii_case("count") && args.is_empty() => Ok(()),
        ArgValue::Call(name, _) if name.eq_ignore_ascii_case("count") => {
            Err(ParseError::at(pos, "groupBy(function=count(...)): count() takes no arguments in the subset"))
        }
        ArgValue::Call(name, _) => Err(ParseError::at(pos, format!("groupBy(function={name}()): only count() is supported"))),
        _ => Err(ParseError::at(pos, "groupBy(function=...): expected count()")),
    }
}

/// Named and positional arguments of one call, checked against its parameter names; the
/// first positional argument is the first parameter (LogScale's omitted argument name).
struct Args {
    values: Vec<(String, ArgValue, usize)>,
}

impl Args {
    fn new(function: &str, args: Vec<Arg>, params: &[&str]) -> Result<Args, ParseError> {
        let mut values: Vec<(String, ArgValue, usize)> = Vec::new();
        for (index, arg) in args.into_iter().enumerate() {
            let name = match arg.name {
                Some(name) => {
                    if !params.contains(&name.as_str()) {
                        return Err(ParseError::at(arg.pos, format!("{function}(): parameter `{name}` is not supported (the subset has {})", params.join(", "))));
                    }
                    name
                }
                None if index == 0 => params[0].to_owned(),
                None => return Err(ParseError::at(arg.pos, format!("{function}(): only the first argument may omit its name"))),
            };
            if values.iter().any(|(n, _, _)| *n == name) {
                return Err(ParseError::at(arg.pos, format!("{function}(): `{name}` is given twice")));
            }
            values.push((name, arg.value, arg.pos));
        }
        Ok(Args { values })
    }

    fn take(&mut self, name: &str) -> Option<(ArgValue, usize)> {
        let index = self.values.iter().position(|(n, _, _)| n == name)?;
        let (_, value, pos) = self.values.remove(index);
        Some((value, pos))
    }
}

#[cfg(test)]
mod tests;
