//! Delivered and bounced events found by `herald log search` and POSTed, signed, to the app's
//! endpoint — through an outage (same webhook-id on retry) and through a kill -9; and webhook
//! URLs on loopback refused unless allowed.

use std::time::Duration;

use serde_json::Value;

use super::rig::{Rig, WAIT, events_in, log_search, submit, wait_posts, wait_search};
use crate::support::herald::Herald;
use crate::support::https::Response;

/// Whether `events` holds an event of `kind` for `rcpt`.
fn has(events: &[&Value], kind: &str, rcpt: &str) -> bool {
    events
        .iter()
        .any(|e| e["kind"] == kind && e["recipient"] == rcpt)
}

#[test]
fn delivered_and_bounced_are_searchable_and_reach_the_endpoint_signed_through_an_outage() {
    // The endpoint fails (503) at first: the first batch is retried with the same id.
    let rig = Rig::new(503);
    let h = Herald::start(rig.w.dir.path(), rig.config());
    submit(&h, "bob@example.net", "invoice 1");
    submit(&h, "gone@example.net", "invoice 2");
    rig.sink.wait_for_messages(1, WAIT);

    // Found by herald log search: delivered for bob (with the MX's reply), bounced for gone.
    let bob = wait_search(
        &h,
        &["--recipient", "BOB@example.net", "--status", "delivered"],
        1,
    );
    assert_eq!(bob[0]["app"], "demo");
    assert!(
        bob[0]["queue_id"].as_str().is_some_and(|q| !q.is_empty()),
        "{bob:?}"
    );
    assert!(
        bob[0]["message_id"]
            .as_str()
            .is_some_and(|m| m.contains('@')),
        "{bob:?}"
    );
    assert!(
        bob[0]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("250")),
        "{bob:?}"
    );
    assert!(
        bob[0]["remote"]
            .as_str()
            .is_some_and(|r| r.contains("mx.example.net")),
        "{bob:?}"
    );
    assert_eq!(bob[0]["attempt"], 1);
    // The TLS of the delivery and the policy it ran under (no MTA-STS, no DANE here).
    assert!(
        bob[0]["tls"]
            .as_str()
            .is_some_and(|t| t.starts_with("TLSv1.")),
        "{bob:?}"
    );
    assert_eq!(bob[0]["tls_policy"], "opportunistic", "{bob:?}");
    let queue_id = bob[0]["queue_id"].as_str().unwrap_or_default().to_string();
    let timeline = log_search(&h, &["--queue-id", &queue_id]);
    let kinds: Vec<&str> = timeline.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["delivered", "accepted"],
        "newest first: {timeline:?}"
    );
    let gone = wait_search(
        &h,
        &["--recipient", "gone@example.net", "--status", "bounced"],
        1,
    );
    assert!(
        gone[0]["reply"]
            .as_str()
            .is_some_and(|r| r.contains("550 5.1.1")),
        "{gone:?}"
    );
    assert!(
        log_search(
            &h,
            &["--status", "delivered", "--sender", "nobody@example.test"]
        )
        .is_empty()
    );

    // Two failed attempts of the same batch, then the endpoint comes back.
    let failed = wait_posts(&rig.hook, |p| p.len() >= 2);
    let first_id = super::rig::verify(&failed[0]).0;
    assert_eq!(
        super::rig::verify(&failed[1]).0,
        first_id,
        "a retry keeps its webhook-id"
    );
    rig.hook.set_response("/hook", Response::status(204));
    let posts = wait_posts(&rig.hook, |p| {
        let got = events_in(p);
        let events: Vec<&Value> = got.values().map(|(_, e)| e).collect();
        ["bob@example.net", "gone@example.net"]
            .iter()
            .all(|r| has(&events, "accepted", r))
            && has(&events, "delivered", "bob@example.net")
            && has(&events, "bounced", "gone@example.net")
    });
    let got = events_in(&posts);
    let delivered = got
        .values()
        .find(|(_, e)| e["kind"] == "delivered")
        .map(|(_, e)| e.clone())
        .unwrap_or_default();
    assert_eq!(delivered["queue_id"], queue_id.as_str());
    assert_eq!(delivered["app"], "demo");
    assert!(
        posts
            .iter()
            .skip(2)
            .any(|p| super::rig::verify(p).0 == first_id),
        "the failed batch arrives again with the same webhook-id"
    );
    // herald keeps its connection to the endpoint (which keeps it alive): not one TLS
    // handshake per POST.
    assert!(
        rig.hook.connections() < posts.len(),
        "{} POSTs over {} connections",
        posts.len(),
        rig.hook.connections()
    );
}

#[test]
fn events_in_the_outbox_survive_kill_9_and_arrive_after_restart() {
    let rig = Rig::new(204);
    rig.hook.set_down(true);
    let cfg = rig.config();
    let mut h = Herald::start(rig.w.dir.path(), cfg.clone());
    let rcpts = ["a@example.net", "b@example.net", "c@example.net"];
    for (i, r) in rcpts.iter().enumerate() {
        submit(&h, r, &format!("crash {i}"));
    }
    wait_search(&h, &["--status", "delivered"], rcpts.len());
    h.wait_for_log("webhook: POST failed", WAIT);
    h.kill9();
    rig.hook.set_down(false);
    let _h = Herald::start(rig.w.dir.path(), cfg);
    wait_posts(&rig.hook, |p| {
        let got = events_in(p);
        let events: Vec<&Value> = got.values().map(|(_, e)| e).collect();
        rcpts
            .iter()
            .all(|r| has(&events, "accepted", r) && has(&events, "delivered", r))
    });
}

#[test]
fn webhook_urls_on_loopback_or_private_addresses_are_refused_unless_allowed() {
    let rig = Rig::new(204);
    // A literal loopback address: the configuration is refused at start, naming the key.
    let mut cfg = rig.config();
    cfg["webhooks"]
        .as_table_mut()
        .expect("webhooks")
        .remove("allow_networks");
    let mut literal = cfg.clone();
    literal["apps"]["demo"]["webhook_url"] = "https://127.0.0.1:8443/hook".into();
    let path = rig.w.dir.path().join("literal.toml");
    std::fs::write(&path, toml::to_string(&literal).expect("toml")).expect("write");
    let mut h = Herald::spawn(&path, literal, &["serve"]);
    let line = h.wait_for_log("apps.demo.webhook_url", WAIT);
    assert!(line.contains("forgery"), "{line}");
    assert_eq!(h.wait_exit(WAIT).code(), Some(2));

    // A name that resolves to loopback: refused when herald connects (`webhook test`).
    let path = rig.w.dir.path().join("name.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&path)
        .args(["webhook", "test", "demo"])
        .output()
        .expect("run herald webhook test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("forgery"), "{text}");
    assert_eq!(rig.hook.posts().len(), 0, "nothing reached the endpoint");

    // Allowed by the administrator: the test event arrives, signed.
    let allowed = rig.w.dir.path().join("allowed.toml");
    std::fs::write(&allowed, toml::to_string(&rig.config()).expect("toml")).expect("write");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&allowed)
        .args(["webhook", "test", "demo"])
        .output()
        .expect("run herald webhook test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let posts = rig.hook.wait_for_posts(1, Duration::from_secs(5));
    let (_, body) = super::rig::verify(&posts[0]);
    assert_eq!(body["type"], "webhook.test");
}
