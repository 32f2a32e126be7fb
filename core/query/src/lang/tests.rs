//! Each supported form parses to what it means; each unsupported one is refused with a
//! message naming the part.

use super::*;

fn ok(input: &str) -> Query {
    parse(input, &Limits::default()).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
}

fn err(input: &str) -> String {
    match parse(input, &Limits::default()) {
        Ok(q) => panic!("{input:?} should be refused, parsed as {q:?}"),
        Err(e) => e.message,
    }
}

/// A compact rendering of a filter, to compare shapes.
fn show(filter: &Filter) -> String {
    match filter {
        Filter::All => "*".into(),
        Filter::And(terms) => format!("and({})", terms.iter().map(show).collect::<Vec<_>>().join(", ")),
        Filter::Or(terms) => format!("or({})", terms.iter().map(show).collect::<Vec<_>>().join(", ")),
        Filter::Not(inner) => format!("not({})", show(inner)),
        Filter::FreeText(m) => format!("text({})", show_matcher(m)),
        Filter::Field { name, matcher, negate } => format!("{name}{}{}", if *negate { "!=" } else { "=" }, show_matcher(matcher)),
        Filter::Compare { name, op, value } => format!("{name}{op:?}{value}"),
    }
}

fn show_matcher(m: &Matcher) -> String {
    match m {
        Matcher::Present => "present".into(),
        Matcher::Exact(s) => format!("{s:?}"),
        Matcher::Regex(r) => format!("/{}/", r.as_str()),
    }
}

fn filter(input: &str) -> String {
    let query = ok(input);
    assert_eq!(query.steps.len(), 1, "{input}");
    match &query.steps[0] {
        Step::Filter(f) => show(f),
        other => panic!("{input}: not a filter: {other:?}"),
    }
}

#[test]
fn filters_parse_to_their_meaning() {
    let table = [
        ("", "*"),
        ("*", "*"),
        ("error", "text(/(?is:error)/)"),
        ("\"two words\"", "text(/(?is:two words)/)"),
        ("foo*bar", "text(/(?is:foo.*bar)/)"),
        ("/err(or)?/i", "text(/(?i)err(or)?/)"),
        ("status=200", "status=\"200\""),
        ("status = 200", "status=\"200\""),
        ("status!=200", "status!=\"200\""),
        ("method=\"GET\"", "method=\"GET\""),
        ("\"field with space\"=x", "field with space=\"x\""),
        ("url=*index*", "url=/^(?s:.*index.*)$/"),
        ("host=*", "host=present"),
        ("host!=*", "host!=present"),
        ("path=/^\\/api/", "path=/^/api/"),
        ("msg=/timeout/i", "msg=/(?i)timeout/"),
        ("@rawstring=/x/", "@rawstring=/x/"),
        ("#repo=web", "#repo=\"web\""),
        ("#host=h1", "#host=\"h1\""),
        ("@timestamp>1000", "@timestampGt1000"),
        ("@error=true", "@error=\"true\""),
        ("user.name=ann", "user.name=\"ann\""),
        ("user.roles[0]=admin", "user.roles[0]=\"admin\""),
        ("latency >= 1.5", "latencyGe1.5"),
        ("a < 3", "aLt3"),
        ("a <= 3", "aLe3"),
        ("a > -3", "aGt-3"),
        // Implicit and; `or` binds tighter than `and` (LogScale's grammar).
        ("a b", "and(text(/(?is:a)/), text(/(?is:b)/))"),
        ("a and b or c", "and(text(/(?is:a)/), or(text(/(?is:b)/), text(/(?is:c)/)))"),
        ("a or b and c", "and(or(text(/(?is:a)/), text(/(?is:b)/)), text(/(?is:c)/))"),
        ("a OR b AND c", "and(or(text(/(?is:a)/), text(/(?is:b)/)), text(/(?is:c)/))"),
        ("(a and b) or c", "or(and(text(/(?is:a)/), text(/(?is:b)/)), text(/(?is:c)/))"),
        ("not a or b", "or(not(text(/(?is:a)/)), text(/(?is:b)/))"),
        ("!a", "not(text(/(?is:a)/))"),
        ("not not a", "not(not(text(/(?is:a)/)))"),
        ("not (status=200 or status=404)", "not(or(status=\"200\", status=\"404\"))"),
        ("a // a comment\n b", "and(text(/(?is:a)/), text(/(?is:b)/))"),
        ("a /* block */ b", "and(text(/(?is:a)/), text(/(?is:b)/))"),
        // LogScale's slash quirk: a `/` inside a word is text, at its start a regex.
        ("GET https://example.com/x", "and(text(/(?is:GET)/), text(/(?is:https://example\\.com/x)/))"),
    ];
    for (input, expected) in table {
        assert_eq!(filter(input), expected, "{input}");
    }
}

