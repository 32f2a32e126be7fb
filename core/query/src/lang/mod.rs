//! The query language: a documented subset of LogScale's (README "Reading events back").
//!
//! A hand-written recursive-descent parser following LogScale's published grammar
//! (`library.humio.com/lql-grammar`): pipeline steps separated by `|`; a filter step is
//! `LogicalAnd := LogicalOr ('and'? LogicalOr)*`, `LogicalOr := Unary ('or' Unary)*`,
//! `Unary := ('not' | '!')* Primary`, so, as in LogScale and unlike most languages, `or`
//! binds tighter than `and` (`a and b or c` is `a and (b or c)`). Other steps are
//! function calls (aggregates, field steps, filter functions: `FUNCTIONS`), `field :=
//! expr`, `case { ... ; ... }` and `[f(), g()]` (stats of the list); expressions
//! ([`Expr`], in `:=`, `eval`, `test`, `if`) have LogScale's precedence (`or`, `and`,
//! `not`, comparisons, `+ -`, `* /`). Anything else is a [`ParseError`] naming the
//! unsupported part, which the HTTP layer answers with 400.
//!
//! Must never: touch events or files. Regexes are compiled here (with a size limit) so a
//! bad one is a 400 before any segment is read.

mod buckets;
mod lex;

use std::collections::BTreeMap;

pub use buckets::{DEFAULT_MAX_SERIES, DEFAULT_SERIES_LIMIT, Grid, MAX_BUCKETS, Span, TimeBuckets, auto_span, humanize};
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
    /// Most values `count(distinct=true)` and `percentile()` hold in one step.
    pub max_aggregate_values: usize,
    /// Largest `limit=` (series) of `timeChart` and `bucket` (LogScale's `MAX_SERIES_LIMIT`).
    pub max_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 10_000,
            max_groups: DEFAULT_GROUP_LIMIT,
            regex_size_limit: 1 << 20,
            max_aggregate_values: DEFAULT_AGGREGATE_VALUES,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// Default of `query.max_aggregate_values` (8 bytes each for percentile inputs).
pub const DEFAULT_AGGREGATE_VALUES: usize = 1_000_000;

/// LogScale's default for `head()`, `tail()` and `sort()`.
pub const DEFAULT_ROW_LIMIT: usize = 200;
/// LogScale's default for `groupBy(limit=)`.
pub const DEFAULT_GROUP_LIMIT: usize = 20_000;

/// A parsed query: the steps in pipeline order.
#[derive(Debug, Clone)]
pub struct Query {
    pub steps: Vec<Step>,
}

impl Query {
    /// Whether an aggregate (LogScale's sense: `head` and `tail` are aggregates too)
    /// bounds the result; without one, LogScale's query jobs add `tail(200)`.
    pub fn has_aggregate(&self) -> bool {
        self.steps.iter().any(|s| !is_streaming(s))
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    Filter(Filter),
    Head(usize),
    Tail(usize),
    /// `count()`, `sum()`, ..., `stats()`, `groupBy()`, `top()`: one row per group.
    Aggregate(Aggregate),
    /// `sort()`, `table()`: the best `limit` events by the keys, in order.
    Sort {
        by: Vec<SortBy>,
        limit: usize,
    },
    /// `field := expr`, `eval(field = expr)`: sets the field, or leaves it unset when the
    /// expression has no value (a missing field, text in arithmetic).
    Assign {
        field: String,
        expr: Expr,
    },
    /// `test(expr)`: keeps the events for which the expression is true.
    Test(Expr),
    /// `default(field=..., value=...)`: sets the fields an event lacks.
    Default {
        fields: Vec<String>,
        value: String,
    },
    /// `case { branch ; branch }`: the first branch whose steps all pass the event; an
    /// event no branch passes is dropped.
    Case(Vec<Vec<Step>>),
    /// `regex("...", field=...)`: keeps the events whose field matches and sets the
    /// regex's named groups as fields.
    Regex {
        field: String,
        regex: Regex,
    },
    /// `select([...])` (and `table`'s columns): only these fields, in this order.
    Select(Vec<String>),
    /// `drop([...])`.
    Drop(Vec<String>),
    /// `rename(field=..., as=...)`, `rename([[a, b], ...])`.
    Rename(Vec<(String, String)>),
    /// `replace(regex, with=..., field=..., as=...)`: every match replaced (`$1`, `${name}`
    /// refer to groups); an event without the field passes unchanged.
    Replace {
        regex: Regex,
        with: String,
        field: String,
        output: String,
    },
    /// `format(format, field=[...], as=...)`: Java/printf-style `%s %d %f %x %%` with
    /// flags `-` and `0`, a width and a precision.
    Format {
        format: String,
        fields: Vec<String>,
        output: String,
    },
    /// `formatTime(format, field=@timestamp, as=..., unit=...)`: strftime-style, in UTC.
    FormatTime {
        format: String,
        field: String,
        output: String,
        unit: TimeUnit,
    },
    /// `parseJson(field=@rawstring, prefix=...)`: the JSON object's fields, flattened as
    /// events are (`a.b`, `a[0]`); text that is not a JSON object leaves the event as is.
    ParseJson {
        field: String,
        prefix: String,
    },
    /// `kvParse(field=@rawstring, separator="=", override=false, as=prefix)`:
    /// `key=value`, `key="quoted value"` pairs become fields.
    KvParse {
        field: String,
        pairs: Regex,
        prefix: String,
        overwrite: bool,
    },
    /// `top(field, limit=10, sum=, max=, percent=, rest=)`: the aggregate's groups, largest
    /// first, `limit` of them; `percent` adds each one's share of the total, `rest` a row
    /// (that value in the first field) for the groups left out.
    Top {
        aggregate: Aggregate,
        limit: usize,
        percent: bool,
        rest: Option<String>,
    },
    /// `timeChart()`, `bucket()`: the aggregate per time bucket and series (`buckets`).
    TimeBuckets(TimeBuckets),
    /// `split(field=_events)`: one event per element of the flattened array `field[i]`,
    /// the element as `field` (objects as `field.x`) with `_index`.
    Split {
        field: String,
    },
}

/// How `formatTime` reads its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds up to 100,000,000,000, milliseconds above (LogScale's `auto`).
    Auto,
    Milliseconds,
    Seconds,
}

/// Rows of aggregate functions, per group of `group_by` values (no fields: one group).
/// A time-bucketed aggregate (`timeChart`, `bucket`) is this with the bucket as the
/// first key.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pub group_by: Vec<String>,
    pub functions: Vec<AggFunction>,
    /// Most groups held; past it the query fails (never a wrong count).
    pub limit: usize,
    /// Most distinct values and percentile inputs held over all groups (same rule).
    pub max_values: usize,
}

/// One aggregate function and the field it writes (`as=`, or LogScale's default name; for
/// `percentile` a prefix of `_50`, `_95`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct AggFunction {
    pub kind: AggKind,
    pub output: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AggKind {
    /// Events (with `field`: events having it; `distinct`: distinct values of it).
    Count {
        field: Option<String>,
        distinct: bool,
    },
    Sum(String),
    Avg(String),
    Min(String),
    Max(String),
    Percentile {
        field: String,
        percentiles: Vec<f64>,
    },
    /// `collect(fields, limit=2000, separator="\n")`: each field's distinct values (first
    /// seen first), joined; past `limit` values are left out, as LogScale does.
    Collect {
        fields: Vec<String>,
        limit: usize,
        separator: String,
    },
    /// `selectLast(fields)`: the fields of the latest event (by `@timestamp`; the one read
    /// last among equals).
    SelectLast(Vec<String>),
}

