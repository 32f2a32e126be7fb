//! Evaluation of filters and steps over hand-made events.

use serde_json::{Value, json};

use super::*;
use crate::lang::{Limits, parse};

fn event(n: u64, host: Option<&str>, status: &str, raw: &str) -> Event {
    let mut e = json!({"@timestamp": 1_000 + n, "@rawstring": raw, "@id": format!("0-{n}-0"), "#repo": "web", "status": status, "n": n.to_string()});
    if let Some(host) = host {
        e["#host"] = Value::String(host.into());
    }
    e.as_object().unwrap().clone()
}

fn events() -> Vec<Event> {
    vec![
        event(1, Some("a"), "200", "GET /index.html 200 ok"),
        event(2, Some("b"), "500", "POST /api ERROR 500 timeout"),
        event(3, Some("a"), "404", "GET /missing 404"),
        event(4, None, "200", "GET /health 200 ok"),
        event(5, Some("b"), "500", "GET /api error 500"),
        event(6, Some("c"), "200", "GET /index.html 200 ok"),
    ]
}

/// Runs `query` over [`events`] as the reader does, and how many were pushed.
fn run(query: &str) -> (Vec<Event>, usize) {
    let query = parse(query, &Limits::default()).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    let mut pushed = 0;
    for e in events() {
        pushed += 1;
        pipeline.push(e, &mut out).unwrap();
        if !pipeline.wants_more() {
            break;
        }
    }
    pipeline.finish(&mut out).unwrap();
    (out, pushed)
}

fn ids(out: &[Event]) -> Vec<u64> {
    out.iter().map(|e| e["n"].as_str().unwrap().parse().unwrap()).collect()
}

#[test]
fn filters_select_the_events() {
    let table: &[(&str, &[u64])] = &[
        ("", &[1, 2, 3, 4, 5, 6]),
        ("error", &[2, 5]),
        ("ERROR 500", &[2, 5]),
        ("\"error 500\"", &[2, 5]),
        ("\"error 500 timeout\"", &[2]),
        ("status=200", &[1, 4, 6]),
        ("status!=200", &[2, 3, 5]),
        ("#host=a", &[1, 3]),
        ("#host!=a", &[2, 4, 5, 6]),
        ("#host=*", &[1, 2, 3, 5, 6]),
        ("#host!=*", &[4]),
        ("not #host=*", &[4]),
        ("status=2*", &[1, 4, 6]),
        ("@rawstring=/index\\.html/", &[1, 6]),
        ("@rawstring=/^get/i", &[1, 3, 4, 5, 6]),
        ("/timeout|missing/", &[2, 3]),
        ("status=500 or status=404", &[2, 3, 5]),
        ("#host=a status=404 or status=200", &[1, 3]),
        ("(#host=a and status=404) or status=500", &[2, 3, 5]),
        ("status>=404", &[2, 3, 5]),
        ("status<404", &[1, 4, 6]),
        ("@timestamp>1004", &[5, 6]),
        ("#repo=web head", &[]),
        ("nosuchfield=1", &[]),
        ("nosuchfield!=1", &[1, 2, 3, 4, 5, 6]),
        ("nosuchfield<1", &[]),
    ];
    for (query, expected) in table {
        assert_eq!(ids(&run(query).0), *expected, "{query}");
    }
}

#[test]
fn head_stops_reading_and_tail_keeps_the_last() {
    let (out, pushed) = run("head(2)");
    assert_eq!(ids(&out), [1, 2]);
    assert_eq!(pushed, 2, "head stops the reader once it has its rows");
    let (out, pushed) = run("status=200 | head(2)");
    assert_eq!(ids(&out), [1, 4]);
    assert_eq!(pushed, 4);
    let (out, pushed) = run("tail(2)");
    assert_eq!(ids(&out), [5, 6]);
    assert_eq!(pushed, 6);
    let (out, _) = run("tail(3) | head(1)");
    assert_eq!(ids(&out), [4]);
    // count() before head needs all input.
    let (out, pushed) = run("count() | head(1)");
    assert_eq!(out[0]["_count"], "6");
    assert_eq!(pushed, 6);
}

