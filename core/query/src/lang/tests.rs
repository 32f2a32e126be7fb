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

fn show_kind(kind: &AggKind) -> String {
    match kind {
        AggKind::Count { field: None, .. } => "count".into(),
        AggKind::Count { field: Some(f), distinct: false } => format!("count({f})"),
        AggKind::Count { field: Some(f), distinct: true } => format!("count({f}, distinct)"),
        AggKind::Sum(f) => format!("sum({f})"),
        AggKind::Avg(f) => format!("avg({f})"),
        AggKind::Min(f) => format!("min({f})"),
        AggKind::Max(f) => format!("max({f})"),
        AggKind::Percentile { field, percentiles } => {
            format!("percentile({field}, {percentiles:?})")
        }
        AggKind::Collect { fields, limit, separator } => format!("collect({fields:?}, {limit}, {separator:?})"),
        AggKind::SelectLast(fields) => format!("selectLast({fields:?})"),
    }
}

/// A compact rendering of a step, to compare shapes.
fn show_step(step: &Step) -> String {
    match step {
        Step::Aggregate(a) => {
            let functions: Vec<String> = a.functions.iter().map(|f| format!("{}->{}", show_kind(&f.kind), f.outputs().join("+"))).collect();
            format!("agg([{}]; {}; {})", a.group_by.join(", "), functions.join(", "), a.limit)
        }
        Step::Top { aggregate, limit, percent, rest } => format!("top({}, {limit}, {percent}, {rest:?})", show_step(&Step::Aggregate(aggregate.clone()))),
        Step::Sort { by, limit } => {
            let keys: Vec<String> = by.iter().map(|b| format!("{} {:?} {:?}", b.field, b.order, b.kind)).collect();
            format!("sort([{}]; {limit})", keys.join(", "))
        }
        Step::Filter(f) => show(f),
        Step::Case(branches) => {
            let branches: Vec<String> = branches.iter().map(|b| b.iter().map(show_step).collect::<Vec<_>>().join(" | ")).collect();
            format!("case{{{}}}", branches.join("; "))
        }
        Step::Regex { field, regex } => format!("regex({field}, /{}/)", regex.as_str()),
        other => format!("{other:?}"),
    }
}

fn steps(input: &str) -> String {
    ok(input).steps.iter().map(show_step).collect::<Vec<_>>().join(" | ")
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
    let table = [
        ("head()", "Head(200)"),
        ("head(10)", "Head(10)"),
        ("head(limit=10)", "Head(10)"),
        ("tail()", "Tail(200)"),
        ("tail(5)", "Tail(5)"),
        ("sort()", "sort([_count Desc Number]; 200)"),
        ("sort(latency)", "sort([latency Desc Number]; 200)"),
        ("sort(field=latency, order=asc, limit=3)", "sort([latency Asc Number]; 3)"),
        ("sort(@timestamp, order=desc, limit=max)", "sort([@timestamp Desc Number]; 10000)"),
        ("sort([x])", "sort([x Desc Number]; 200)"),
        ("sort([a, b], order=asc)", "sort([a Asc Number, b Asc Number]; 200)"),
        ("sort([a, b], order=[asc, desc], type=[string, hex])", "sort([a Asc String, b Desc Hex]; 200)"),
    ];
    for (input, expected) in table {
        assert_eq!(steps(input), expected, "{input}");
    }

    let query = ok("error status=500 | groupBy(host) | sort(_count, limit=5) | head(2)");
    assert_eq!(query.steps.len(), 4);
    assert!(matches!(query.steps[0], Step::Filter(Filter::And(_))));
    assert!(matches!(query.steps[3], Step::Head(2)));
    let query = ok("head(5) | error");
    assert!(matches!(query.steps[1], Step::Filter(Filter::FreeText(_))));
}

