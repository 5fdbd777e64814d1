//! A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven over the W3C
//! WebDriver HTTP API, for the admin pages' tests (/dmarc, /messages): start chromedriver on a
//! loopback port, open a session with a fresh profile, log in through `/login` with the admin
//! token, find elements, type, click, take a screenshot.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// chromedriver on a loopback port in its own process group, killed with the Chromium it
/// started when dropped (also when a test panics), so no browser outlives its test.
pub struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid: the signal reaches Chromium and its helpers too
        // (killing chromedriver alone leaves them running).
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The W3C "element" key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a page may take to show what a test waits for.
const PAGE_DEADLINE: Duration = Duration::from_secs(30);

impl Driver {
    /// Starts chromedriver and waits until it answers `/status`.
    pub async fn start() -> Driver {
        // reqwest is built without a default TLS provider; WebDriver is plain HTTP, but the
        // client still wants one chosen.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = crate::support::free_port_on(std::net::Ipv4Addr::LOCALHOST).port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await
                && r.status().is_success()
            {
                return d;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).expect("JSON body"));
        }
        let resp = req.send().await.expect("webdriver request");
        let bytes = resp.bytes().await.expect("webdriver reply");
        let v: Value = serde_json::from_slice(&bytes).expect("webdriver JSON");
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    /// A new browser session with its own empty profile in `profile`, headless, with the flags
    /// that keep Chromium off the (closed) network.
    pub async fn session(&self, profile: &std::path::Path) -> Session<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1200,1400",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = self
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await;
        Session {
            d: self,
            id: v["sessionId"].as_str().expect("session id").to_string(),
        }
    }
}

/// One browser window.
pub struct Session<'a> {
    d: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn call(&self, method: reqwest::Method, tail: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{tail}", self.id);
        self.d.call(method, &path, body).await
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The page's HTML as the browser has it now.
    pub async fn source(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/source", None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Every element matching the CSS selector (empty when none).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn one(&self, css: &str) -> String {
        self.find_all(css)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css}"))
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.one(css).await;
        let tail = format!("/element/{el}/value");
        self.call(reqwest::Method::POST, &tail, Some(json!({ "text": text })))
            .await;
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        let el = self.one(css).await;
        let tail = format!("/element/{el}/click");
        self.call(reqwest::Method::POST, &tail, Some(json!({})))
            .await;
    }

    /// Waits until `css` matches (a click on a form's submit returns before the next page has
    /// loaded); panics with the page after a deadline.
    pub async fn wait_for(&self, css: &str) -> Vec<String> {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let found = self.find_all(css).await;
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} in: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs in through the admin endpoint's `/login` form with `token`, then opens `page` until
    /// it shows `ready_css` (the login POST sets its cookie after the click has returned).
    pub async fn log_in_and_open(
        &self,
        admin: SocketAddr,
        token: &str,
        page: &str,
        ready_css: &str,
    ) {
        self.go(&format!("http://{admin}/login")).await;
        self.type_into("input[name=token]", token).await;
        self.click("button[type=submit]").await;
        // The form's POST answers `303 See Other` to `/` once the session cookie is set. Opening
        // another page before that cancels the POST still under way (a loaded machine shows it),
        // so wait until the browser has left /login.
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            let url = self.call(reqwest::Method::GET, "/url", None).await;
            if !url.as_str().unwrap_or_default().ends_with("/login") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the login form never answered: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            self.go(page).await;
            if !self.find_all(ready_css).await.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never logged in: {}",
                self.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("PNG decodes")
    }

    /// Ends the session (closes the window).
    pub async fn close(self) {
        self.call(reqwest::Method::DELETE, "", None).await;
    }
}