#[test]
fn count_group_by_and_sort() {
    let (out, _) = run("count()");
    assert_eq!(Value::Array(out.into_iter().map(Value::Object).collect()), json!([{"_count": "6"}]));
    let (out, _) = run("nothing-matches | count()");
    assert_eq!(out[0]["_count"], "0");

    // Events without #host are in no group.
    let (out, _) = run("groupBy(#host)");
    let rows: Vec<Value> = out.into_iter().map(Value::Object).collect();
    assert_eq!(Value::Array(rows), json!([{"#host": "a", "_count": "2"}, {"#host": "b", "_count": "2"}, {"#host": "c", "_count": "1"}]));
    let (out, _) = run("groupBy([#host, status]) | sort(_count, limit=1)");
    assert_eq!(Value::Object(out[0].clone()), json!({"#host": "b", "status": "500", "_count": "2"}));

    let (out, _) = run("sort(n)");
    assert_eq!(ids(&out), [6, 5, 4, 3, 2, 1]);
    let (out, _) = run("sort(n, order=asc, limit=2)");
    assert_eq!(ids(&out), [1, 2]);
    let (out, _) = run("sort(status, limit=3)");
    assert_eq!(ids(&out), [2, 5, 3], "numeric desc; ties keep read order");
    // Missing fields come last in both orders.
    let (out, _) = run("sort(#host, order=asc)");
    assert_eq!(ids(&out), [1, 3, 2, 5, 6, 4]);
    let (out, _) = run("sort(#host, order=desc)");
    assert_eq!(ids(&out), [6, 2, 5, 1, 3, 4]);
    assert!(!Pipeline::new(&parse("error | head(3)", &Limits::default()).unwrap()).is_aggregate());
    assert!(Pipeline::new(&parse("groupBy(a)", &Limits::default()).unwrap()).is_aggregate());
}

#[test]
fn group_by_past_its_limit_is_an_error_not_a_wrong_count() {
    let query = parse("groupBy(n, limit=3)", &Limits::default()).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    let mut result = Ok(());
    for e in events() {
        result = pipeline.push(e, &mut out);
        if result.is_err() {
            break;
        }
    }
    let error = result.unwrap_err().0;
    assert!(error.contains("more than 3 groups"), "{error}");
}

#[test]
fn sort_holds_only_its_limit() {
    let query = parse("sort(v, limit=10)", &Limits::default()).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    for v in 0..100_000u64 {
        let e = json!({"v": ((v * 7919) % 100_000).to_string()}).as_object().unwrap().clone();
        pipeline.push(e, &mut out).unwrap();
        if let Stage::Sort { heap, .. } = &pipeline.stages[0] {
            assert!(heap.len() <= 10);
        }
    }
    pipeline.finish(&mut out).unwrap();
    let values: Vec<&str> = out.iter().map(|e| e["v"].as_str().unwrap()).collect();
    assert_eq!(values, ["99999", "99998", "99997", "99996", "99995", "99994", "99993", "99992", "99991", "99990"]);
}

/// Runs `query` over `input` (a JSON array of events) and returns the rows as JSON.
fn rows(query: &str, input: Value) -> Value {
    let query = parse(query, &Limits::default()).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    for event in input.as_array().unwrap() {
        pipeline.push(event.as_object().unwrap().clone(), &mut out).unwrap();
    }
    pipeline.finish(&mut out).unwrap();
    Value::Array(out.into_iter().map(Value::Object).collect())
}

fn check(table: &[(&str, Value, Value)]) {
    for (query, input, expected) in table {
        assert_eq!(rows(query, input.clone()), *expected, "{query}");
    }
}