#[test]
fn aggregates_parse_with_logscale_names() {
    let table = [
        ("count()", "agg([]; count->_count; 1)"),
        ("Count()", "agg([]; count->_count; 1)"),
        ("count(host)", "agg([]; count(host)->_count; 1)"),
        ("count(field=host, distinct=true, as=hosts)", "agg([]; count(host, distinct)->hosts; 1)"),
        ("sum(bytes)", "agg([]; sum(bytes)->_sum; 1)"),
        ("avg(field=latency, as=mean)", "agg([]; avg(latency)->mean; 1)"),
        ("min(x)", "agg([]; min(x)->_min; 1)"),
        ("max(x)", "agg([]; max(x)->_max; 1)"),
        ("percentile(x)", "agg([]; percentile(x, [50.0, 75.0, 99.0])->_50+_75+_99; 1)"),
        ("percentile(x, percentiles=[50, 99.9], as=p)", "agg([]; percentile(x, [50.0, 99.9])->p_50+p_99.9; 1)"),
        ("stats([count(), avg(x)])", "agg([]; count->_count, avg(x)->_avg; 1)"),
        ("stats(function=max(x))", "agg([]; max(x)->_max; 1)"),
        ("[count(), sum(x)]", "agg([]; count->_count, sum(x)->_sum; 1)"),
        ("groupBy(host)", "agg([host]; count->_count; 20000)"),
        ("groupby(host)", "agg([host]; count->_count; 20000)"),
        ("groupBy([host])", "agg([host]; count->_count; 20000)"),
        ("groupBy(field=host)", "agg([host]; count->_count; 20000)"),
        ("groupBy(field=[a, b], limit=5)", "agg([a, b]; count->_count; 5)"),
        ("groupBy(#host, function=count())", "agg([#host]; count->_count; 20000)"),
        ("groupBy(a, function=[count()], limit=max)", "agg([a]; count->_count; 20000)"),
        ("groupBy([a, b], function=[count(), avg(x), max(y, as=top)])", "agg([a, b]; count->_count, avg(x)->_avg, max(y)->top; 20000)"),
        ("groupBy(a, function=sum(x))", "agg([a]; sum(x)->_sum; 20000)"),
        ("groupBy(a, function=[])", "agg([a]; ; 20000)"),
        ("top(url)", "top(agg([url]; count->_count; 20000), 10, false, None)"),
        ("top(url, sum=bytes, percent=true, rest=others)", "top(agg([url]; sum(bytes)->_sum; 20000), 10, true, Some(\"others\"))"),
        ("top(url, max=ms)", "top(agg([url]; max(ms)->_max; 20000), 10, false, None)"),
        ("collect(x)", "agg([]; collect([\"x\"], 2000, \"\\n\")->x; 1)"),
        (
            "groupBy(h, function=[collect([x, y], limit=5, separator=\",\"), selectLast(z)])",
            "agg([h]; collect([\"x\", \"y\"], 5, \",\")->x+y, selectLast([\"z\"])->z; 20000)",
        ),
        ("top([a, b], limit=3, as=n)", "top(agg([a, b]; count->n; 20000), 3, false, None)"),
    ];
    for (input, expected) in table {
        assert_eq!(steps(input), expected, "{input}");
    }
}

