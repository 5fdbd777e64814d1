//! One test's world for the history tests: DNS, an MX sink (`gone@example.net` answered
//! `550 5.1.1`), a webhook endpoint (HTTPS, test CA) at `hooks.example.test`, and a herald
//! config with demo's webhook pointing there and fast retries.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use serde_json::Value;

use crate::delivery::common::{World, set};
use crate::support::ca::{TestCa, Validity};
use crate::support::herald::{Herald, herald_bin};
use crate::support::https::{HttpsServer, Post, Response, header};
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

/// Upper bound for any wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(60);

/// The webhook key (32 bytes) and its secret as configured.
pub const KEY: [u8; 32] = *b"history-test-key-32-bytes-long!!";

/// The configured secret: `whsec_` and the key in base64.
pub fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// The test's world.
pub struct Rig {
    /// DNS, the test directory, MX addresses.
    pub w: World,
    /// The MX of example.net.
    pub sink: SmtpSink,
    /// The app's webhook endpoint.
    pub hook: HttpsServer,
    /// Its URL.
    pub url: String,
}

impl Rig {
    /// The world, with the endpoint answering `hook_status` at first.
    pub fn new(hook_status: u16) -> Rig {
        let mut w = World::new(1);
        w.dns.add_mx("example.net", 10, "mx.example.net");
        let ca = TestCa::new();
        let sink = w.sink(
            "mx.example.net",
            SinkOptions {
                rcpt_reply_for: vec![("gone@example.net".into(), "550 5.1.1 no such user".into())],
                // STARTTLS offered: the delivered events say which TLS the delivery used.
                tls: Some(ca.server_config(&["mx.example.net"], Validity::Current)),
                ..SinkOptions::default()
            },
        );
        ca.write_root(&w.dir.path().join("test-root.pem"));
        let l = crate::support::listener();
        let addr = l.local_addr().expect("addr");
        let IpAddr::V4(ip) = addr.ip() else {
            unreachable!("loopback v4")
        };
        w.dns.add_a("hooks.example.test", ip);
        let hook = HttpsServer::start(
            l,
            ca.server_config(&["hooks.example.test"], Validity::Current),
            vec![("/hook", Response::status(hook_status))],
        );
        let url = format!("https://hooks.example.test:{}/hook", addr.port());
        Rig { w, sink, hook, url }
    }

    /// herald's config: the world's, demo's webhook, loopback allowed, fast retries.
    pub fn config(&self) -> toml::Table {
        let mut cfg = self.w.config();
        let root = self.w.dir.path().join("test-root.pem");
        set(
            &mut cfg,
            "tls",
            "extra_roots",
            toml::Value::Array(vec![root.display().to_string().into()]),
        );
        let demo = cfg["apps"]["demo"].as_table().cloned().expect("demo app");
        let mut demo = demo;
        demo.insert("webhook_url".into(), self.url.clone().into());
        demo.insert("webhook_secret".into(), secret().into());
        let mut apps = toml::Table::new();
        apps.insert("demo".into(), toml::Value::Table(demo));
        cfg.insert("apps".into(), toml::Value::Table(apps));
        set(
            &mut cfg,
            "webhooks",
            "allow_networks",
            toml::Value::Array(vec!["127.0.0.0/8".into()]),
        );
        set(&mut cfg, "webhooks", "retry_initial", "100ms");
        set(&mut cfg, "webhooks", "retry_max", "400ms");
        set(&mut cfg, "webhooks", "batch_size", 2);
        cfg
    }
}

/// Submits one message as demo to `to`.
pub fn submit(h: &Herald, to: &str, subject: &str) {
    let addr = h.smtp_addr("submissions");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(crate::production::submit_as_demo(addr, to, subject));
}

/// Checks a POST the way an app does, independently of herald's code: the three Standard
/// Webhooks headers, a recent timestamp, and `v1,` + base64(HMAC-SHA256(key,
/// "id.timestamp.body")). Returns the webhook id and the parsed body.
pub fn verify(post: &Post) -> (String, Value) {
    let (_, headers, body) = post;
    let id = header(headers, "webhook-id").expect("webhook-id header");
    let ts = header(headers, "webhook-timestamp").expect("webhook-timestamp header");
    let sig = header(headers, "webhook-signature").expect("webhook-signature header");
    let ts_n: u64 = ts.parse().expect("timestamp is unix seconds");
    let now = herald::clock::unix_now();
    assert!(
        now.abs_diff(ts_n) < 300,
        "timestamp {ts_n} is not now ({now})"
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &KEY);
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, &signed).as_ref())
    );
    assert!(
        sig.split(' ').any(|s| s == expected),
        "signature {sig} does not verify (expected {expected})"
    );
    assert_eq!(
        header(headers, "content-type"),
        Some("application/json"),
        "JSON body"
    );
    let v: Value = serde_json::from_slice(body).expect("JSON body");
    (id.to_string(), v)
}

/// The events in `posts` (every signature verified), by event id, each with the webhook id
/// it came in.
pub fn events_in(posts: &[Post]) -> BTreeMap<i64, (String, Value)> {
    let mut out = BTreeMap::new();
    for p in posts {
        let (id, body) = verify(p);
        assert_eq!(body["type"], "message.events");
        for e in body["data"]["events"].as_array().expect("events array") {
            out.insert(e["id"].as_i64().expect("event id"), (id.clone(), e.clone()));
        }
    }
    out
}

/// Waits until the POSTs satisfy `done`; returns them.
pub fn wait_posts(hook: &HttpsServer, done: impl Fn(&[Post]) -> bool) -> Vec<Post> {
    let deadline = Instant::now() + WAIT;
    loop {
        let posts = hook.posts();
        if done(&posts) {
            return posts;
        }
        assert!(
            Instant::now() < deadline,
            "webhook POSTs never satisfied the test: {} arrived",
            posts.len()
        );
        hook.wait_for_posts(
            posts.len() + 1,
            deadline.saturating_duration_since(Instant::now()),
        );
    }
}

/// Runs `herald log search ARGS --json` and returns the events.
pub fn log_search(h: &Herald, args: &[&str]) -> Vec<Value> {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(&h.config_path)
        .args(["log", "search", "--json"])
        .args(args)
        .output()
        .expect("run herald log search");
    assert!(
        out.status.success(),
        "herald log search failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("JSON array")
}

/// Waits until `herald log search ARGS` finds at least `n` events.
pub fn wait_search(h: &Herald, args: &[&str], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = log_search(h, args);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "herald log search {args:?} found {found:?}"
        );
        // The writer commits within milliseconds; ask again shortly.
        std::thread::sleep(Duration::from_millis(100));
    }
}