#[test]
fn aggregates_answer_as_logscale() {
    let requests = json!([
        {"status": "200", "method": "GET", "ms": "10", "user": "ann"},
        {"status": "200", "method": "GET", "ms": "30", "user": "bob"},
        {"status": "500", "method": "POST", "ms": "250", "user": "ann"},
        {"status": "200", "method": "POST", "ms": "x", "user": "ann"},
        {"status": "404", "method": "GET"},
    ]);
    check(&[
        ("count()", requests.clone(), json!([{"_count": "5"}])),
        ("count(user)", requests.clone(), json!([{"_count": "4"}])),
        ("count(user, distinct=true)", requests.clone(), json!([{"_count": "2"}])),
        ("count(as=n)", json!([]), json!([{"n": "0"}])),
        // Text and missing values are left out of sum, avg, min and max.
        ("sum(ms)", requests.clone(), json!([{"_sum": "290"}])),
        ("avg(ms)", requests.clone(), json!([{"_avg": "96.66666666666667"}])),
        ("avg(field=ms, as=mean)", json!([{"ms": "1"}, {"ms": "2"}]), json!([{"mean": "1.5"}])),
        ("min(ms)", requests.clone(), json!([{"_min": "10"}])),
        ("max(ms)", requests.clone(), json!([{"_max": "250"}])),
        // No value: LogScale leaves the field out; sum is 0.
        ("avg(nothing)", requests.clone(), json!([{}])),
        ("sum(nothing)", requests.clone(), json!([{"_sum": "0"}])),
        ("stats([count(), min(ms), max(ms)])", requests.clone(), json!([{"_count": "5", "_min": "10", "_max": "250"}])),
        ("[sum(ms, as=total), avg(ms)]", requests.clone(), json!([{"total": "290", "_avg": "96.66666666666667"}])),
        // groupBy(statuscode, function=count(as=total)), LogScale's aggregate example.
        (
            "groupBy(status, function=count(as=total))",
            requests.clone(),
            json!([{"status": "200", "total": "3"}, {"status": "404", "total": "1"}, {"status": "500", "total": "1"}]),
        ),
        (
            "groupBy([method, status], function=[count(), avg(ms), max(ms)])",
            requests.clone(),
            json!([
                {"method": "GET", "status": "200", "_count": "2", "_avg": "20", "_max": "30"},
                {"method": "GET", "status": "404", "_count": "1"},
                {"method": "POST", "status": "200", "_count": "1"},
                {"method": "POST", "status": "500", "_count": "1", "_avg": "250", "_max": "250"},
            ]),
        ),
        // The knowledge base's groupBy: distinct and total counts of one field.
        (
            "groupBy(method, function=[count(user, distinct=true, as=users), count(user, as=requests)])",
            requests.clone(),
            json!([{"method": "GET", "users": "2", "requests": "2"}, {"method": "POST", "users": "1", "requests": "2"}]),
        ),
        ("groupBy(method, function=[])", requests.clone(), json!([{"method": "GET"}, {"method": "POST"}])),
        ("top(user)", requests.clone(), json!([{"user": "ann", "_count": "3"}, {"user": "bob", "_count": "1"}])),
        ("top(method, limit=1, as=n)", requests.clone(), json!([{"method": "GET", "n": "3"}])),
        (
            "top(user, limit=1, percent=true, rest=others)",
            requests.clone(),
            json!([{"user": "ann", "_count": "3", "percent": "75"}, {"user": "others", "_count": "1", "percent": "25"}]),
        ),
        ("top(method, sum=ms)", requests.clone(), json!([{"method": "POST", "_sum": "250"}, {"method": "GET", "_sum": "40"}])),
        ("top(status, max=ms, limit=2)", requests.clone(), json!([{"status": "500", "_max": "250"}, {"status": "200", "_max": "30"}])),
        ("groupBy(method) | sort(_count, order=asc)", requests.clone(), json!([{"method": "POST", "_count": "2"}, {"method": "GET", "_count": "3"}])),
        ("total := sum(ms)", requests.clone(), json!([{"total": "290"}])),
        ("count() | n := _count * 2", requests.clone(), json!([{"_count": "5", "n": "10"}])),
    ]);
}

#[test]
fn percentiles_are_nearest_rank() {
    // LogScale's example values 12, 25, 50, 99: its estimate of the median is 25.79; the
    // exact nearest-rank answer is 25.
    let values = json!([{"v": "50"}, {"v": "12"}, {"v": "99"}, {"v": "25"}]);
    check(&[
        ("percentile(v)", values.clone(), json!([{"_50": "25", "_75": "50", "_99": "99"}])),
        ("percentile(v, percentiles=[0, 25, 100], as=p)", values.clone(), json!([{"p_0": "12", "p_25": "12", "p_100": "99"}])),
        ("percentile(v, percentiles=[99.9])", values.clone(), json!([{"_99.9": "99"}])),
        ("percentile(v)", json!([{"v": "x"}]), json!([{}])),
    ]);
    let hundred = Value::Array((1..=100).rev().map(|i| json!({"ms": i.to_string()})).collect());
    check(&[("percentile(ms, percentiles=[50, 95, 99])", hundred, json!([{"_50": "50", "_95": "95", "_99": "99"}]))]);
}

#[test]
fn distinct_values_are_capped() {
    let query = parse("count(v, distinct=true)", &Limits { max_aggregate_values: 3, ..Limits::default() }).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    for v in ["a", "b", "a", "c"] {
        pipeline.push(json!({"v": v}).as_object().unwrap().clone(), &mut out).unwrap();
    }
    let error = pipeline.push(json!({"v": "d"}).as_object().unwrap().clone(), &mut out).unwrap_err().0;
    assert!(error.contains("more than 3 values") && error.contains("query.max_aggregate_values"), "{error}");
}