#[test]
fn field_steps_and_expressions_parse() {
    let table = [
        ("x := 5", "Assign { field: \"x\", expr: Num(5.0) }"),
        ("x := a + b * 2", "Assign { field: \"x\", expr: Arith('+', Field(\"a\"), Arith('*', Field(\"b\"), Num(2.0))) }"),
        ("x := (a + b) / -2", "Assign { field: \"x\", expr: Arith('/', Arith('+', Field(\"a\"), Field(\"b\")), Neg(Num(2.0))) }"),
        ("x := a/b", "Assign { field: \"x\", expr: Arith('/', Field(\"a\"), Field(\"b\")) }"),
        ("x := \"text\"", "Assign { field: \"x\", expr: Str(\"text\") }"),
        ("x := true", "Assign { field: \"x\", expr: Str(\"true\") }"),
        ("eval(x = a - 1)", "Assign { field: \"x\", expr: Arith('-', Field(\"a\"), Num(1.0)) }"),
        ("eval(x = 1, y = 2)", "Assign { field: \"x\", expr: Num(1.0) } | Assign { field: \"y\", expr: Num(2.0) }"),
        ("test(a > 1 and b == \"x\")", "Test(And([Cmp(Gt, Field(\"a\"), Num(1.0)), Cmp(Eq, Field(\"b\"), Str(\"x\"))]))"),
        ("test(not a < 1 OR b != c)", "Test(Or([Not(Cmp(Lt, Field(\"a\"), Num(1.0))), Cmp(Ne, Field(\"b\"), Field(\"c\"))]))"),
        (
            "x := if(a >= 500, then=\"bad\", else=\"ok\")",
            "Assign { field: \"x\", expr: If { cond: Cmp(Ge, Field(\"a\"), Num(500.0)), then: Str(\"bad\"), otherwise: Str(\"ok\") } }",
        ),
        ("x := concat([a, \"-\", b])", "Assign { field: \"x\", expr: Concat([Field(\"a\"), Str(\"-\"), Field(\"b\")]) }"),
        ("n := count()", "agg([]; count->n; 1)"),
        ("t := formatTime(\"%H\", field=ts)", "FormatTime { format: \"%H\", field: \"ts\", output: \"t\", unit: Auto }"),
        (
            "x := lower(a) | y := length(concat([a, b]))",
            "Assign { field: \"x\", expr: Lower(Field(\"a\")) } | Assign { field: \"y\", expr: Length(Concat([Field(\"a\"), Field(\"b\")])) }",
        ),
        ("x := coalesce([a, \"none\"])", "Assign { field: \"x\", expr: Coalesce([Field(\"a\"), Str(\"none\")]) }"),
        ("default(field=x, value=none)", "Default { fields: [\"x\"], value: \"none\" }"),
        ("default(field=[x, y], value=\"-\")", "Default { fields: [\"x\", \"y\"], value: \"-\" }"),
        ("select([a, b])", "Select([\"a\", \"b\"])"),
        ("drop([a])", "Drop([\"a\"])"),
        ("rename(field=a, as=b)", "Rename([(\"a\", \"b\")])"),
        ("rename([[a, b], [c, d]])", "Rename([(\"a\", \"b\"), (\"c\", \"d\")])"),
        ("table([a, b])", "sort([@timestamp Desc Number]; 200) | Select([\"a\", \"b\"])"),
        ("table([a], sortby=n, order=asc, limit=5)", "sort([n Asc Number]; 5) | Select([\"a\"])"),
        ("table([a], sortby=[n, m], order=[asc, desc])", "sort([n Asc Number, m Desc Number]; 200) | Select([\"a\"])"),
        ("in(status, values=[200, \"4*\"])", "or(status=\"200\", status=/^(?s:4.*)$/)"),
        ("in(field=m, values=[get], ignoreCase=true)", "m=/^(?is:get)$/"),
        ("wildcard(field=url, pattern=\"*api*\")", "url=/^(?s:.*api.*)$/"),
        ("wildcard(pattern=err*, ignoreCase=true)", "text(/(?is:err.*)/)"),
        ("regex(\"user=(?<user>\\w+)\")", "regex(@rawstring, /user=(?<user>\\w+)/)"),
        ("regex(\"x\", field=msg, flags=i)", "regex(msg, /(?i)x/)"),
        ("case { a | x := 1 ; * | x := 2 }", "case{text(/(?is:a)/) | Assign { field: \"x\", expr: Num(1.0) }; * | Assign { field: \"x\", expr: Num(2.0) }}"),
        ("case { status>=500 ; status=2* ; }", "case{statusGe500; status=/^(?s:2.*)$/}"),
        ("s match { 200 => x := 1 ; /^5/i => * ; * => * }", "case{s=\"200\" | Assign { field: \"x\", expr: Num(1.0) }; s=/(?i)^5/ | *; * | *}"),
        ("a <> 1", "a!=\"1\""),
        ("// a comment\n#repo=web // another\n| count()", "#repo=\"web\" | agg([]; count->_count; 1)"),
        (
            "x := 1 | y := x * 2 | test(y > 1)",
            "Assign { field: \"x\", expr: Num(1.0) } | Assign { field: \"y\", expr: Arith('*', Field(\"x\"), Num(2.0)) } | Test(Cmp(Gt, Field(\"y\"), Num(1.0)))",
        ),
    ];
    for (input, expected) in table {
        assert_eq!(steps(input), expected, "{input}");
    }
}