impl AggFunction {
    /// The fields this function writes into a row.
    pub fn outputs(&self) -> Vec<String> {
        match &self.kind {
            AggKind::Percentile { percentiles, .. } => percentiles.iter().map(|p| format!("{}_{}", self.output, format_number(*p))).collect(),
            AggKind::Collect { fields, .. } | AggKind::SelectLast(fields) => fields.clone(),
            _ => vec![self.output.clone()],
        }
    }
}

/// A number as LogScale writes it in a result: whole numbers without a fraction.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// An expression of `:=`, `eval`, `test` and `if`: a bare word is a field, a quoted
/// string is text.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Field(String),
    Str(String),
    Num(f64),
    Neg(Box<Expr>),
    /// `+ - * /`.
    Arith(char, Box<Expr>, Box<Expr>),
    Cmp(ExprCmp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    If {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Concat(Vec<Expr>),
    /// The first of the values that exists and is not empty.
    Coalesce(Vec<Expr>),
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    /// In characters.
    Length(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprCmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One key of a `sort`: a field, its order and how its values compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortBy {
    pub field: String,
    pub order: Order,
    pub kind: SortType,
}

/// `sort(type=...)`: how values compare; an event without the field comes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortType {
    /// Numbers numerically, before text compared as text (LogScale's default `number`).
    Number,
    /// Everything as text.
    String,
    /// Hexadecimal numbers (with or without `0x`) numerically, before other text.
    Hex,
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
    Field {
        name: String,
        matcher: Matcher,
        negate: bool,
    },
    /// `field < 3` and friends: true only if the field is present and a number.
    Compare {
        name: String,
        op: CmpOp,
        value: f64,
    },
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

const SUPPORTED_FUNCTIONS: &str = "head, tail, count, sum, avg, min, max, percentile, stats, collect, selectLast, groupBy, top, timeChart, bucket, sort, table, select, drop, rename, eval, test, default, in, wildcard, regex, replace, format, formatTime, parseJson, kvParse and split";

/// Functions usable inside an expression.
const EXPR_FUNCTIONS: &str = "if, concat, coalesce, lower, upper and length";

/// Step functions with an `as=` that `field := f(...)` may fill.
const ASSIGNABLE_FUNCTIONS: [&str; 9] = ["count", "sum", "avg", "min", "max", "percentile", "replace", "format", "formattime"];

/// Every function step the subset has, lowercase.
const FUNCTIONS: [&str; 32] = [
    "head",
    "tail",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "percentile",
    "stats",
    "collect",
    "selectlast",
    "groupby",
    "top",
    "timechart",
    "bucket",
    "sort",
    "table",
    "select",
    "drop",
    "rename",
    "eval",
    "test",
    "default",
    "in",
    "wildcard",
    "regex",
    "replace",
    "format",
    "formattime",
    "parsejson",
    "kvparse",
    "split",
];

/// Parses `input` into a [`Query`], or says which part is not supported.
pub fn parse(input: &str, limits: &Limits) -> Result<Query, ParseError> {
    parse_with_arguments(input, limits, &BTreeMap::new())
}

/// [`parse`], with the query's parameters (`?name`, `?{name=default}`) given their values
/// from the request's `arguments`, as LogScale's dashboards and saved searches fill them.
/// A parameter's value is one quoted value wherever it stands (`status=?code` matches
/// the whole value, `x := ?n` sets text), never query syntax.
pub fn parse_with_arguments(input: &str, limits: &Limits, arguments: &BTreeMap<String, String>) -> Result<Query, ParseError> {
    let tokens = fill_parameters(lex::tokenize(input)?, arguments)?;
    let mut parser = Parser { tokens, i: 0, limits, end: input.len(), depth: 0, expr_nodes: 0 };
    let mut steps = Vec::new();
    loop {
        steps.extend(parser.step()?);
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
    /// Open parentheses, lists, calls and `case`s: the recursion depth, capped so that no
    /// query can exhaust the stack (here, in evaluation or when its tree is dropped).
    depth: usize,
    /// Expression parts parsed so far, capped for the same reason (`a+a+a+...` is deep).
    expr_nodes: usize,
}

/// How deep parentheses, lists, calls, `case`s and `not`s may nest.
const MAX_NESTING: usize = 64;
/// How many parts (operands, operators) the expressions of one query may have.
const MAX_EXPR_NODES: usize = 1000;

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

    /// One level deeper (see [`MAX_NESTING`]); a parse that fails need not come back up.
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!("the query nests more than {MAX_NESTING} levels deep (parentheses, lists, calls, case, not)")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// One more expression part (see [`MAX_EXPR_NODES`]).
    fn grow(&mut self) -> Result<(), ParseError> {
        self.expr_nodes += 1;
        if self.expr_nodes > MAX_EXPR_NODES {
            return Err(self.error(format!("the query's expressions have more than {MAX_EXPR_NODES} parts")));
        }
        Ok(())
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
        matches!((self.peek_at(0), self.peek_at(1)), (Some(Token { tok: Tok::Word(_), .. }), Some(Token { tok: Tok::LParen, space_before: false, .. })))
    }

    /// Whether the next token ends a step: `|`, the end, or a `case` branch's `;` / `}`.
    fn at_step_end(&self) -> bool {
        match self.peek() {
            None | Some(Tok::Pipe) => true,
            Some(Tok::Other(o)) => o == ";" || o == "}",
            _ => false,
        }
    }

    fn step(&mut self) -> Result<Vec<Step>, ParseError> {
        if self.at_step_end() {
            if self.i == 0 && self.peek().is_none() {
                return Ok(vec![Step::Filter(Filter::All)]);
            }
            return Err(self.error("empty pipeline step (nothing between two `|` or after the last)"));
        }
        // `field := expr`, and `field := f(...)` for `f(..., as=field)`
        if let (Some(Token { tok: Tok::Word(field) | Tok::Str(field), .. }), Some(Token { tok: Tok::Assign, .. })) = (self.peek_at(0), self.peek_at(1)) {
            let field = field.clone();
            self.i += 2;
            if let Some(Tok::Word(name)) = self.peek().cloned()
                && self.at_call()
                && ASSIGNABLE_FUNCTIONS.contains(&name.to_ascii_lowercase().as_str())
            {
                let pos = self.pos();
                self.i += 2;
                let mut args = self.args()?;
                if let Some(arg) = args.iter().find(|a| a.name.as_deref() == Some("as")) {
                    return Err(ParseError::at(arg.pos, format!("`{field} := {name}(...)` already names the field; leave out as=")));
                }
                args.push(Arg { name: Some("as".into()), value: ArgValue::Scalar(field), pos });
                return self.function(&name, args, pos);
            }
            let expr = self.expr()?;
            return Ok(vec![Step::Assign { field, expr }]);
        }
        if matches!((self.peek_at(0), self.peek_at(1)), (Some(Token { tok: Tok::Word(w), .. }), Some(Token { tok: Tok::Other(o), .. })) if w.eq_ignore_ascii_case("case") && o == "{")
        {
            self.i += 2;
            return self.case();
        }
        // `field match { pattern => steps ; ... }`
        if let (Some(Token { tok: Tok::Word(field) | Tok::Str(field), .. }), Some(Token { tok: Tok::Word(m), .. }), Some(Token { tok: Tok::Other(o), .. })) =
            (self.peek_at(0), self.peek_at(1), self.peek_at(2))
            && m.eq_ignore_ascii_case("match")
            && o == "{"
        {
            let field = field.clone();
            self.i += 3;
            return self.match_statement(field);
        }
        // `[count(), avg(x)]`: stats() of the list.
        if matches!(self.peek(), Some(Tok::LBracket)) {
            let pos = self.pos();
            let value = self.arg_value()?;
            let functions = self.agg_functions("stats", value, pos)?;
            return Ok(vec![Step::Aggregate(Aggregate { group_by: Vec::new(), functions, limit: 1, max_values: self.limits.max_aggregate_values })]);
        }
        if self.at_call() {
            let Some(Tok::Word(name)) = self.peek().cloned() else { unreachable!("at_call checked a word") };
            let pos = self.pos();
            self.i += 2;
            let lower = name.to_ascii_lowercase();
            if lower == "eval" {
                return self.eval_args();
            }
            if lower == "test" {
                let expr = self.expr()?;
                self.expect(Tok::RParen, "`)` after test(...)'s expression")?;
                return Ok(vec![Step::Test(expr)]);
            }
            let args = self.args()?;
            return self.function(&name, args, pos);
        }
        Ok(vec![Step::Filter(self.filter()?)])
    }

    /// `case { steps ; steps ; * | steps }`, after the `{`.
    fn case(&mut self) -> Result<Vec<Step>, ParseError> {
        self.enter()?;
        let mut branches = Vec::new();
        loop {
            let mut steps = Vec::new();
            loop {
                steps.extend(self.step()?);
                match self.peek() {
                    Some(Tok::Pipe) => self.i += 1,
                    _ => break,
                }
            }
            if let Some(step) = steps.iter().find(|s| !is_streaming(s) || matches!(s, Step::Split { .. })) {
                return Err(self.error(format!("a case branch can only filter and set fields, not {}", step_name(step))));
            }
            branches.push(steps);
            match self.peek() {
                Some(Tok::Other(o)) if o == ";" => {
                    self.i += 1;
                    if matches!(self.peek(), Some(Tok::Other(o)) if o == "}") {
                        self.i += 1;
                        break;
                    }
                }
                Some(Tok::Other(o)) if o == "}" => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.error("expected `;` or `}` after a case branch")),
            }
        }
        self.leave();
        Ok(vec![Step::Case(branches)])
    }

    /// `field match { "value" => steps ; /re/ => steps ; in(values=[...]) => steps ; * =>
    /// steps }`, after the `{`: a `case` whose branches start with a filter on `field`
    /// (a value with `field=value` semantics, a regex unanchored, its named groups set).
    fn match_statement(&mut self, field: String) -> Result<Vec<Step>, ParseError> {
        self.enter()?;
        let mut branches = Vec::new();
        loop {
            if matches!(self.peek(), Some(Tok::Other(o)) if o == "}") {
                self.i += 1;
                break;
            }
            let pos = self.pos();
            let test = match self.peek().cloned() {
                Some(Tok::Word(w)) if w == "*" => {
                    self.i += 1;
                    Filter::All
                }
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("in") && self.at_call() => {
                    self.i += 2;
                    let args = self.args()?;
                    let mut args = Args::new("in", args, &["values", "ignoreCase"])?;
                    let ignore_case = args.take_bool("in", "ignoreCase")?.unwrap_or(false);
                    let Some((ArgValue::List(values), vpos)) = args.take("values") else {
                        return Err(ParseError::at(pos, "in() in a match clause needs values=[...]"));
                    };
                    let mut terms = Vec::new();
                    for value in values {
                        let ArgValue::Scalar(value) = value else {
                            return Err(ParseError::at(vpos, "in(values=[...]): each value is text"));
                        };
                        terms.push(Filter::Field { name: field.clone(), matcher: self.wildcard(&value, ignore_case, vpos)?, negate: false });
                    }
                    Filter::Or(terms)
                }
                Some(Tok::Word(w) | Tok::Str(w)) => {
                    self.i += 1;
                    Filter::Field { name: field.clone(), matcher: self.anchored(&w, pos)?, negate: false }
                }
                Some(Tok::Regex { pattern, flags }) => {
                    self.i += 1;
                    Filter::Field { name: field.clone(), matcher: Matcher::Regex(self.regex(&pattern, &flags, pos)?), negate: false }
                }
                Some(other) => {
                    let other = other.describe();
                    return Err(self.error(format!("expected a match clause (\"value\", /regex/, in(values=[...]) or *), found {other}")));
                }
                None => return Err(self.error("expected a match clause or `}`, found the end of the query")),
            };
            self.expect(Tok::Other("=>".into()), "`=>` after the match clause's pattern")?;
            let mut steps = vec![Step::Filter(test)];
            loop {
                steps.extend(self.step()?);
                match self.peek() {
                    Some(Tok::Pipe) => self.i += 1,
                    _ => break,
                }
            }
            if let Some(step) = steps.iter().find(|s| !is_streaming(s) || matches!(s, Step::Split { .. })) {
                return Err(self.error(format!("a match clause can only filter and set fields, not {}", step_name(step))));
            }
            branches.push(steps);
            match self.peek() {
                Some(Tok::Other(o)) if o == ";" => self.i += 1,
                Some(Tok::Other(o)) if o == "}" => {
                    self.i += 1;
                    break;
                }
                _ => return Err(self.error("expected `;` or `}` after a match clause")),
            }
        }
        self.leave();
        Ok(vec![Step::Case(branches)])
    }

    /// `eval(field = expr, ...)`, after the `(`.
    fn eval_args(&mut self) -> Result<Vec<Step>, ParseError> {
        let mut steps = Vec::new();
        loop {
            let field = match (self.peek_at(0).map(|t| &t.tok), self.peek_at(1).map(|t| &t.tok)) {
                (Some(Tok::Word(w) | Tok::Str(w)), Some(Tok::Eq)) => w.clone(),
                _ => return Err(self.error("eval() takes `field = expression`")),
            };
            self.i += 2;
            let expr = self.expr()?;
            steps.push(Step::Assign { field, expr });
            match self.peek() {
                Some(Tok::Comma) => self.i += 1,
                Some(Tok::RParen) => {
                    self.i += 1;
                    return Ok(steps);
                }
                _ => return Err(self.error("expected `,` or `)` in eval()")),
            }
        }
    }

    // ---- expressions ----

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.expr_and()?];
        while matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("or")) {
            self.i += 1;
            terms.push(self.expr_and()?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Expr::Or(terms) })
    }

    fn expr_and(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.expr_not()?];
        while matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("and")) {
            self.i += 1;
            terms.push(self.expr_not()?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Expr::And(terms) })
    }

    fn expr_not(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Tok::Bang) => {}
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {}
            _ => return self.expr_cmp(),
        }
        self.i += 1;
        self.grow()?;
        Ok(Expr::Not(Box::new(self.expr_not()?)))
    }

    fn expr_cmp(&mut self) -> Result<Expr, ParseError> {
        let left = self.expr_sum()?;
        let op = match self.peek() {
            Some(Tok::EqEq) => ExprCmp::Eq,
            Some(Tok::Ne) => ExprCmp::Ne,
            Some(Tok::Lt) => ExprCmp::Lt,
            Some(Tok::Le) => ExprCmp::Le,
            Some(Tok::Gt) => ExprCmp::Gt,
            Some(Tok::Ge) => ExprCmp::Ge,
            Some(Tok::Eq) => {
                return Err(self.error("`=` compares nothing in an expression; use `==`"));
            }
            _ => return Ok(left),
        };
        self.i += 1;
        self.grow()?;
        let right = self.expr_sum()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn expr_sum(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.expr_product()?;
        while let Some(Tok::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.i += 1;
            self.grow()?;
            let right = self.expr_product()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn expr_product(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.expr_unary()?;
        while let Some(Tok::Op(op @ ('*' | '/'))) = self.peek().cloned() {
            self.i += 1;
            self.grow()?;
            let right = self.expr_unary()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn expr_unary(&mut self) -> Result<Expr, ParseError> {
        self.grow()?;
        if matches!(self.peek(), Some(Tok::Op('-'))) {
            self.i += 1;
            return Ok(Expr::Neg(Box::new(self.expr_unary()?)));
        }
        self.expr_primary()
    }

    fn expr_primary(&mut self) -> Result<Expr, ParseError> {
        if self.at_call() {
            let Some(Tok::Word(name)) = self.peek().cloned() else { unreachable!("at_call checked a word") };
            let pos = self.pos();
            self.i += 2;
            self.enter()?;
            let call = self.expr_call(&name, pos)?;
            self.leave();
            return Ok(call);
        }
        match self.peek().cloned() {
            Some(Tok::Word(w)) => {
                self.i += 1;
                Ok(match w.parse::<f64>() {
                    Ok(n) if n.is_finite() => Expr::Num(n),
                    // LogScale's boolean literals.
                    _ if w == "true" || w == "false" => Expr::Str(w),
                    _ => Expr::Field(w),
                })
            }
            Some(Tok::Str(text)) => {
                self.i += 1;
                Ok(Expr::Str(text))
            }
            Some(Tok::LParen) => {
                self.i += 1;
                self.enter()?;
                let inner = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
                Ok(inner)
            }
            Some(other) => {
                let other = other.describe();
                Err(self.error(format!("expected a field, a number or a \"string\" in the expression, found {other}")))
            }
            None => Err(self.error("expected an expression, found the end of the query")),
        }
    }

    /// A function inside an expression, after its `(`: `if(cond, then=, else=)`,
    /// `concat([a, b])`.
    fn expr_call(&mut self, name: &str, pos: usize) -> Result<Expr, ParseError> {
        match name.to_ascii_lowercase().as_str() {
            "if" => {
                let cond = self.expr()?;
                let (mut then, mut otherwise) = (None, None);
                while matches!(self.peek(), Some(Tok::Comma)) {
                    self.i += 1;
                    let param = match (self.peek_at(0).map(|t| &t.tok), self.peek_at(1).map(|t| &t.tok)) {
                        (Some(Tok::Word(w)), Some(Tok::Eq)) => w.clone(),
                        _ => {
                            return Err(self.error("if() takes a condition, then=... and else=..."));
                        }
                    };
                    self.i += 2;
                    let value = self.expr()?;
                    match param.as_str() {
                        "then" => then = Some(value),
                        "else" => otherwise = Some(value),
                        other => {
                            return Err(self.error(format!("if(): parameter `{other}` is not supported (then, else)")));
                        }
                    }
                }
                self.expect(Tok::RParen, "`)` after if(...)")?;
                let (Some(then), Some(otherwise)) = (then, otherwise) else {
                    return Err(ParseError::at(pos, "if() needs both then= and else="));
                };
                Ok(Expr::If { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) })
            }
            "concat" | "coalesce" => {
                self.expect(Tok::LBracket, &format!("`[` ({name}([a, b]))"))?;
                let mut parts = Vec::new();
                loop {
                    parts.push(self.expr()?);
                    match self.peek() {
                        Some(Tok::Comma) => self.i += 1,
                        Some(Tok::RBracket) => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.error(format!("expected `,` or `]` in {name}([...])"))),
                    }
                }
                self.expect(Tok::RParen, &format!("`)` after {name}([...])"))?;
                Ok(if name.eq_ignore_ascii_case("concat") { Expr::Concat(parts) } else { Expr::Coalesce(parts) })
            }
            "lower" | "upper" | "length" => {
                let inner = Box::new(self.expr()?);
                self.expect(Tok::RParen, &format!("`)` after {name}(...)"))?;
                Ok(match name.to_ascii_lowercase().as_str() {
                    "lower" => Expr::Lower(inner),
                    "upper" => Expr::Upper(inner),
                    _ => Expr::Length(inner),
                })
            }
            _ => Err(ParseError::at(pos, format!("function {name}() is not supported in an expression (only {EXPR_FUNCTIONS})"))),
        }
    }

    // ---- filters ----

    fn filter(&mut self) -> Result<Filter, ParseError> {
        let mut terms = vec![self.or_filter()?];
        loop {
            if self.at_step_end() || matches!(self.peek(), Some(Tok::RParen)) {
                break;
            }
            match self.peek() {
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
            if negations > MAX_NESTING {
                return Err(self.error(format!("more than {MAX_NESTING} `not`s in a row")));
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
                self.enter()?;
                let inner = self.filter()?;
                self.expect(Tok::RParen, "`)`")?;
                self.leave();
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
            Tok::Assign => Err(self.error("a field assignment `field := ...` must be a pipeline step of its own, after a `|`")),
            Tok::EqEq => Err(self.error("`==` is not supported in a filter; use `=`")),
            Tok::Other(op) if op == "{" || op == "}" || op == ";" => {
                Err(self.error(format!("`{op}` outside `case {{ ... }}` (match or subquery syntax) is not supported")))
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
        matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge | Tok::Assign | Tok::EqEq))
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
            Tok::Assign => {
                return Err(ParseError::at(op_pos, format!("a field assignment `{name} := ...` must be a pipeline step of its own, after a `|`")));
            }
            Tok::EqEq => {
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
            None => {
                return Err(ParseError::at(value_pos, format!("expected a value after `{name}` and its operator, found the end of the query")));
            }
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
                other => {
                    return Err(ParseError::at(pos, format!("regex flag `{other}` is not supported (only i, m and d)")));
                }
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
        self.enter()?;
        let value = self.arg_value_inner()?;
        self.leave();
        Ok(value)
    }

    fn arg_value_inner(&mut self) -> Result<ArgValue, ParseError> {
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

    fn function(&mut self, name: &str, args: Vec<Arg>, pos: usize) -> Result<Vec<Step>, ParseError> {
        let lower = name.to_ascii_lowercase();
        let step = match lower.as_str() {
            "head" | "tail" => {
                let mut args = Args::new(name, args, &["limit"])?;
                let limit = self.row_limit(name, &mut args)?;
                if lower == "head" { Step::Head(limit) } else { Step::Tail(limit) }
            }
            "count" | "sum" | "avg" | "min" | "max" | "percentile" | "collect" | "selectlast" => {
                let function = self.agg_function(name, args, pos)?;
                Step::Aggregate(Aggregate { group_by: Vec::new(), functions: vec![function], limit: 1, max_values: self.limits.max_aggregate_values })
            }
            "stats" => {
                let mut args = Args::new(name, args, &["function"])?;
                let Some((value, fpos)) = args.take("function") else {
                    return Err(ParseError::at(pos, "stats() needs functions: stats([count(), avg(x)])"));
                };
                let functions = self.agg_functions(name, value, fpos)?;
                Step::Aggregate(Aggregate { group_by: Vec::new(), functions, limit: 1, max_values: self.limits.max_aggregate_values })
            }
            "groupby" => {
                let mut args = Args::new(name, args, &["field", "function", "limit"])?;
                let Some((field, field_pos)) = args.take("field") else {
                    return Err(ParseError::at(pos, "groupBy() needs a field: groupBy(field) or groupBy([a, b])"));
                };
                let group_by = field_names(name, field, field_pos)?;
                let functions = match args.take("function") {
                    Some((value, fpos)) => self.agg_functions(name, value, fpos)?,
                    None => vec![AggFunction { kind: AggKind::Count { field: None, distinct: false }, output: "_count".into() }],
                };
                let limit = match args.take("limit") {
                    Some((value, pos)) => self.limit(name, value, pos, self.limits.max_groups, "query.max_groups")?,
                    None => DEFAULT_GROUP_LIMIT.min(self.limits.max_groups),
                };
                Step::Aggregate(Aggregate { group_by, functions, limit, max_values: self.limits.max_aggregate_values })
            }
            "top" => {
                // LogScale's top(): the groups with the most events (or the largest sum= or
                // max= of a field), most first.
                let mut args = Args::new(name, args, &["field", "limit", "as", "sum", "max", "percent", "rest"])?;
                let Some((field, field_pos)) = args.take("field") else {
                    return Err(ParseError::at(pos, "top() needs a field: top(field) or top([a, b])"));
                };
                let group_by = field_names(name, field, field_pos)?;
                let (sum, max) = (args.take_name(name, "sum")?, args.take_name(name, "max")?);
                let (kind, default_output) = match (sum, max) {
                    (None, None) => (AggKind::Count { field: None, distinct: false }, "_count"),
                    (Some(field), None) => (AggKind::Sum(field), "_sum"),
                    (None, Some(field)) => (AggKind::Max(field), "_max"),
                    (Some(_), Some(_)) => return Err(ParseError::at(pos, "top(): give sum= or max=, not both")),
                };
                let output = args.take_name(name, "as")?.unwrap_or_else(|| default_output.into());
                let limit = match args.take("limit") {
                    Some((value, pos)) => self.limit(name, value, pos, self.limits.max_rows, "query.max_rows")?,
                    None => 10.min(self.limits.max_rows),
                };
                let percent = args.take_bool(name, "percent")?.unwrap_or(false);
                let rest = args.take_name(name, "rest")?;
                let aggregate = Aggregate {
                    group_by,
                    functions: vec![AggFunction { kind, output }],
                    limit: DEFAULT_GROUP_LIMIT.min(self.limits.max_groups),
                    max_values: self.limits.max_aggregate_values,
                };
                Step::Top { aggregate, limit, percent, rest }
            }
            "timechart" | "bucket" => {
                let chart = lower == "timechart";
                let params: &[&str] = if chart {
                    &["series", "function", "span", "buckets", "limit", "minSpan", "timezone", "unit"]
                } else {
                    &["span", "field", "function", "buckets", "limit", "minSpan", "timezone", "unit"]
                };
                let mut args = Args::new(name, args, params)?;
                for unsupported in ["minSpan", "timezone", "unit"] {
                    if let Some((_, upos)) = args.take(unsupported) {
                        let instead = if unsupported == "timezone" { "; send timeZoneOffsetMinutes in the request instead" } else { "" };
                        return Err(ParseError::at(upos, format!("{name}({unsupported}=...) is not supported{instead}")));
                    }
                }
                let group_by = match args.take(if chart { "series" } else { "field" }) {
                    Some((value, fpos)) => field_names(name, value, fpos)?,
                    None => Vec::new(),
                };
                if chart && group_by.len() > 1 {
                    return Err(ParseError::at(pos, "timeChart(series=...) is one field; to chart by several, join them first: s := concat([a, b]) | timeChart(s)"));
                }
                let functions = match args.take("function") {
                    Some((value, fpos)) => self.agg_functions(name, value, fpos)?,
                    None => vec![AggFunction { kind: AggKind::Count { field: None, distinct: false }, output: "_count".into() }],
                };
                let span = match (args.take_name(name, "span")?, args.take("buckets")) {
                    (Some(_), Some((_, bpos))) => return Err(ParseError::at(bpos, format!("{name}(): give span= or buckets=, not both"))),
                    (Some(span), None) => buckets::parse_span(&span).map_err(|e| ParseError::at(pos, format!("{name}(span={span}): {e}")))?,
                    (None, Some((value, bpos))) => {
                        let n = match value {
                            ArgValue::Scalar(text) => text.parse::<i64>().ok().filter(|n| (1..=MAX_BUCKETS).contains(n)),
                            _ => None,
                        };
                        Span::Buckets(n.ok_or_else(|| ParseError::at(bpos, format!("{name}(buckets=...): a whole number from 1 to {MAX_BUCKETS}")))?)
                    }
                    (None, None) => Span::Auto,
                };
                let (series_limit, limit_given) = match args.take("limit") {
                    Some((value, lpos)) => (self.limit(name, value, lpos, self.limits.max_series, "query.max_series")?, true),
                    None => (DEFAULT_SERIES_LIMIT.min(self.limits.max_series), false),
                };
                let aggregate = Aggregate { group_by, functions, limit: self.limits.max_groups, max_values: self.limits.max_aggregate_values };
                Step::TimeBuckets(TimeBuckets { aggregate, span, series_limit, limit_given, chart, grid: None })
            }
            "sort" => {
                let mut args = Args::new(name, args, &["field", "order", "type", "limit"])?;
                let fields = match args.take("field") {
                    None => vec!["_count".to_owned()],
                    Some((value, fpos)) => field_names(name, value, fpos)?,
                };
                let by = sort_by(name, fields, &mut args, pos)?;
                let limit = self.row_limit(name, &mut args)?;
                Step::Sort { by, limit }
            }
            "table" => {
                // LogScale's table(): the last `limit` events by `sortby` (default
                // @timestamp, descending), with only the columns.
                let mut args = Args::new(name, args, &["fields", "limit", "sortby", "order", "type"])?;
                let Some((fields, fpos)) = args.take("fields") else {
                    return Err(ParseError::at(pos, "table() needs its columns: table([a, b])"));
                };
                let fields = field_names(name, fields, fpos)?;
                let sortby = match args.take("sortby") {
                    None => vec!["@timestamp".to_owned()],
                    Some((value, spos)) => field_names(name, value, spos)?,
                };
                let by = sort_by(name, sortby, &mut args, pos)?;
                let limit = self.row_limit(name, &mut args)?;
                return Ok(vec![Step::Sort { by, limit }, Step::Select(fields)]);
            }
            "select" | "drop" => {
                let mut args = Args::new(name, args, &["fields"])?;
                let Some((fields, fpos)) = args.take("fields") else {
                    return Err(ParseError::at(pos, format!("{name}() needs fields: {name}([a, b])")));
                };
                let fields = field_names(name, fields, fpos)?;
                if lower == "select" { Step::Select(fields) } else { Step::Drop(fields) }
            }
            "rename" => {
                let mut args = Args::new(name, args, &["field", "as"])?;
                let Some((field, fpos)) = args.take("field") else {
                    return Err(ParseError::at(pos, "rename() needs a field: rename(field=a, as=b) or rename([[a, b], [c, d]])"));
                };
                let to = args.take_name(name, "as")?;
                let pairs = match (field, to) {
                    (ArgValue::Scalar(from), Some(to)) => vec![(from, to)],
                    (ArgValue::Scalar(_), None) => {
                        return Err(ParseError::at(pos, "rename(field=...) needs as=, the new name"));
                    }
                    (ArgValue::List(items), None) => {
                        let mut pairs = Vec::new();
                        for item in items {
                            match item {
                                ArgValue::List(pair) => match <[ArgValue; 2]>::try_from(pair) {
                                    Ok([ArgValue::Scalar(from), ArgValue::Scalar(to)]) => pairs.push((from, to)),
                                    _ => {
                                        return Err(ParseError::at(fpos, "rename([[a, b], ...]): each pair is [old, new]"));
                                    }
                                },
                                _ => {
                                    return Err(ParseError::at(fpos, "rename([[a, b], ...]): each pair is [old, new]"));
                                }
                            }
                        }
                        pairs
                    }
                    _ => {
                        return Err(ParseError::at(fpos, "rename(): give field=a, as=b, or a list of [old, new] pairs without as="));
                    }
                };
                Step::Rename(pairs)
            }
            "default" => {
                let mut args = Args::new(name, args, &["field", "value"])?;
                let Some((fields, fpos)) = args.take("field") else {
                    return Err(ParseError::at(pos, "default() needs field= (a name or a list)"));
                };
                let fields = field_names(name, fields, fpos)?;
                let Some(value) = args.take_name(name, "value")? else {
                    return Err(ParseError::at(pos, "default() needs value="));
                };
                Step::Default { fields, value }
            }
            "in" => {
                let mut args = Args::new(name, args, &["field", "values", "ignoreCase"])?;
                let field = args.take_name(name, "field")?.ok_or_else(|| ParseError::at(pos, "in() needs a field: in(field, values=[a, b])"))?;
                let ignore_case = args.take_bool(name, "ignoreCase")?.unwrap_or(false);
                let Some((values, vpos)) = args.take("values") else {
                    return Err(ParseError::at(pos, "in() needs values=[...]"));
                };
                let ArgValue::List(values) = values else {
                    return Err(ParseError::at(vpos, "in(values=...): values is a list, [a, b]"));
                };
                let mut terms = Vec::new();
                for value in values {
                    let ArgValue::Scalar(value) = value else {
                        return Err(ParseError::at(vpos, "in(values=[...]): each value is text, not a list or a function"));
                    };
                    let matcher = self.wildcard(&value, ignore_case, vpos)?;
                    terms.push(Filter::Field { name: field.clone(), matcher, negate: false });
                }
                Step::Filter(if terms.len() == 1 { terms.pop().expect("one") } else { Filter::Or(terms) })
            }
            "wildcard" => {
                let mut args = Args::new(name, args, &["pattern", "field", "ignoreCase"])?;
                let pattern = args.take_name(name, "pattern")?.ok_or_else(|| ParseError::at(pos, "wildcard() needs pattern="))?;
                let ignore_case = args.take_bool(name, "ignoreCase")?.unwrap_or(false);
                let field = args.take_name(name, "field")?;
                match field {
                    Some(field) => Step::Filter(Filter::Field { name: field, matcher: self.wildcard(&pattern, ignore_case, pos)?, negate: false }),
                    // No field: LogScale matches anywhere in @rawstring.
                    None => {
                        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
                        let flags = if ignore_case { "is" } else { "s" };
                        Step::Filter(Filter::FreeText(self.build(&format!("(?{flags}:{})", body.join(".*")), pos)?))
                    }
                }
            }
            "regex" => {
                let mut args = Args::new(name, args, &["regex", "field", "flags"])?;
                let pattern = args.take_name(name, "regex")?.ok_or_else(|| ParseError::at(pos, "regex() needs the regex: regex(\"...\")"))?;
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "@rawstring".into());
                let flags = args.take_name(name, "flags")?.unwrap_or_default();
                Step::Regex { field, regex: self.regex(&pattern, &flags, pos)? }
            }
            "replace" => {
                let mut args = Args::new(name, args, &["regex", "with", "field", "as", "flags"])?;
                let pattern = args.take_name(name, "regex")?.ok_or_else(|| ParseError::at(pos, "replace() needs the regex: replace(\"...\", with=\"...\")"))?;
                let flags = args.take_name(name, "flags")?.unwrap_or_default();
                let with = args.take_name(name, "with")?.unwrap_or_default();
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "@rawstring".into());
                let output = args.take_name(name, "as")?.unwrap_or_else(|| field.clone());
                Step::Replace { regex: self.regex(&pattern, &flags, pos)?, with, field, output }
            }
            "format" => {
                let mut args = Args::new(name, args, &["format", "field", "as"])?;
                let format = args.take_name(name, "format")?.ok_or_else(|| ParseError::at(pos, "format() needs a format: format(\"%s-%d\", field=[a, b])"))?;
                let fields = match args.take("field") {
                    Some((value, fpos)) => field_names(name, value, fpos)?,
                    None => Vec::new(),
                };
                let output = args.take_name(name, "as")?.unwrap_or_else(|| "_format".into());
                let conversions = check_format(&format).map_err(|e| ParseError::at(pos, format!("format(\"{format}\"): {e}")))?;
                if conversions != fields.len() {
                    return Err(ParseError::at(pos, format!("format(\"{format}\") has {conversions} conversions but field= names {} fields", fields.len())));
                }
                Step::Format { format, fields, output }
            }
            "formattime" => {
                let mut args = Args::new(name, args, &["format", "field", "as", "timezone", "unit"])?;
                let format =
                    args.take_name(name, "format")?.ok_or_else(|| ParseError::at(pos, "formatTime() needs a format: formatTime(\"%Y-%m-%d\", as=day)"))?;
                check_time_format(&format).map_err(|e| ParseError::at(pos, format!("formatTime(\"{format}\"): {e}")))?;
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "@timestamp".into());
                let Some(output) = args.take_name(name, "as")? else {
                    return Err(ParseError::at(pos, "formatTime() needs as=, the field it writes"));
                };
                if let Some(zone) = args.take_name(name, "timezone")?
                    && !["utc", "z", "gmt", "etc/utc", "+00:00"].contains(&zone.to_ascii_lowercase().as_str())
                {
                    return Err(ParseError::at(pos, format!("formatTime(timezone={zone}): only UTC is supported")));
                }
                let unit = match args.take_name(name, "unit")?.map(|u| u.to_ascii_lowercase()) {
                    None => TimeUnit::Auto,
                    Some(u) if u == "auto" => TimeUnit::Auto,
                    Some(u) if u == "milliseconds" => TimeUnit::Milliseconds,
                    Some(u) if u == "seconds" => TimeUnit::Seconds,
                    Some(u) => return Err(ParseError::at(pos, format!("formatTime(unit={u}): unit is auto, milliseconds or seconds"))),
                };
                Step::FormatTime { format, field, output, unit }
            }
            "parsejson" => {
                let mut args = Args::new(name, args, &["field", "prefix"])?;
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "@rawstring".into());
                let prefix = args.take_name(name, "prefix")?.unwrap_or_default();
                Step::ParseJson { field, prefix }
            }
            "kvparse" => {
                let mut args = Args::new(name, args, &["field", "separator", "override", "as"])?;
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "@rawstring".into());
                let separator = args.take_name(name, "separator")?.unwrap_or_else(|| "=".into());
                if separator.is_empty() {
                    return Err(ParseError::at(pos, "kvParse(separator=\"\"): the separator is at least one character"));
                }
                let overwrite = args.take_bool(name, "override")?.unwrap_or(false);
                let prefix = args.take_name(name, "as")?.map(|p| format!("{p}.")).unwrap_or_default();
                let sep = regex::escape(&separator);
                let pairs = format!(r#"([A-Za-z_@#][\w.\-\[\]]*)\s*{sep}(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\s,;"']*))"#);
                let Matcher::Regex(pairs) = self.build(&pairs, pos)? else { unreachable!("build makes a regex") };
                Step::KvParse { field, pairs, prefix, overwrite }
            }
            "split" => {
                let mut args = Args::new(name, args, &["field"])?;
                let field = args.take_name(name, "field")?.unwrap_or_else(|| "_events".into());
                Step::Split { field }
            }
            _ => return Err(ParseError::at(pos, format!("function {name}() is not supported; the query subset has {SUPPORTED_FUNCTIONS}"))),
        };
        Ok(vec![step])
    }

    /// `limit=` of head, tail, sort and table: LogScale's default 200, at most `max_rows`.
    fn row_limit(&self, name: &str, args: &mut Args) -> Result<usize, ParseError> {
        match args.take("limit") {
            Some((value, pos)) => self.limit(name, value, pos, self.limits.max_rows, "query.max_rows"),
            None => Ok(DEFAULT_ROW_LIMIT.min(self.limits.max_rows)),
        }
    }

    /// A `field=value` style pattern with LogScale's wildcard `*`, optionally any case.
    fn wildcard(&self, pattern: &str, ignore_case: bool, pos: usize) -> Result<Matcher, ParseError> {
        if !ignore_case {
            return self.anchored(pattern, pos);
        }
        let body: Vec<String> = pattern.split('*').map(regex::escape).collect();
        self.build(&format!("^(?is:{})$", body.join(".*")), pos)
    }

    /// The functions of `groupBy(function=...)`, `stats(...)`: one call or a list.
    fn agg_functions(&self, outer: &str, value: ArgValue, pos: usize) -> Result<Vec<AggFunction>, ParseError> {
        let calls = match value {
            ArgValue::List(items) => items,
            other => vec![other],
        };
        // `groupBy(x, function=[])`: only the distinct keys, as in LogScale.
        if calls.is_empty() && !outer.eq_ignore_ascii_case("groupby") {
            return Err(ParseError::at(pos, format!("{outer}(function=[]): give at least one function")));
        }
        let mut functions: Vec<AggFunction> = Vec::new();
        for call in calls {
            let ArgValue::Call(name, args) = call else {
                return Err(ParseError::at(pos, format!("{outer}(function=...): expected functions such as count() or avg(x), not a name")));
            };
            let function = self.agg_function(&name, args, pos)?;
            for output in function.outputs() {
                if functions.iter().any(|f| f.outputs().contains(&output)) {
                    return Err(ParseError::at(pos, format!("{outer}(): two functions write `{output}`; give one of them as=")));
                }
            }
            functions.push(function);
        }
        Ok(functions)
    }

    /// One aggregate function call: `count()`, `avg(x, as=y)`, `percentile(x, percentiles=[50])`.
    fn agg_function(&self, name: &str, args: Vec<Arg>, pos: usize) -> Result<AggFunction, ParseError> {
        let lower = name.to_ascii_lowercase();
        let (kind, default_output) = match lower.as_str() {
            "count" => {
                let mut args = Args::new(name, args, &["field", "distinct", "as"])?;
                let field = args.take_name(name, "field")?;
                let distinct = args.take_bool(name, "distinct")?.unwrap_or(false);
                if distinct && field.is_none() {
                    return Err(ParseError::at(pos, "count(distinct=true) needs the field whose values it counts: count(field, distinct=true)"));
                }
                let output = args.take_name(name, "as")?.unwrap_or_else(|| "_count".into());
                return Ok(AggFunction { kind: AggKind::Count { field, distinct }, output });
            }
            "sum" | "avg" | "min" | "max" => {
                let mut args = Args::new(name, args, &["field", "as"])?;
                let field = args.take_name(name, "field")?.ok_or_else(|| ParseError::at(pos, format!("{name}() needs a field: {name}(field)")))?;
                let output = args.take_name(name, "as")?.unwrap_or_else(|| format!("_{lower}"));
                let kind = match lower.as_str() {
                    "sum" => AggKind::Sum(field),
                    "avg" => AggKind::Avg(field),
                    "min" => AggKind::Min(field),
                    _ => AggKind::Max(field),
                };
                return Ok(AggFunction { kind, output });
            }
            "percentile" => {
                let mut args = Args::new(name, args, &["field", "percentiles", "as"])?;
                let field = args.take_name(name, "field")?.ok_or_else(|| ParseError::at(pos, "percentile() needs a field: percentile(field)"))?;
                let percentiles = match args.take("percentiles") {
                    None => vec![50.0, 75.0, 99.0],
                    Some((value, ppos)) => {
                        let items = match value {
                            ArgValue::List(items) => items,
                            other => vec![other],
                        };
                        let mut percentiles = Vec::new();
                        for item in items {
                            let p = match &item {
                                ArgValue::Scalar(text) => text.parse::<f64>().ok().filter(|p| (0.0..=100.0).contains(p)),
                                _ => None,
                            };
                            let Some(p) = p else {
                                return Err(ParseError::at(ppos, "percentile(percentiles=[...]): each percentile is a number from 0 to 100"));
                            };
                            percentiles.push(p);
                        }
                        if percentiles.is_empty() {
                            return Err(ParseError::at(ppos, "percentile(percentiles=[]): give at least one percentile"));
                        }
                        percentiles
                    }
                };
                (AggKind::Percentile { field, percentiles }, args.take_name(name, "as")?.unwrap_or_default())
            }
            "collect" => {
                let mut args = Args::new(name, args, &["fields", "limit", "separator", "multival"])?;
                let Some((fields, fpos)) = args.take("fields") else {
                    return Err(ParseError::at(pos, "collect() needs fields: collect([a, b])"));
                };
                let fields = field_names(name, fields, fpos)?;
                let limit = match args.take("limit") {
                    Some((value, lpos)) => self.limit(name, value, lpos, self.limits.max_aggregate_values, "query.max_aggregate_values")?,
                    None => 2000.min(self.limits.max_aggregate_values),
                };
                let separator = args.take_name(name, "separator")?.unwrap_or_else(|| "\n".into());
                if args.take_bool(name, "multival")? == Some(false) {
                    return Err(ParseError::at(pos, "collect(multival=false) (one row per value) is not supported; collect joins the values"));
                }
                let output = fields.join(",");
                return Ok(AggFunction { kind: AggKind::Collect { fields, limit, separator }, output });
            }
            "selectlast" => {
                let mut args = Args::new(name, args, &["fields"])?;
                let Some((fields, fpos)) = args.take("fields") else {
                    return Err(ParseError::at(pos, "selectLast() needs fields: selectLast([a, b])"));
                };
                let fields = field_names(name, fields, fpos)?;
                let output = fields.join(",");
                return Ok(AggFunction { kind: AggKind::SelectLast(fields), output });
            }
            _ => {
                let known = if FUNCTIONS.contains(&lower.as_str()) { " as an aggregate inside groupBy/stats" } else { "" };
                return Err(ParseError::at(
                    pos,
                    format!("function {name}() is not supported{known}; the aggregates are count, sum, avg, min, max, percentile, collect and selectLast"),
                ));
            }
        };
        Ok(AggFunction { kind, output: default_output })
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

/// Replaces each `?name` and `?{name=default}` with its argument as a quoted string.
fn fill_parameters(tokens: Vec<Token>, arguments: &BTreeMap<String, String>) -> Result<Vec<Token>, ParseError> {
    let value_of = |name: &str, default: Option<String>, pos: usize| match arguments.get(name).cloned().or(default) {
        Some(value) => Ok(value),
        None => Err(ParseError::at(
            pos,
            format!(
                "query parameter ?{name} has no value; send it in the request's \"arguments\": {{\"{name}\": \"...\"}}, or give a default: ?{{{name}=...}}"
            ),
        )),
    };
    tokens
        .into_iter()
        .map(|token| match token.tok {
            Tok::Param { name, default } => {
                let value = value_of(&name, default, token.pos)?;
                Ok(Token { tok: Tok::Str(value), ..token })
            }
            _ => Ok(token),
        })
        .collect()
}

fn is_supported_function(name: &str) -> bool {
    FUNCTIONS.contains(&name.to_ascii_lowercase().as_str())
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
        ArgValue::Call(inner, _) => {
            return Err(ParseError::at(pos, format!("{function}(): a field is a name, not the function {inner}()")));
        }
    };
    if names.is_empty() {
        return Err(ParseError::at(pos, format!("{function}(): the field list is empty")));
    }
    Ok(names)
}

/// The keys of `sort`/`table`: `order=` and `type=` are one value for every field or a
/// list with one per field (LogScale's defaults `desc` and `number`).
fn sort_by(function: &str, fields: Vec<String>, args: &mut Args, pos: usize) -> Result<Vec<SortBy>, ParseError> {
    let per_field = |param: &str, value: Option<(ArgValue, usize)>, default: &str| -> Result<Vec<(String, usize)>, ParseError> {
        let Some((value, vpos)) = value else { return Ok(vec![(default.to_owned(), pos); fields.len()]) };
        let items = match value {
            ArgValue::Scalar(text) => vec![text; fields.len()],
            ArgValue::List(items) if items.len() == fields.len() => items
                .into_iter()
                .map(|item| match item {
                    ArgValue::Scalar(text) => Ok(text),
                    _ => Err(ParseError::at(vpos, format!("{function}({param}=[...]): each is a word"))),
                })
                .collect::<Result<_, _>>()?,
            ArgValue::List(items) => {
                return Err(ParseError::at(
                    vpos,
                    format!("{function}({param}=[...]) has {} values for {} fields; give one, or one per field", items.len(), fields.len()),
                ));
            }
            ArgValue::Call(..) => return Err(ParseError::at(vpos, format!("{function}({param}=...): expected a word or a list"))),
        };
        Ok(items.into_iter().map(|text| (text, vpos)).collect())
    };
    let orders = per_field("order", args.take("order"), "desc")?;
    let kinds = per_field("type", args.take("type"), "number")?;
    let mut by = Vec::with_capacity(fields.len());
    for ((field, (order, opos)), (kind, kpos)) in fields.into_iter().zip(orders).zip(kinds) {
        let order = match order.to_ascii_lowercase().as_str() {
            "asc" | "ascending" => Order::Asc,
            "desc" | "descending" => Order::Desc,
            _ => return Err(ParseError::at(opos, format!("{function}(order={order}): order is asc or desc"))),
        };
        let kind = match kind.to_ascii_lowercase().as_str() {
            "number" | "any" => SortType::Number,
            "string" => SortType::String,
            "hex" => SortType::Hex,
            _ => return Err(ParseError::at(kpos, format!("{function}(type={kind}): type is number, string or hex"))),
        };
        by.push(SortBy { field, order, kind });
    }
    Ok(by)
}

/// Largest width or precision of a `format()` conversion.
const MAX_FORMAT_WIDTH: usize = 1000;

/// Checks a `format()` string; the number of conversions that take a field.
pub(crate) fn check_format(format: &str) -> Result<usize, String> {
    let mut conversions = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        while matches!(chars.peek(), Some('-')) {
            chars.next();
        }
        for part in ["width", "precision"] {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d as usize);
                chars.next();
            }
            if n > MAX_FORMAT_WIDTH {
                return Err(format!("a {part} of {n} is more than {MAX_FORMAT_WIDTH}"));
            }
            if part == "width" && chars.peek() == Some(&'.') {
                chars.next();
            } else {
                break;
            }
        }
        match chars.next() {
            Some('%') => {}
            Some('s' | 'S' | 'd' | 'i' | 'f' | 'x' | 'X' | 'e') => conversions += 1,
            Some(other) => return Err(format!("conversion %{other} is not supported (only %s %d %f %x %X %e %%)")),
            None => return Err("ends with a lone %".into()),
        }
    }
    Ok(conversions)
}