#[test]
fn expressions_set_and_test_fields() {
    let one = |event: Value| Value::Array(vec![event]);
    check(&[
        // LogScale's if() example.
        ("success := if(status >= 500, then=0, else=1)", one(json!({"status": "503"})), one(json!({"status": "503", "success": "0"}))),
        ("success := if(status >= 500, then=0, else=1)", one(json!({"status": "200"})), one(json!({"status": "200", "success": "1"}))),
        // LogScale's expression example: values are text read as numbers where needed.
        ("a := \"2\" | b := 4 / a", one(json!({})), one(json!({"a": "2", "b": "2"}))),
        ("x := (a + b) * 2 - 1", one(json!({"a": "1.5", "b": "2"})), one(json!({"a": "1.5", "b": "2", "x": "6"}))),
        ("eval(kb = bytes / 1024)", one(json!({"bytes": "2048"})), one(json!({"bytes": "2048", "kb": "2"}))),
        ("eval(x = -a)", one(json!({"a": "3"})), one(json!({"a": "3", "x": "-3"}))),
        // No value (a missing field, text in arithmetic, a division by zero): unset.
        ("x := a + 1", one(json!({"b": "1"})), one(json!({"b": "1"}))),
        ("x := a + 1", one(json!({"a": "one"})), one(json!({"a": "one"}))),
        ("x := a / 0", one(json!({"a": "1"})), one(json!({"a": "1"}))),
        ("x := concat([a, \"-\", b])", one(json!({"a": "1", "b": "2"})), one(json!({"a": "1", "b": "2", "x": "1-2"}))),
        ("x := a > b", one(json!({"a": "10", "b": "9"})), one(json!({"a": "10", "b": "9", "x": "true"}))),
        // Numbers compare as numbers, text as text.
        ("x := a > b", one(json!({"a": "abc", "b": "abd"})), one(json!({"a": "abc", "b": "abd", "x": "false"}))),
        // LogScale's expression example: `b := 4 / lower(a)` with a = "2".
        ("a := \"2\" | b := 4 / lower(a)", one(json!({})), one(json!({"a": "2", "b": "2"}))),
        ("x := upper(a) | n := length(a)", one(json!({"a": "héllo"})), one(json!({"a": "héllo", "x": "HÉLLO", "n": "5"}))),
        ("x := coalesce([a, b, \"none\"])", one(json!({"a": "", "b": "2"})), one(json!({"a": "", "b": "2", "x": "2"}))),
        ("x := coalesce([a, \"none\"])", one(json!({})), one(json!({"x": "none"}))),
        ("s := format(\"%s/%s\", field=[a, b])", one(json!({"a": "1", "b": "2"})), one(json!({"a": "1", "b": "2", "s": "1/2"}))),
        ("default(field=[x, y], value=none)", one(json!({"x": "1"})), one(json!({"x": "1", "y": "none"}))),
    ]);
    let events = json!([{"a": "1", "b": "2"}, {"a": "5", "b": "2"}, {"a": "x", "b": "x"}, {"b": "2"}]);
    check(&[
        ("test(a > b)", events.clone(), json!([{"a": "5", "b": "2"}])),
        ("test(a == b)", events.clone(), json!([{"a": "x", "b": "x"}])),
        ("test(a != b)", events.clone(), json!([{"a": "1", "b": "2"}, {"a": "5", "b": "2"}])),
        ("test(a < 2 or a == \"x\")", events.clone(), json!([{"a": "1", "b": "2"}, {"a": "x", "b": "x"}])),
        ("test(not a > 2 and b == 2)", events.clone(), json!([{"a": "1", "b": "2"}, {"b": "2"}])),
        ("test(a * 2 == 10)", events.clone(), json!([{"a": "5", "b": "2"}])),
    ]);
}

#[test]
fn case_takes_the_first_branch_that_passes() {
    let admins = json!([{"UserIsAdmin": "1"}, {"UserIsAdmin": "0"}, {"other": "x"}]);
    check(&[
        // The knowledge base's non-destructive case statement.
        (
            "case { UserIsAdmin=1 | UserIsAdmin_Readable := \"True\" ; UserIsAdmin=0 | UserIsAdmin_Readable := \"False\" ; * ; }",
            admins.clone(),
            json!([{"UserIsAdmin": "1", "UserIsAdmin_Readable": "True"}, {"UserIsAdmin": "0", "UserIsAdmin_Readable": "False"}, {"other": "x"}]),
        ),
        // Without a `*` branch, an event no branch passes is dropped.
        ("case { UserIsAdmin=1 | admin := \"yes\" ; other=* }", admins.clone(), json!([{"UserIsAdmin": "1", "admin": "yes"}, {"other": "x"}])),
        (
            "case { test(UserIsAdmin == 0) | x := 0 ; * | x := 1 }",
            admins.clone(),
            json!([{"UserIsAdmin": "1", "x": "1"}, {"UserIsAdmin": "0", "x": "0"}, {"other": "x", "x": "1"}]),
        ),
    ]);
}

