//! A real browser for tests: Debian's headless Chromium driven by its ChromeDriver over the
//! W3C WebDriver protocol, spoken with the tests' own HTTP client (reqwest; no WebDriver
//! crate). `bash deploy/chromium.sh ensure` installs both (tests/run.sh runs it); a test
//! without them fails saying so, it never skips.
//!
//! Only what the console test needs: navigate, find by CSS selector, click, type (with
//! WebDriver's key codes, e.g. [`CTRL_ENTER`]), read text, properties and the URL, run a
//! script, resize the window, screenshots as PNG files.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// WebDriver's key for a pressed Control, then Enter, then releasing every modifier.
pub const CTRL_ENTER: &str = "\u{E009}\u{E007}\u{E000}";

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium and ChromeDriver: `WEIR_CHROMIUM` and `WEIR_CHROMEDRIVER`, else `chromium`
/// and `chromedriver` on PATH. Panics with how to install them when missing.
pub fn programs() -> (PathBuf, PathBuf) {
    let find = |env: &str, name: &str| -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(env) {
            return Some(PathBuf::from(path)).filter(|p| p.is_file());
        }
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
    };
    match (find("WEIR_CHROMIUM", "chromium"), find("WEIR_CHROMEDRIVER", "chromedriver")) {
        (Some(chromium), Some(driver)) => (chromium, driver),
        _ => panic!(
            "the browser tests need Chromium and ChromeDriver: run `bash deploy/chromium.sh ensure` \
             (Debian: apt-get install chromium chromium-driver), or set WEIR_CHROMIUM and WEIR_CHROMEDRIVER"
        ),
    }
}

/// A ChromeDriver process and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    log: PathBuf,
}

/// Something on the page, by its WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver (logging to `<dir>/chromedriver.log`) and a headless Chromium
    /// window of `width`×`height` with its profile in `dir`.
    pub async fn start(dir: &Path, width: u32, height: u32) -> Browser {
        let (chromium, chromedriver) = programs();
        let port = crate::free_port();
        let log = dir.join("chromedriver.log");
        let log_file = std::fs::File::create(&log).expect("create chromedriver log");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new(), client, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser.client.get(format!("{}/status", browser.base)).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            if let Ok(Some(exit)) = browser.driver.try_wait() {
                panic!("chromedriver exited with {exit}:\n{}", browser.log_tail());
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 20 s:\n{}", browser.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root in containers, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--lang=en-US",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let session = browser.command(reqwest::Method::POST, "/session", Some(capabilities)).await;
        browser.session = session["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {session}")).to_owned();
        browser
    }

    /// ChromeDriver's log, its last lines.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error, naming it.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method.clone(), path, body).await {
            Ok(value) => value,
            Err(error) => panic!("webdriver {method} {path}: {error}"),
        }
    }

    async fn try_command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = if path == "/session" { format!("{}/session", self.base) } else { format!("{}/session/{}{path}", self.base, self.session) };
        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("no answer from chromedriver: {e}"))?;
        let status = response.status();
        let answer: Value = response.json().await.map_err(|e| format!("not JSON ({status}): {e}"))?;
        if !status.is_success() {
            return Err(format!("{status}: {} {}", answer["value"]["error"], answer["value"]["message"]));
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    pub async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its value.
    pub async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Runs `script` like [`Browser::script`], waiting until it returns an element (not
    /// `null`); that element, to click or type into as a user would.
    pub async fn wait_for_script_element(&self, what: &str, timeout: Duration, script: &str, args: Vec<Value>) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.script(script, args.clone()).await;
            if let Some(id) = value[ELEMENT_KEY].as_str() {
                return Element(id.to_owned());
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; the page says:\n{}", self.page_text().await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The elements `selector` matches now.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self.command(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": selector}))).await;
        found.as_array().map(|all| all.iter().filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))).collect()).unwrap_or_default()
    }

    /// The first element `selector` matches, once one does and is displayed (within `timeout`).
    pub async fn wait_for(&self, selector: &str, timeout: Duration) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            for element in self.find_all(selector).await {
                if self.displayed(&element).await {
                    return element;
                }
            }
            assert!(Instant::now() < deadline, "no displayed {selector:?} within {timeout:?}; the page says:\n{}", self.page_text().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` (a script like [`Browser::script`]'s, returning `null` or
    /// `false` while not yet) gives a value; that value.
    pub async fn wait_until(&self, what: &str, timeout: Duration, check: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.script(check, args.clone()).await;
            if !(value.is_null() || value == false) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}; the page says:\n{}", self.page_text().await);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The visible text of the page (for failure messages).
    pub async fn page_text(&self) -> String {
        match self.try_command(reqwest::Method::POST, "/execute/sync", Some(json!({"script": "return document.body.innerText", "args": []}))).await {
            Ok(text) => text.as_str().unwrap_or_default().chars().take(4000).collect(),
            Err(error) => format!("(cannot read the page: {error})"),
        }
    }

    pub async fn displayed(&self, element: &Element) -> bool {
        // Gone since it was found (the page re-rendered): not displayed.
        self.try_command(reqwest::Method::GET, &format!("/element/{}/displayed", element.0), None).await.is_ok_and(|v| v == true)
    }

    pub async fn click(&self, element: &Element) {
        self.command(reqwest::Method::POST, &format!("/element/{}/click", element.0), Some(json!({}))).await;
    }

    pub async fn clear(&self, element: &Element) {
        self.command(reqwest::Method::POST, &format!("/element/{}/clear", element.0), Some(json!({}))).await;
    }

    /// Types `text` into the element, as keys (WebDriver key codes included).
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.command(reqwest::Method::POST, &format!("/element/{}/value", element.0), Some(json!({"text": text}))).await;
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> String {
        self.command(reqwest::Method::GET, &format!("/element/{}/text", element.0), None).await.as_str().unwrap_or_default().to_owned()
    }

    /// A DOM property (`value`, `checked`, `textContent`, ...).
    pub async fn property(&self, element: &Element, name: &str) -> Value {
        self.command(reqwest::Method::GET, &format!("/element/{}/property/{name}", element.0), None).await
    }

    /// Presses and releases each key of `keys` wherever the focus is (WebDriver actions),
    /// as a user's keyboard does; not typed into any element.
    pub async fn press_keys(&self, keys: &str) {
        let actions: Vec<Value> = keys.chars().flat_map(|key| [json!({"type": "keyDown", "value": key}), json!({"type": "keyUp", "value": key})]).collect();
        self.command(reqwest::Method::POST, "/actions", Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}))).await;
        self.command(reqwest::Method::DELETE, "/actions", None).await;
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("screenshot as base64")).expect("screenshot base64");
        assert!(bytes.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Browser {
    /// Ends the session (Chromium exits); drop then stops ChromeDriver.
    pub async fn quit(mut self) {
        let _ = self.try_command(reqwest::Method::DELETE, "", None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver leads its own process group, and the Chromium it started is in it:
        // one signal to the group ends both, also when a test panicked mid-session.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", group.as_str()]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
