//! The `/messages/page` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`) over the W3C WebDriver HTTP API, as the /dmarc page test does: log in with
//! the admin token, search by recipient with the form, and see the message's timeline
//! (accepted → delivered).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::rig::{Rig, submit, wait_search};
use crate::support::herald::Herald;

/// chromedriver on a loopback port, killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    async fn start() -> Driver {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let port = crate::support::free_port_on(std::net::Ipv4Addr::LOCALHOST).port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) must be installed");
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
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
                .body(serde_json::to_vec(&b).expect("json"));
        }
        let resp = req.send().await.expect("webdriver request");
        let v: Value = serde_json::from_slice(&resp.bytes().await.expect("reply")).expect("JSON");
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }
}

/// One browser session.
struct Session<'a> {
    d: &'a Driver,
    id: String,
}

impl<'a> Session<'a> {
    async fn new(d: &'a Driver, profile: &std::path::Path) -> Session<'a> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--window-size=1200,1400",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = d.call(reqwest::Method::POST, "/session", Some(caps)).await;
        Session {
            d,
            id: v["sessionId"].as_str().expect("session id").to_string(),
        }
    }

    async fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.id);
        self.d
            .call(reqwest::Method::POST, &path, Some(json!({ "url": url })))
            .await;
    }

    async fn source(&self) -> String {
        let path = format!("/session/{}/source", self.id);
        let v = self.d.call(reqwest::Method::GET, &path, None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let path = format!("/session/{}/elements", self.id);
        let v = self
            .d
            .call(
                reqwest::Method::POST,
                &path,
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

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.one(css).await;
        let path = format!("/session/{}/element/{el}/value", self.id);
        self.d
            .call(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await;
    }

    async fn click(&self, css: &str) {
        let el = self.one(css).await;
        let path = format!("/session/{}/element/{el}/click", self.id);
        self.d
            .call(reqwest::Method::POST, &path, Some(json!({})))
            .await;
    }

    /// Waits until `css` matches (a click on a form's submit returns before the next page has
    /// loaded); panics with the page after a deadline.
    async fn wait_for(&self, css: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
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

    async fn close(self) {
        let path = format!("/session/{}", self.id);
        self.d.call(reqwest::Method::DELETE, &path, None).await;
    }
}

#[test]
fn messages_page_in_headless_chromium_searches_and_shows_the_timeline() {
    let rig = Rig::new(204);
    let mut cfg = rig.config();
    let admin = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    let h = Herald::start(rig.w.dir.path(), cfg);
    submit(&h, "bob@example.net", "page");
    submit(&h, "ann@example.net", "other");
    wait_search(&h, &["--status", "delivered"], 2);
    let token = std::fs::read_to_string(rig.w.dir.path().join("admin.token"))
        .expect("admin token file")
        .trim()
        .to_string();
    let profile = tempfile::tempdir().expect("profile dir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let driver = Driver::start().await;
        let s = Session::new(&driver, profile.path()).await;

        s.go(&format!("http://{admin}/messages/page")).await;
        assert!(s.source().await.contains("authentication required"));
        assert!(s.find_all("form#search").await.is_empty());

        s.go(&format!("http://{admin}/login")).await;
        s.type_into("input[name=token]", &token).await;
        s.click("button[type=submit]").await;

        // Logged in once the login POST has set its cookie: the page shows the form.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            s.go(&format!("http://{admin}/messages/page")).await;
            if !s.find_all("form#search").await.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never logged in: {}",
                s.source().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.type_into("form#search input[name=recipient]", "bob@example.net")
            .await;
        s.click("form#search button[type=submit]").await;
        s.wait_for("p#count").await;
        let messages = s.find_all("section.message").await;
        assert_eq!(
            messages.len(),
            1,
            "one message for bob: {}",
            s.source().await
        );
        let steps = s.find_all("section.message ol.timeline li").await;
        assert_eq!(steps.len(), 2, "accepted then delivered");
        assert_eq!(s.find_all("li.accepted").await.len(), 1);
        assert_eq!(s.find_all("li.delivered").await.len(), 1);
        let html = s.source().await;
        assert!(!html.contains("ann@example.net"), "only bob's message");
        let accepted = html.find("class=\"accepted\"").expect("accepted step");
        let delivered = html.find("class=\"delivered\"").expect("delivered step");
        assert!(accepted < delivered, "the timeline runs oldest first");
        s.close().await;
    });
}