#[test]
fn functions_parse_with_logscale_defaults() {
    let steps = |input: &str| format!("{:?}", ok(input).steps);
    assert_eq!(steps("head()"), "[Head(200)]");
    assert_eq!(steps("head(10)"), "[Head(10)]");
    assert_eq!(steps("head(limit=10)"), "[Head(10)]");
    assert_eq!(steps("tail()"), "[Tail(200)]");
    assert_eq!(steps("tail(5)"), "[Tail(5)]");
    assert_eq!(steps("count()"), "[Count]");
    assert_eq!(steps("Count()"), "[Count]");
    assert_eq!(steps("groupBy(host)"), "[GroupBy { fields: [\"host\"], limit: 20000 }]");
    assert_eq!(steps("groupby(host)"), "[GroupBy { fields: [\"host\"], limit: 20000 }]");
    assert_eq!(steps("groupBy([host])"), "[GroupBy { fields: [\"host\"], limit: 20000 }]");
    assert_eq!(steps("groupBy(field=host)"), "[GroupBy { fields: [\"host\"], limit: 20000 }]");
    assert_eq!(steps("groupBy(field=[a, b], limit=5)"), "[GroupBy { fields: [\"a\", \"b\"], limit: 5 }]");
    assert_eq!(steps("groupBy(#host, function=count())"), "[GroupBy { fields: [\"#host\"], limit: 20000 }]");
    assert_eq!(steps("groupBy(a, function=[count()], limit=max)"), "[GroupBy { fields: [\"a\"], limit: 20000 }]");
    assert_eq!(steps("sort()"), "[Sort { field: \"_count\", order: Desc, limit: 200 }]");
    assert_eq!(steps("sort(latency)"), "[Sort { field: \"latency\", order: Desc, limit: 200 }]");
    assert_eq!(steps("sort(field=latency, order=asc, limit=3)"), "[Sort { field: \"latency\", order: Asc, limit: 3 }]");
    assert_eq!(steps("sort(@timestamp, order=desc, limit=max)"), "[Sort { field: \"@timestamp\", order: Desc, limit: 10000 }]");
    assert_eq!(steps("sort([x])"), "[Sort { field: \"x\", order: Desc, limit: 200 }]");

    let query = ok("error status=500 | groupBy(host) | sort(_count, limit=5) | head(2)");
    assert_eq!(query.steps.len(), 4);
    assert!(matches!(query.steps[0], Step::Filter(Filter::And(_))));
    assert!(matches!(query.steps[3], Step::Head(2)));
    let query = ok("head(5) | error");
    assert!(matches!(query.steps[1], Step::Filter(Filter::FreeText(_))));
}