#[test]
fn filter_functions_and_field_steps() {
    let events = json!([
        {"@rawstring": "user=ann took 12ms", "status": "200", "url": "/api/users", "m": "GET"},
        {"@rawstring": "user=bob took 7ms", "status": "404", "url": "/index", "m": "get"},
        {"@rawstring": "no user here", "status": "500", "url": "/API/x", "m": "POST"},
    ]);
    let urls = |rows: Value| Value::Array(rows.as_array().unwrap().iter().map(|r| r["url"].clone()).collect());
    let table: &[(&str, Value)] = &[
        ("in(status, values=[200, 500])", json!(["/api/users", "/API/x"])),
        ("in(status, values=[\"4*\"])", json!(["/index"])),
        ("in(m, values=[get])", json!(["/index"])),
        ("in(m, values=[get], ignoreCase=true)", json!(["/api/users", "/index"])),
        ("wildcard(field=url, pattern=\"*api*\")", json!(["/api/users"])),
        ("wildcard(field=url, pattern=\"*api*\", ignoreCase=true)", json!(["/api/users", "/API/x"])),
        ("wildcard(pattern=\"TOOK*ms\", ignoreCase=true)", json!(["/api/users", "/index"])),
        ("regex(\"took \\\\d+ms\")", json!(["/api/users", "/index"])),
        ("regex(\"^/api\", field=url, flags=i)", json!(["/api/users", "/API/x"])),
        ("not in(status, values=[200])", json!([])),
    ];
    for (query, expected) in table {
        if query.starts_with("not ") {
            // A filter function is a step of its own, not a term of a filter.
            assert!(parse(query, &Limits::default()).is_err(), "{query}");
            continue;
        }
        assert_eq!(urls(rows(query, events.clone())), *expected, "{query}");
    }
    let pick = |query: &str| rows(&format!("{query} | select([user, ms])"), events.clone());
    // Named groups become fields: regex(), /re/ and field=/re/.
    let named = json!([{"user": "ann", "ms": "12"}, {"user": "bob", "ms": "7"}]);
    assert_eq!(pick("regex(\"user=(?<user>\\\\w+) took (?<ms>\\\\d+)ms\")"), named);
    assert_eq!(pick("/user=(?<user>\\w+) took (?<ms>\\d+)ms/"), named);
    assert_eq!(pick("@rawstring=/user=(?<user>\\w+) took (?<ms>\\d+)ms/ status=*"), named);

    check(&[
        ("select([m, status])", events.clone(), json!([{"m": "GET", "status": "200"}, {"m": "get", "status": "404"}, {"m": "POST", "status": "500"}])),
        ("drop([@rawstring, url]) | head(1)", events.clone(), json!([{"m": "GET", "status": "200"}])),
        ("rename(field=m, as=method) | select([method]) | head(1)", events.clone(), json!([{"method": "GET"}])),
        ("rename([[m, method], [status, code]]) | select([method, code]) | tail(1)", events.clone(), json!([{"method": "POST", "code": "500"}])),
        ("table([url], sortby=status, order=asc, limit=2)", events.clone(), json!([{"url": "/api/users"}, {"url": "/index"}])),
    ]);
}

