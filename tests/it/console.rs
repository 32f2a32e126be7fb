//! The web console (`core/src/console`) in a real browser: headless Chromium from Debian's
//! packages over WebDriver (`weir_tests::browser`), against a real core process and real
//! Kafka. A user's way through it, step by step, each step's screenshot saved as an
//! artifact (`$WEIR_ARTIFACTS_DIR/console`, else `<target dir>/console-screenshots`):
//! a wrong token, sign-in, a search with its histogram and events, one event expanded, a
//! field value clicked, a `groupBy` table, a `timeChart` line chart, a bad query, live,
//! a shared link, the cluster page, and the search on a phone-sized window.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use weir_tests::browser::{Browser, CTRL_ENTER};
use weir_tests::nodes::{CoreSpec, READ_TOKEN, REPOSITORY, TOKEN, core_process};
use weir_tests::{certs, eventually, gate, http, init_tracing, kafka, unique};

/// The read token the user pastes: the test core's only one, of every repository
/// (`["*"]`), so the repository picker lists what the cluster's segments hold.
const CONSOLE_TOKEN: &str = READ_TOKEN;
const WAIT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Where the screenshots go; printed, so a CI log says where to look.
fn artifacts() -> PathBuf {
    let dir = match std::env::var_os("WEIR_ARTIFACTS_DIR") {
        Some(dir) => PathBuf::from(dir).join("console"),
        None => {
            // <target>/debug/deps/it-… → <target>/console-screenshots
            let exe = std::env::current_exe().expect("current exe");
            exe.ancestors().nth(3).expect("the target dir").join("console-screenshots")
        }
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    async fn take(&self, browser: &Browser, name: &str) {
        let path = self.dir.join(format!("{name}.png"));
        browser.screenshot(&path).await;
        eprintln!("console screenshot: {}", path.display());
    }
}

/// Replaces the query with `query` and runs it with Ctrl+Enter, as a user would.
async fn run_query(browser: &Browser, query: &str) {
    let textarea = browser.wait_for("#query", WAIT).await;
    browser.clear(&textarea).await;
    browser.type_text(&textarea, query).await;
    browser.type_text(&textarea, CTRL_ENTER).await;
}

/// No horizontal scrolling at the window's width: the page fits.
async fn fits_the_window(browser: &Browser, what: &str) {
    let sizes = browser.script("return [document.documentElement.scrollWidth, window.innerWidth]", Vec::new()).await;
    let (content, window) = (sizes[0].as_i64().unwrap(), sizes[1].as_i64().unwrap());
    assert!(content <= window + 1, "{what}: the page is {content} px wide in a {window} px window");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_signs_in_searches_narrows_aggregates_tails_live_and_sees_the_cluster_in_a_real_browser() {
    let _gate = gate::shared();
    init_tracing();
    let shots = Shots { dir: artifacts() };
    eprintln!("console screenshots go to {}", shots.dir.display());
    let bootstrap = kafka::shared_bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let spec = CoreSpec::new("core-1", &bootstrap, &unique("weir-test-console"), &certs);
    let core = core_process(&spec, dir.path()).await;
    let client = http();

    // Events of the last few minutes: host h1 info and warn, host h2 error; one raw string
    // with runs of spaces and a tab, which the console must show as written.
    let run = unique("console");
    let base = now_ms() - 5 * 60_000;
    let spaced = format!("{run} warn  two  spaces\tand a tab");
    let mut sent: Vec<(String, &str, &str)> = Vec::new();
    for i in 0..4 {
        sent.push((format!("{run} info request {i} served"), "h1", "info"));
    }
    sent.push((format!("{run} warn slow request"), "h1", "warn"));
    sent.push((spaced.clone(), "h1", "warn"));
    for i in 0..3 {
        sent.push((format!("{run} error request {i} failed"), "h2", "error"));
    }
    let mut by_host: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (i, (raw, host, level)) in sent.iter().enumerate() {
        let event = json!({"timestamp": base + i as i64 * 30_000, "rawstring": raw, "attributes": {"level": level}});
        by_host.entry(*host).or_default().push(event);
    }
    let body: Vec<Value> = by_host.iter().map(|(host, events)| json!({"tags": {"host": host}, "events": events})).collect();
    let response = client.post(core.url("/api/v1/ingest/humio-structured")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let total = sent.len();
    eventually("the events are digested", Duration::from_secs(60), || {
        let request = client
            .post(core.url(&format!("/api/v1/repositories/{REPOSITORY}/query")))
            .bearer_auth(CONSOLE_TOKEN)
            .json(&json!({"queryString": format!("\"{run}\" | count()"), "start": "1h"}));
        async move {
            let rows: Vec<Value> = request.send().await.ok()?.json().await.ok()?;
            (rows.first()?["_count"] == total.to_string()).then_some(())
        }
    })
    .await;

    // A token of every repository (["*"]) lists the repositories that have segments (no
    // token names one here), so the console's picker has them too.
    let listed: Value = client
        .post(core.url("/graphql"))
        .bearer_auth(CONSOLE_TOKEN)
        .json(&json!({"query": "{searchDomains{name}}"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!({"data": {"searchDomains": [{"name": REPOSITORY}]}}));

    // The core serves the page to a browser at / and keeps / as JSON for everyone else.
    let page = client.get(core.url("/")).header("accept", "text/html").send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'self'") && !policy.contains("unsafe-inline"), "{policy}");
    let probe: Value = client.get(core.url("/")).send().await.unwrap().json().await.unwrap();
    assert_eq!(probe["tagline"], "You Know, for Search");

    let browser = Browser::start(dir.path(), 1280, 800).await;

    // 1. The sign-in page; 2. a wrong token is refused with the core's reason.
    browser.goto(&core.url("/")).await;
    let token_input = browser.wait_for("#token", WAIT).await;
    shots.take(&browser, "01-sign-in").await;
    browser.type_text(&token_input, "not-a-read-token").await;
    browser.click(&browser.wait_for("#signin", WAIT).await).await;
    let refusal = browser.text(&browser.wait_for("#signin-error", WAIT).await).await;
    assert!(refusal.contains("refused this token") && refusal.contains("unknown read token"), "{refusal}");
    assert!(browser.find_all("#search-view:not([hidden])").await.is_empty(), "no search page for a wrong token");
    shots.take(&browser, "02-wrong-token").await;

    // 3. The right token: the search page, the repository picked from the token's list.
    browser.clear(&token_input).await;
    browser.type_text(&token_input, CONSOLE_TOKEN).await;
    browser.click(&browser.wait_for("#signin", WAIT).await).await;
    let repo = browser.wait_for("#repo", WAIT).await;
    browser.wait_until("the repository picked", WAIT, "return document.getElementById('repo').value || null", Vec::new()).await;
    assert_eq!(browser.property(&repo, "value").await, REPOSITORY);
    let stored = browser.script("return [sessionStorage.getItem('weir.readToken'), localStorage.length, document.cookie]", Vec::new()).await;
    assert_eq!(stored, json!([CONSOLE_TOKEN, 0, ""]), "the token is kept for the tab only");

    // The keyboard: `/` from anywhere on the page goes to the query box.
    browser.script("document.activeElement.blur()", Vec::new()).await;
    browser.press_keys("/").await;
    let focused = browser.script("return document.activeElement.id", Vec::new()).await;
    assert_eq!(focused, "query", "`/` focuses the query box");

    // 4. A search: every event sent, newest first, and a histogram that counts them all.
    let query = format!("\"{run}\"");
    run_query(&browser, &query).await;
    let shown = browser
        .wait_until(
            "the events and the histogram",
            WAIT,
            "const raws = [...document.querySelectorAll('#events li.event .raw')].map(r => r.textContent);
             const bars = [...document.querySelectorAll('#histogram rect.bar')];
             const counted = bars.reduce((sum, bar) => sum + Number(bar.dataset.count), 0);
             const of = (id) => document.getElementById(id).dataset.query === arguments[1];
             if (!of('output') || !of('histogram') || raws.length !== arguments[0] || document.getElementById('histogram').hidden || counted !== arguments[0]) return null;
             return {raws, bars: bars.length, times: [...document.querySelectorAll('#events li.event time')].map(t => [t.dateTime, t.title])};",
            vec![json!(total), json!(query)],
        )
        .await;
    let raws: Vec<String> = shown["raws"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    assert_eq!(raws.iter().cloned().collect::<BTreeSet<_>>(), sent.iter().map(|s| s.0.clone()).collect::<BTreeSet<_>>());
    assert_eq!(raws[0], sent.last().unwrap().0, "newest first");
    assert!(shown["bars"].as_u64().unwrap() >= 5, "a bar per bucket over the range: {shown}");
    let (iso, title) = (shown["times"][0][0].as_str().unwrap(), shown["times"][0][1].as_str().unwrap());
    assert!(iso.ends_with('Z') && title.ends_with(" UTC"), "local time shown, UTC on hover: {iso} {title}");
    let status = browser.text(&browser.wait_for("#status", WAIT).await).await;
    assert!(status.contains(&format!("{total} events")), "{status}");
    let shared_link = browser.url().await;
    assert!(shared_link.contains("#/search?") && shared_link.contains("repo=test-repo") && shared_link.contains("range=15m"), "{shared_link}");
    assert!(shared_link.contains(&format!("q=%22{run}%22")), "the query is in the link: {shared_link}");
    assert!(!shared_link.contains(CONSOLE_TOKEN), "never the token in the URL: {shared_link}");
    fits_the_window(&browser, "the search at 1280×800").await;
    shots.take(&browser, "03-search-histogram-events").await;

    // 5. One event expanded: every field, and @rawstring exactly as written.
    let toggle = browser
        .wait_for_script_element(
            "the spaced event's row",
            WAIT,
            "return [...document.querySelectorAll('.event-toggle')].find(b => b.querySelector('.raw').textContent === arguments[0]) || null",
            vec![json!(spaced)],
        )
        .await;
    browser.click(&toggle).await;
    let detail = browser
        .wait_until(
            "the expanded event",
            WAIT,
            "const open = document.querySelector('.event-toggle[aria-expanded=\"true\"] + .event-detail:not([hidden])');
             if (!open) return null;
             const fields = {};
             for (const row of open.querySelectorAll('tr')) fields[row.querySelector('th').textContent] = row.querySelector('td').textContent;
             return {raw: open.querySelector('pre.rawstring').textContent, fields};",
            Vec::new(),
        )
        .await;
    assert_eq!(detail["raw"], spaced.as_str(), "@rawstring as written, spaces and tab kept");
    let fields = &detail["fields"];
    assert_eq!((&fields["level"], &fields["#host"], &fields["#repo"]), (&json!("warn"), &json!("h1"), &json!(REPOSITORY)), "{detail}");
    assert!(fields["@timestamp"].is_string() && fields["@id"].is_string(), "every field: {detail}");
    shots.take(&browser, "04-event-expanded").await;

    // 6. A field value clicked in the sidebar narrows the query and the result.
    let warn = browser.wait_for(".field-value[data-field=\"level\"][data-value=\"warn\"]", WAIT).await;
    browser.click(&warn).await;
    let narrowed_query = format!("{query} | level=warn");
    let narrowed = browser
        .wait_until(
            "the narrowed result",
            WAIT,
            "const raws = [...document.querySelectorAll('#events li.event .raw')].map(r => r.textContent);
             if (document.getElementById('query').value !== arguments[0] || raws.length !== 2 || !location.hash.includes('level%3Dwarn')) return null;
             return raws;",
            vec![json!(narrowed_query)],
        )
        .await;
    let expected_warn: BTreeSet<String> = sent.iter().filter(|s| s.2 == "warn").map(|s| s.0.clone()).collect();
    let got_warn: BTreeSet<String> = narrowed.as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    assert_eq!(got_warn, expected_warn);
    shots.take(&browser, "05-field-value-narrowed").await;

    // 7. An aggregate: a table.
    run_query(&browser, &format!("{query} | groupBy(level)")).await;
    let table = browser
        .wait_until(
            "the groupBy table",
            WAIT,
            "const wrap = document.getElementById('table-wrap');
             const heads = [...document.querySelectorAll('#table thead th')].map(th => th.textContent);
             const rows = [...document.querySelectorAll('#table tbody tr')].map(tr => [...tr.cells].map(td => td.textContent));
             if (wrap.hidden || rows.length !== 3 || document.querySelectorAll('#events li.event').length) return null;
             return {heads, rows, histogram: document.getElementById('histogram').hidden};",
            Vec::new(),
        )
        .await;
    assert_eq!(table["heads"], json!(["level", "_count"]));
    let counts: BTreeMap<String, String> =
        table["rows"].as_array().unwrap().iter().map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned())).collect();
    assert_eq!(counts, BTreeMap::from([("error".to_owned(), "3".to_owned()), ("info".to_owned(), "4".to_owned()), ("warn".to_owned(), "2".to_owned())]));
    assert_eq!(table["histogram"], true, "no event histogram beside an aggregate");
    shots.take(&browser, "06-group-by-table").await;

    // 8. A time chart: `_bucket` rows drawn as lines, one per host.
    run_query(&browser, &format!("{query} | timeChart(#host, span=1m)")).await;
    let chart = browser
        .wait_until(
            "the line chart",
            WAIT,
            "const chart = document.getElementById('chart');
             const lines = chart.querySelectorAll('polyline.series');
             if (chart.hidden || lines.length !== 2) return null;
             return [...chart.querySelectorAll('.legend li')].map(li => li.textContent).sort();",
            Vec::new(),
        )
        .await;
    assert_eq!(chart, json!(["h1", "h2"]));
    shots.take(&browser, "07-time-chart").await;

    // 9. A bad query: the core's 400 text where the user typed, pointing at the spot.
    run_query(&browser, &format!("{query} | nosuchfunction()")).await;
    let error = browser.wait_for("#query-error", WAIT).await;
    let message = browser.text(&error).await;
    assert!(message.contains("query not supported") && message.contains("nosuchfunction() is not supported"), "{message}");
    assert!(!browser.find_all("#query-error .caret").await.is_empty(), "a caret under the position: {message}");
    assert_eq!(browser.property(&browser.wait_for("#query", WAIT).await, "ariaInvalid").await, "true");
    shots.take(&browser, "08-bad-query").await;

    // 10. Live: an event sent after Live was turned on appears by itself.
    run_query(&browser, &format!("{query} live")).await;
    browser.click(&browser.wait_for("#live", WAIT).await).await;
    browser
        .wait_until("the live search running", WAIT, "return document.getElementById('status').textContent.startsWith('Live, updated') || null", Vec::new())
        .await;
    let live_raw = format!("{run} live one");
    let body = json!([{"tags": {"host": "h3"}, "events": [{"timestamp": now_ms(), "rawstring": live_raw}]}]);
    let response = client.post(core.url("/api/v1/ingest/humio-structured")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    browser
        .wait_until(
            "the live event on the page",
            WAIT,
            "return [...document.querySelectorAll('#events li.event .raw')].some(r => r.textContent === arguments[0]) || null",
            vec![json!(live_raw)],
        )
        .await;
    assert!(browser.url().await.contains("live=1"), "live is in the link");
    shots.take(&browser, "09-live").await;
    let stop = browser.wait_for("#cancel", WAIT).await;
    assert_eq!(browser.text(&stop).await, "Stop live");
    browser.click(&stop).await;
    browser
        .wait_until(
            "live stopped",
            WAIT,
            "return (!document.getElementById('live').checked && document.getElementById('status').textContent.startsWith('Live search stopped')) || null",
            Vec::new(),
        )
        .await;

    // 11. The shared link, opened afresh in the tab (the token is the tab's): the same search.
    browser.goto("about:blank").await;
    browser.goto(&shared_link).await;
    browser
        .wait_until(
            "the shared search",
            WAIT,
            "const raws = document.querySelectorAll('#events li.event .raw');
             return (document.getElementById('query').value === arguments[0] && raws.length === arguments[1]) || null",
            // The live event too, by now.
            vec![json!(query), json!(total + 1)],
        )
        .await;

    // 11b. A link with an absolute range (the custom range): only the events inside it.
    let (start, end) = (base - 60_000, base + 3 * 30_000 + 1);
    let custom_link = format!("{}#/search?repo={REPOSITORY}&q=%22{run}%22&start={start}&end={end}", core.url("/"));
    browser.goto("about:blank").await;
    browser.goto(&custom_link).await;
    let custom = browser
        .wait_until(
            "the custom range's search",
            WAIT,
            "const raws = [...document.querySelectorAll('#events li.event .raw')].map(r => r.textContent);
             if (document.getElementById('output').dataset.query !== arguments[0] || raws.length !== 4) return null;
             return {raws, range: document.getElementById('range').value, from: document.getElementById('range-start').value,
                     shown: !document.getElementById('custom-range').hidden};",
            vec![json!(query)],
        )
        .await;
    assert_eq!((&custom["range"], &custom["shown"]), (&json!("custom"), &json!(true)), "{custom}");
    assert!(custom["from"].as_str().is_some_and(|v| !v.is_empty()), "the range's start in the form: {custom}");
    let inside: BTreeSet<String> = sent[..4].iter().map(|s| s.0.clone()).collect();
    let got: BTreeSet<String> = custom["raws"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    assert_eq!(got, inside, "the four events inside the range");

    // 12. The cluster page: this node alive, both partitions owned; it refreshes itself.
    browser.click(&browser.wait_for("#nav-cluster", WAIT).await).await;
    let cluster = browser
        .wait_until(
            "the cluster page",
            WAIT,
            "const nodes = [...document.querySelectorAll('#cluster-nodes tbody tr')].map(tr => [...tr.cells].map(td => td.textContent));
             const partitions = [...document.querySelectorAll('#cluster-partitions tbody tr')].map(tr => [...tr.cells].map(td => td.textContent));
             if (!nodes.length || partitions.length !== 2 || partitions.some(p => p[1] !== 'core-1')) return null;
             return {nodes, partitions, refreshed: document.getElementById('cluster-status').textContent};",
            Vec::new(),
        )
        .await;
    assert_eq!(cluster["nodes"][0][0], "core-1");
    assert_eq!(cluster["nodes"][0][1], "alive");
    let first_refresh = cluster["refreshed"].as_str().unwrap().to_owned();
    assert!(first_refresh.starts_with("Refreshed"), "{first_refresh}");
    fits_the_window(&browser, "the cluster page at 1280×800").await;
    shots.take(&browser, "10-cluster").await;
    browser
        .wait_until(
            "the cluster page to refresh itself",
            Duration::from_secs(15),
            "return document.getElementById('cluster-status').textContent !== arguments[0] || null",
            vec![json!(first_refresh)],
        )
        .await;

    // 13. A phone: the search fits the narrow window.
    browser.set_window_size(390, 844).await;
    browser.click(&browser.wait_for("#nav-search", WAIT).await).await;
    browser.wait_until("the search on a phone", WAIT, "return document.querySelectorAll('#events li.event').length > 0 || null", Vec::new()).await;
    fits_the_window(&browser, "the search at 390 px").await;
    shots.take(&browser, "11-phone-search").await;

    // Signing out forgets the token.
    browser.click(&browser.wait_for("#sign-out", WAIT).await).await;
    browser.wait_for("#token", WAIT).await;
    assert_eq!(browser.script("return sessionStorage.getItem('weir.readToken')", Vec::new()).await, Value::Null);
    browser.quit().await;
    eprintln!("console screenshots: {}", shots.dir.display());
}