#[test]
fn unsupported_forms_name_the_part() {
    let table = [
        ("regex(\"x\")", "function regex() is not supported"),
        ("timechart()", "function timechart() is not supported"),
        ("error | stats(count())", "function stats() is not supported"),
        ("x := 5", "`:=` is not supported"),
        ("a := b", "`:=` is not supported"),
        ("a == b", "`==` is not supported"),
        ("case { a; b }", "`{`"),
        ("foo head(3)", "head() must be a pipeline step of its own"),
        ("foo | ", "empty pipeline step"),
        ("| foo", "empty pipeline step"),
        ("a || b", "empty pipeline step"),
        ("(a", "expected `)`"),
        ("a)", "unexpected `)`"),
        ("()", "empty parentheses"),
        ("\"open", "not closed"),
        ("/open", "not closed"),
        ("a /* open", "not closed"),
        ("a=", "expected a value after `a`"),
        ("a=(b)", "expected a value after `a`"),
        ("a < x", "compared with <, <=, >, >= to a number"),
        ("msg=/x/g", "regex flag `g` is not supported"),
        ("msg=/(/", "bad regex"),
        ("and", "needs a filter on each side"),
        ("a or", "expected a filter"),
        ("not", "expected a filter"),
        ("head(0)", "between 1 and 10000"),
        ("head(10001)", "between 1 and 10000 (query.max_rows)"),
        ("head(ten)", "whole number or `max`"),
        ("head(10, 20)", "only the first argument may omit its name"),
        ("head(limit=1, limit=2)", "`limit` is given twice"),
        ("tail(foo=1)", "parameter `foo` is not supported"),
        ("count(host)", "count(): a field argument is not supported"),
        ("count(distinct=true)", "parameter `distinct` is not supported"),
        ("groupBy()", "groupBy() needs a field"),
        ("groupBy([])", "field list is empty"),
        ("groupBy(a, function=sum(x))", "only count() is supported"),
        ("groupBy(a, function=[count(), max(x)])", "only count() is supported, once"),
        ("groupBy(a, limit=20001)", "query.max_groups"),
        ("sort(a, order=up)", "order is asc or desc"),
        ("sort(a, type=number)", "parameter `type` is not supported"),
        ("sort([a, b])", "several fields is not supported"),
        ("groupBy(a b)", "expected `,` or `)`"),
    ];
    for (input, expected) in table {
        let message = err(input);
        assert!(message.contains(expected), "{input:?}: {message:?} should contain {expected:?}");
        assert!(message.contains("at character"), "{input:?}: {message:?} should say where");
    }
}

#[test]
fn limits_come_from_the_config() {
    let limits = Limits { max_rows: 50, max_groups: 7, regex_size_limit: 1 << 20 };
    assert!(matches!(parse("head()", &limits).unwrap().steps[0], Step::Head(50)));
    assert!(matches!(parse("sort(x, limit=max)", &limits).unwrap().steps[0], Step::Sort { limit: 50, .. }));
    assert!(matches!(parse("groupBy(x)", &limits).unwrap().steps[0], Step::GroupBy { limit: 7, .. }));
    assert!(parse("head(51)", &limits).unwrap_err().message.contains("between 1 and 50"));
    // A regex bigger than the compiled size limit is refused, not built.
    let tiny = Limits { regex_size_limit: 100, ..Limits::default() };
    let error = parse("msg=/a{1000}{1000}/", &tiny).unwrap_err().message;
    assert!(error.contains("bad regex"), "{error}");
}

#[test]
fn matchers_match_as_logscale() {
    let text = |q: &str| match &ok(q).steps[0] {
        Step::Filter(Filter::FreeText(m)) => m.clone(),
        other => panic!("{other:?}"),
    };
    let field = |q: &str| match &ok(q).steps[0] {
        Step::Filter(Filter::Field { matcher, .. }) => matcher.clone(),
        other => panic!("{other:?}"),
    };
    // Free text: anywhere, any case, `*` for anything, regex characters literal.
    assert!(text("error").is_match("An ERROR happened"));
    assert!(!text("error").is_match("all fine"));
    assert!(text("\"a.b\"").is_match("x a.b y"));
    assert!(!text("\"a.b\"").is_match("x axb y"));
    assert!(text("time*out").is_match("TIME went out"));
    // field=value: the whole value, case-sensitive.
    assert!(field("m=GET").is_match("GET"));
    assert!(!field("m=GET").is_match("get"));
    assert!(!field("m=GET").is_match("GETS"));
    assert!(field("p=\"/api/*\"").is_match("/api/users"));
    assert!(!field("p=\"/api/*\"").is_match("/v2/api/users"));
    assert!(field("p=*users").is_match("/api/users"));
    // Regexes are unanchored; /i ignores case.
    assert!(field("m=/ET/").is_match("GET"));
    assert!(field("m=/get/i").is_match("GET"));
    assert!(!field("m=/get/").is_match("GET"));
}