#[test]
fn text_steps_as_logscale() {
    let one = |event: Value| Value::Array(vec![event]);
    let at = |ms: i64| json!({"@timestamp": ms});
    check(&[
        // formatTime's documented form, in UTC; auto reads a small number as seconds.
        ("formatTime(\"%Y/%m/%d %H:%M:%S\", as=fmttime) | select([fmttime])", one(at(1_750_000_000_123)), one(json!({"fmttime": "2025/06/15 15:06:40"}))),
        (
            "formatTime(\"%F %T.%L %a %A %b %B %j %I %p %Z %z %s\", as=t) | select([t])",
            one(at(951_786_123_004)),
            one(json!({"t": "2000-02-29 01:02:03.004 Tue Tuesday Feb February 060 01 am UTC +0000 951786123"})),
        ),
        ("formatTime(\"%D %R\", field=ts, as=t) | select([t])", one(json!({"ts": "0"})), one(json!({"t": "01/01/70 00:00"}))),
        ("formatTime(\"%Q\", field=ts, as=t, unit=seconds) | select([t])", one(json!({"ts": "2"})), one(json!({"t": "2000"}))),
        ("formatTime(\"%Y\", field=ts, as=t)", one(json!({"ts": "soon"})), one(json!({"ts": "soon"}))),
        // format(): Java's conversions.
        ("format(\"%s:%s\", field=[a, b], as=c) | select([c])", one(json!({"a": "x", "b": "1"})), one(json!({"c": "x:1"}))),
        (
            "format(\"%.2f|%05d|%-4s|%x|%e|%S|%.1s|100%%\", field=[a, b, c, d, e, c, c]) | select([_format])",
            one(json!({"a": "3.14159", "b": "42", "c": "ab", "d": "255", "e": "1500"})),
            one(json!({"_format": "3.14|00042|ab  |ff|1.500000e+03|AB|a|100%"})),
        ),
        ("format(\"%d\", field=a)", one(json!({"a": "x"})), one(json!({"a": "x"}))),
        ("format(\"%s\", field=missing)", one(json!({"a": "x"})), one(json!({"a": "x"}))),
        // replace(): every match, groups by number or name.
        ("replace(\"\\\\d\", with=\"#\", field=msg)", one(json!({"msg": "a1b22"})), one(json!({"msg": "a#b##"}))),
        (
            "replace(\"(?<k>\\\\w+)=(\\\\w+)\", with=\"$2=${k}\", field=msg, as=swapped) | select([swapped])",
            one(json!({"msg": "a=1 b=2"})),
            one(json!({"swapped": "1=a 2=b"})),
        ),
        ("replace(\"X\", with=y, flags=i, field=msg)", one(json!({"msg": "xX"})), one(json!({"msg": "yy"}))),
        // parseJson(): flattened as events are.
        (
            "parseJson(field=body) | drop([body])",
            one(json!({"body": "{\"a\": {\"b\": 1}, \"list\": [\"x\", true], \"s\": \"t\"}"})),
            one(json!({"a.b": "1", "list[0]": "x", "list[1]": "true", "s": "t"})),
        ),
        ("parseJson(prefix=\"j.\") | drop([@rawstring])", one(json!({"@rawstring": "{\"a\": null}"})), one(json!({"j.a": "null"}))),
        ("parseJson()", one(json!({"@rawstring": "not json"})), one(json!({"@rawstring": "not json"}))),
        // kvParse(): bare and quoted values; existing fields stay unless override=true.
        (
            "kvParse() | drop([@rawstring])",
            one(json!({"@rawstring": "ts=1 user=\"ann b\" role='admin' path=/x, empty= code=200;", "code": "kept"})),
            one(json!({"ts": "1", "user": "ann b", "role": "admin", "path": "/x", "empty": "", "code": "kept"})),
        ),
        ("kvParse(field=m, override=true, as=kv) | select([kv.a])", one(json!({"m": "a=1", "kv.a": "0"})), one(json!({"kv.a": "1"}))),
        ("kvParse(field=m, separator=\":\") | select([a, b, c])", one(json!({"m": "a:1 b :2 c: 3"})), one(json!({"a": "1", "b": "2", "c": ""}))),
    ]);
    // split(): one event per array element.
    let nested = one(json!({"id": "e", "_events[0].x": "1", "_events[0].y": "a", "_events[1].x": "2"}));
    check(&[
        ("split()", nested.clone(), json!([{"id": "e", "_events.x": "1", "_events.y": "a", "_index": "0"}, {"id": "e", "_events.x": "2", "_index": "1"}])),
        ("split(field=v) | count()", one(json!({"v[0]": "a", "v[1]": "b", "v[2]": "c"})), json!([{"_count": "3"}])),
        ("split(field=v)", one(json!({"id": "no array"})), one(json!({"id": "no array"}))),
    ]);
}

#[test]
fn collect_and_select_last() {
    let events = json!([
        {"@timestamp": 3, "host": "a", "user": "ann", "status": "200"},
        {"@timestamp": 1, "host": "a", "user": "bob", "status": "500"},
        {"@timestamp": 2, "host": "a", "user": "ann", "status": "404"},
        {"@timestamp": 5, "host": "b", "user": "cid"},
    ]);
    check(&[
        ("collect(user)", events.clone(), json!([{"user": "ann\nbob\ncid"}])),
        ("collect([user, status], separator=\",\", limit=2)", events.clone(), json!([{"user": "ann,bob", "status": "200,500"}])),
        (
            "groupBy(host, function=[count(), collect(user, separator=\";\")])",
            events.clone(),
            json!([{"host": "a", "_count": "3", "user": "ann;bob"}, {"host": "b", "_count": "1", "user": "cid"}]),
        ),
        // The latest event by @timestamp, whatever the read order.
        ("selectLast([user, status])", events.clone(), json!([{"user": "cid"}])),
        (
            "groupBy(host, function=selectLast([user, status]))",
            events.clone(),
            json!([{"host": "a", "user": "ann", "status": "200"}, {"host": "b", "user": "cid"}]),
        ),
    ]);
}

#[test]
fn sort_by_several_keys_and_types() {
    let events = json!([
        {"n": "1", "g": "b", "v": "10", "h": "0x1f"},
        {"n": "2", "g": "a", "v": "9", "h": "a"},
        {"n": "3", "g": "b", "v": "9", "h": "0x2"},
        {"n": "4", "g": "a", "v": "10"},
    ]);
    let order = |query: &str| -> Vec<String> { rows(query, events.clone()).as_array().unwrap().iter().map(|e| e["n"].as_str().unwrap().to_owned()).collect() };
    assert_eq!(order("sort([g, v], order=[asc, desc])"), ["4", "2", "1", "3"]);
    assert_eq!(order("sort([g, v], order=asc)"), ["2", "4", "3", "1"]);
    // As numbers 10 > 9; as text "9" > "10".
    assert_eq!(order("sort(v, limit=2)"), ["1", "4"]);
    assert_eq!(order("sort(v, type=string, limit=2)"), ["2", "3"]);
    // Hex: 0x1f > a > 0x2; the event without the field last.
    assert_eq!(order("sort(h, type=hex)"), ["1", "2", "3", "4"]);
    assert_eq!(order("sort(h, type=hex, order=asc)"), ["3", "2", "1", "4"]);
    assert_eq!(order("table([n], sortby=[g, v], order=[desc, asc])"), ["3", "1", "2", "4"]);
}