/// The `formatTime()` escapes the subset writes.
pub(crate) const TIME_ESCAPES: &str = "YymdeHIklMSLNpjaAbBhZzsQFTDR%";

fn check_time_format(format: &str) -> Result<(), String> {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some(e) if TIME_ESCAPES.contains(e) => {}
                Some(e) => {
                    return Err(format!(
                        "%{e} is not supported (the subset has %Y %y %m %d %e %H %I %k %l %M %S %L %N %p %j %a %A %b %B %h %Z %z %s %Q %F %T %D %R %%)"
                    ));
                }
                None => return Err("ends with a lone %".into()),
            }
        }
    }
    Ok(())
}

/// Whether a step passes events on one by one (what a `case` branch may hold).
pub fn is_streaming(step: &Step) -> bool {
    !matches!(step, Step::Head(_) | Step::Tail(_) | Step::Aggregate(_) | Step::Top { .. } | Step::TimeBuckets(_) | Step::Sort { .. })
}

fn step_name(step: &Step) -> &'static str {
    match step {
        Step::Head(_) => "head()",
        Step::Tail(_) => "tail()",
        Step::Aggregate(_) | Step::Top { .. } | Step::TimeBuckets(_) => "an aggregate",
        Step::Sort { .. } => "sort()",
        Step::Split { .. } => "split()",
        _ => "this step",
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
                        return Err(ParseError::at(
                            arg.pos,
                            format!("{function}(): parameter `{name}` is not supported (the subset has {})", params.join(", ")),
                        ));
                    }
                    name
                }
                None if index == 0 => params[0].to_owned(),
                None => {
                    return Err(ParseError::at(arg.pos, format!("{function}(): only the first argument may omit its name")));
                }
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

    /// A parameter that is one name or text (`as=`, `field=`, `value=`).
    fn take_name(&mut self, function: &str, name: &str) -> Result<Option<String>, ParseError> {
        match self.take(name) {
            None => Ok(None),
            Some((ArgValue::Scalar(text), _)) => Ok(Some(text)),
            Some((_, pos)) => Err(ParseError::at(pos, format!("{function}({name}=...): expected a name or text, not a list or a function"))),
        }
    }

    /// A `true`/`false` parameter.
    fn take_bool(&mut self, function: &str, name: &str) -> Result<Option<bool>, ParseError> {
        match self.take(name) {
            None => Ok(None),
            Some((ArgValue::Scalar(text), pos)) => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(ParseError::at(pos, format!("{function}({name}={text}): expected true or false"))),
            },
            Some((_, pos)) => Err(ParseError::at(pos, format!("{function}({name}=...): expected true or false"))),
        }
    }
}

#[cfg(test)]
mod tests;