#[test]
fn unsupported_forms_name_the_part() {
    let table = [
        ("parseTimestamp(x)", "function parseTimestamp() is not supported"),
        ("timechart(minSpan=1h)", "timechart(minSpan=...) is not supported"),
        ("error | join(x)", "function join() is not supported"),
        ("a b := 5", "must be a pipeline step of its own"),
        ("a == b", "`==` is not supported"),
        ("a { b }", "`{` outside `case"),
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
        ("count(distinct=true)", "count(distinct=true) needs the field"),
        ("count(x, distinct=maybe)", "expected true or false"),
        ("count(x, unique=true)", "parameter `unique` is not supported"),
        ("sum()", "sum() needs a field"),
        ("avg([a, b])", "expected a name or text"),
        ("percentile(x, percentiles=[fifty])", "a number from 0 to 100"),
        ("percentile(x, percentiles=[101])", "a number from 0 to 100"),
        ("stats()", "stats() needs functions"),
        ("stats([count(), x])", "expected functions such as count()"),
        ("in(status, values=200)", "values is a list"),
        ("in(status)", "in() needs values="),
        ("wildcard(field=x)", "wildcard() needs pattern="),
        ("regex(\"(\")", "bad regex"),
        ("regex(\"x\", flags=g)", "regex flag `g` is not supported"),
        ("test(a = 1)", "use `==`"),
        ("test(a > )", "expected a field, a number"),
        ("x := foo(1)", "function foo() is not supported in an expression"),
        ("x := format(\"%s\", field=a, as=y)", "already names the field; leave out as="),
        ("x := upper(a, b)", "expected `)` after upper(...)"),
        ("x := if(a > 1, then=1)", "if() needs both then= and else="),
        ("eval(x)", "eval() takes `field = expression`"),
        ("case { a | head(1) }", "a case branch can only filter and set fields, not head()"),
        ("case { a", "expected `;` or `}` after a case branch"),
        ("x match { 1 => y := 2 ", "expected `;` or `}` after a match clause"),
        ("x match { 1 y := 2 }", "expected `=>` after the match clause's pattern"),
        ("x match { (a) => * }", "expected a match clause"),
        ("x match { 1 => tail(3) }", "a match clause can only filter and set fields, not tail()"),
        ("rename(a)", "needs as="),
        ("select()", "select() needs fields"),
        ("default(field=x)", "default() needs value="),
        ("table([a], order=up)", "order is asc or desc"),
        ("top()", "top() needs a field"),
        ("top(x, sum=a, max=b)", "give sum= or max=, not both"),
        ("top(x, percent=yes)", "expected true or false"),
        ("format(\"%s %s\", field=a)", "has 2 conversions but field= names 1 fields"),
        ("format(\"%q\", field=a)", "conversion %q is not supported"),
        ("format(field=a)", "format() needs a format"),
        ("format(\"%999999999999999999999s\", field=a)", "a width of 18446744073709551615 is more than 1000"),
        ("format(\"%.1001f\", field=a)", "a precision of 1001 is more than 1000"),
        ("formatTime(\"%Y\")", "formatTime() needs as="),
        ("formatTime(\"%Q %v\", as=t)", "%v is not supported"),
        ("formatTime(\"%Y\", as=t, timezone=\"Europe/Oslo\")", "only UTC is supported"),
        ("formatTime(\"%Y\", as=t, unit=hours)", "unit is auto, milliseconds or seconds"),
        ("replace(with=x)", "replace() needs the regex"),
        ("replace(\"(\", with=x)", "bad regex"),
        ("kvParse(separator=\"\")", "the separator is at least one character"),
        ("collect()", "collect() needs fields"),
        ("collect(x, multival=false)", "multival=false"),
        ("collect(x, limit=0)", "between 1 and"),
        ("selectLast()", "selectLast() needs fields"),
        ("case { split(x) }", "a case branch can only filter and set fields, not split()"),
        ("groupBy(a, function=[collect(x), selectLast(x)])", "two functions write `x`"),
        ("groupBy()", "groupBy() needs a field"),
        ("groupBy([])", "field list is empty"),
        ("groupBy(a, function=head())", "function head() is not supported as an aggregate"),
        ("groupBy(a, function=[count(), count()])", "two functions write `_count`; give one of them as="),
        ("groupBy(a, function=[percentile(x), percentile(y)])", "two functions write `_50`"),
        ("stats(function=[])", "give at least one function"),
        ("groupBy(a, limit=20001)", "query.max_groups"),
        ("sort(a, order=up)", "order is asc or desc"),
        ("sort([a, b], order=[asc])", "has 1 values for 2 fields"),
        ("sort(a, type=date)", "type is number, string or hex"),
        ("sort(a, order=[up])", "order is asc or desc"),
        ("groupBy(a b)", "expected `,` or `)`"),
    ];
    for (input, expected) in table {
        let message = err(input);
        assert!(message.contains(expected), "{input:?}: {message:?} should contain {expected:?}");
        assert!(message.contains("at character"), "{input:?}: {message:?} should say where");
    }
}

