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