#[test]
fn match_takes_the_first_clause_whose_pattern_matches() {
    let events = json!([{"status": "200"}, {"status": "404"}, {"status": "503"}, {"status": "302"}, {"other": "x"}]);
    let query = "status match { 200 => level := \"ok\" ; \"4*\" => level := \"client\" ; /^5(?<rest>\\d+)/ => level := \"server\" ; in(values=[301, 302]) => level := \"moved\" }";
    check(&[
        (
            query,
            events.clone(),
            json!([
                {"status": "200", "level": "ok"},
                {"status": "404", "level": "client"},
                {"status": "503", "level": "server", "rest": "03"},
                {"status": "302", "level": "moved"},
            ]),
        ),
        (
            "status match { 200 => * ; * => x := \"other\" }",
            events.clone(),
            json!([{"status": "200"}, {"status": "404", "x": "other"}, {"status": "503", "x": "other"}, {"status": "302", "x": "other"}, {"other": "x", "x": "other"}]),
        ),
        ("status <> 200 | count()", events.clone(), json!([{"_count": "4"}])),
    ]);
}

#[test]
fn one_event_cannot_make_a_step_grow_without_bound() {
    let big = "x".repeat(600_000);
    let event = json!({"a": big, "b": "y"});
    // replace() of an empty match doubles the text; concat() of big fields: past 1 MiB the
    // field is not written (the event passes).
    assert_eq!(rows("replace(\"\", with=\"-\", field=a, as=r) | select([r])", Value::Array(vec![event.clone()])), json!([{}]));
    assert_eq!(rows("replace(\"\", with=\"-\", field=b, as=r) | select([r])", Value::Array(vec![event.clone()])), json!([{"r": "-y-"}]));
    assert_eq!(rows("c := concat([a, a]) | select([c, b])", Value::Array(vec![event.clone()])), json!([{"b": "y"}]));
    assert_eq!(rows("c := concat([b, b]) | select([c])", Value::Array(vec![event])), json!([{"c": "yy"}]));

    // collect() and count(distinct=true) hold at most 64 MiB of text.
    let query = parse("collect(v, limit=1000000)", &Limits::default()).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    let mut result = Ok(());
    for n in 0..200 {
        result = pipeline.push(json!({"v": format!("{n}{big}")}).as_object().unwrap().clone(), &mut out);
        if result.is_err() {
            break;
        }
    }
    let error = result.unwrap_err().0;
    assert!(error.contains("more than 64 MiB of text"), "{error}");
}

#[test]
fn split_and_format_stay_bounded() {
    let big = "x".repeat(500_000);
    let mut event = json!({"@rawstring": big}).as_object().unwrap().clone();
    for i in 0..200 {
        event.insert(format!("v[{i}]"), Value::String(i.to_string()));
    }
    let query = parse("split(field=v)", &Limits::default()).unwrap();
    let mut pipeline = Pipeline::new(&query);
    let error = pipeline.push(event.clone(), &mut Vec::new()).unwrap_err().0;
    assert!(error.contains("would copy a") && error.contains("200 times") && error.contains("drop([...])"), "{error}");
    // Without the big field it splits.
    assert_eq!(rows("drop([@rawstring]) | split(field=v) | count()", Value::Array(vec![Value::Object(event.clone())])), json!([{"_count": "200"}]));
    // format() of many big fields writes nothing past 1 MiB.
    let fields = ["@rawstring"; 3].join(", ");
    let query = format!("format(\"%s%s%s\", field=[{fields}], as=f) | select([f])");
    assert_eq!(rows(&query, Value::Array(vec![Value::Object(event)])), json!([{}]));
}

/// Runs a time-bucketed query over `events` with the grid of `[start, end]`: the rows and
/// the warnings.
fn chart(query: &str, start: i64, end: i64, events: Vec<Event>) -> Result<(Vec<Event>, Vec<String>), String> {
    let mut query = parse(query, &Limits { max_groups: 40, ..Limits::default() }).map_err(|e| e.message)?;
    query.resolve_buckets(start, end, 0, 40).map_err(|e| e.message)?;
    let mut pipeline = Pipeline::new(&query);
    let mut out = Vec::new();
    for e in events {
        pipeline.push(e, &mut out).map_err(|e| e.0)?;
    }
    let warnings = pipeline.finish(&mut out).map_err(|e| e.0)?;
    Ok((out, warnings))
}