#[test]
fn nesting_and_expression_size_are_capped() {
    // Within the caps.
    ok(&format!("{}a{}", "(".repeat(60), ")".repeat(60)));
    ok(&format!("x := {}1", "a + ".repeat(300)));
    // Past them: a 400, not a stack overflow.
    let deep = |open: &str, close: &str| format!("{}a{}", open.repeat(100_000), close.repeat(100_000));
    for query in [
        deep("(", ")"),
        format!("x := {}", deep("(", ")")),
        format!("x := {}", deep("if(", ", then=1, else=2)")),
        format!("groupBy({})", deep("[", "]")),
        format!("{}a", "not ".repeat(100_000)),
        format!("x := {}a", "-".repeat(100_000)),
        format!("x := {}a", "not ".repeat(100_000)),
        format!("test({}1)", "a * ".repeat(50_000)),
        format!("{}a{}", "case { ".repeat(10_000), " }".repeat(10_000)),
    ] {
        let error = err(&query);
        assert!(error.contains("levels deep") || error.contains("`not`s in a row") || error.contains("parts"), "{}...: {error}", &query[..40]);
    }
}

#[test]
fn limits_come_from_the_config() {
    let limits = Limits { max_rows: 50, max_groups: 7, ..Limits::default() };
    assert!(matches!(parse("head()", &limits).unwrap().steps[0], Step::Head(50)));
    assert!(matches!(parse("sort(x, limit=max)", &limits).unwrap().steps[0], Step::Sort { limit: 50, .. }));
    assert!(matches!(&parse("groupBy(x)", &limits).unwrap().steps[0], Step::Aggregate(a) if a.limit == 7));
    assert!(parse("head(51)", &limits).unwrap_err().message.contains("between 1 and 50"));
    // A regex bigger than the compiled size limit is refused, not built.
    let tiny = Limits { regex_size_limit: 100, ..Limits::default() };
    for query in ["msg=/a{1000}{1000}/", "regex(\"a{1000}{1000}\")", "/(?<big>a{1000}{1000})/", "in(x, values=[\"a*b*\"], ignoreCase=true)"] {
        let error = parse(query, &Limits { regex_size_limit: 20, ..tiny.clone() }).unwrap_err().message;
        assert!(error.contains("bad regex") && error.contains("size limit"), "{query}: {error}");
    }
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

#[test]
fn parameters_take_their_arguments_as_values() {
    let arguments: BTreeMap<String, String> =
        [("code", "500"), ("host", "a b"), ("q", "x | count()")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let with = |input: &str| parse_with_arguments(input, &Limits::default(), &arguments);
    let shown = |input: &str| with(input).unwrap_or_else(|e| panic!("{input}: {e}")).steps.iter().map(show_step).collect::<Vec<_>>().join(" | ");
    let table = [
        ("status=?code", "status=\"500\""),
        ("#host=?host", "#host=\"a b\""),
        // A value is never query syntax.
        ("?q", "text(/(?is:x \\| count\\(\\))/)"),
        ("status=?{code=200}", "status=\"500\""),
        ("status=?{missing=200}", "status=\"200\""),
        ("status=?{missing=\"2*\"}", "status=/^(?s:2.*)$/"),
        ("head(?{n=3})", "Head(3)"),
        ("x := ?code", "Assign { field: \"x\", expr: Str(\"500\") }"),
        ("in(status, values=[?code, 404])", "or(status=\"500\", status=\"404\")"),
        ("x := ?{n=1} * 2", "Assign { field: \"x\", expr: Arith('*', Str(\"1\"), Num(2.0)) }"),
        ("case { a | x := ?{n = \"b c\"} ; * }", "case{text(/(?is:a)/) | Assign { field: \"x\", expr: Str(\"b c\") }; *}"),
    ];
    for (input, expected) in table {
        assert_eq!(shown(input), expected, "{input}");
    }
    for (input, expected) in
        [("status=?nothing", "query parameter ?nothing has no value"), ("status=?{code}", "?{name=default}"), ("status=?{code=1", "closed with }")]
    {
        let error = with(input).unwrap_err().message;
        assert!(error.contains(expected), "{input}: {error}");
    }
    // Without arguments, a parameter without a default is refused by name.
    assert!(parse("a=?b", &Limits::default()).unwrap_err().message.contains("?b has no value"));
}