/// A compact row: `_bucket` then the other fields, sorted.
fn show_row(row: &Event) -> String {
    let mut fields: Vec<String> = row.iter().filter(|(k, _)| *k != "_bucket").map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect();
    fields.sort();
    format!("{} {}", row["_bucket"].as_str().unwrap(), fields.join(" "))
}

#[test]
fn time_charts_answer_every_bucket_of_every_series() {
    // Events at 1001..1006 ms; buckets of 2 ms from 1000 to 1006.
    let table: &[(&str, &[&str])] = &[
        ("timeChart(span=2ms)", &["1000 _count=1", "1002 _count=2", "1004 _count=2", "1006 _count=1"]),
        // A series: every series in every bucket, empty ones 0, ordered by bucket then series.
        (
            "timeChart(#host, span=2ms)",
            &[
                "1000 #host=a _count=1",
                "1000 #host=b _count=0",
                "1000 #host=c _count=0",
                "1002 #host=a _count=1",
                "1002 #host=b _count=1",
                "1002 #host=c _count=0",
                "1004 #host=a _count=0",
                "1004 #host=b _count=1",
                "1004 #host=c _count=0",
                "1006 #host=a _count=0",
                "1006 #host=b _count=0",
                "1006 #host=c _count=1",
            ],
        ),
        // limit: the largest series only (a and b have 2 events, c one).
        ("timeChart(#host, span=4ms, limit=2)", &["1000 #host=a _count=2", "1000 #host=b _count=1", "1004 #host=a _count=0", "1004 #host=b _count=1"]),
        // Functions as in stats: an empty bucket has no average.
        (
            "timeChart(function=[count(), avg(n), sum(n)], span=4ms)",
            &["1000 _avg=2 _count=3 _sum=6", "1004 _avg=5 _count=3 _sum=15"],
        ),
        ("status=500 | timeChart(function=max(n, as=top), span=3ms)", &["999 ", "1002 top=2", "1005 top=5"]),
        // bucket(): the span first, groups by field=.
        ("bucket(4ms, field=status)", &["1000 _count=1 status=200", "1000 _count=1 status=404", "1000 _count=1 status=500", "1004 _count=2 status=200", "1004 _count=0 status=404", "1004 _count=1 status=500"]),
        // An unknown series field: no series, no rows (as groupBy).
        ("timeChart(nosuchfield, span=4ms)", &[]),
        // Steps after the chart see its rows.
        ("timeChart(span=2ms) | _count > 1 | count()", &[]),
    ];
    for (query, expected) in table {
        let (rows, _) = chart(query, 1000, 1006, events()).unwrap_or_else(|e| panic!("{query}: {e}"));
        if query.ends_with("count()") {
            assert_eq!(rows.len(), 1, "{query}");
            assert_eq!(rows[0]["_count"], "2", "{query}");
            continue;
        }
        let got: Vec<String> = rows.iter().map(show_row).collect();
        assert_eq!(got, *expected, "{query}");
    }
}

#[test]
fn series_left_out_unasked_are_a_warning_and_too_many_cells_an_error() {
    let (rows, warnings) = chart("timeChart(#host, span=8ms)", 1000, 1006, events()).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(warnings.is_empty(), "{warnings:?}");
    let many: Vec<Event> = (0..30).map(|i| event(i % 6, Some(&format!("h{i}")), "200", "x")).collect();
    let (rows, warnings) = chart("timeChart(#host, span=8ms)", 1000, 1006, many.clone()).unwrap();
    assert_eq!(rows.len(), 10, "LogScale's default limit is 10 series");
    assert!(warnings[0].contains("found 30 series and shows the 10 largest"), "{warnings:?}");
    let (_, warnings) = chart("timeChart(#host, span=8ms, limit=10)", 1000, 1006, many.clone()).unwrap();
    assert!(warnings.is_empty(), "an explicit limit leaves series out silently");
    // 60 series in their own cells, past max_groups = 40.
    let spread: Vec<Event> = (0..60).map(|i| event(i % 6, Some(&format!("h{i}")), "200", "x")).collect();
    let error = chart("timeChart(#host, span=2ms, limit=5)", 1000, 1006, spread).unwrap_err();
    assert!(error.contains("timeChart() holds more than 40 (bucket, series) cells") && error.contains("query.max_groups"), "{error}");
    // Events outside the grid (1001, 1006) are in no bucket.
    let (rows, _) = chart("timeChart(span=2ms)", 1003, 1004, events()).unwrap();
    assert_eq!(rows.iter().map(show_row).collect::<Vec<_>>(), ["1002 _count=2", "1004 _count=2"]);
}
