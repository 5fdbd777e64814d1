//! Durability: kill -9 with mail waiting loses nothing; after restart everything is delivered.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use super::common::{World, logged, start, store_many, wait_lines};
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

#[test]
fn kill_9_with_200_messages_waiting_then_restart_delivers_all() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    // The receiver is down: its address refuses connections.
    let ip = w.down_host("mx.example.org");
    let subjects: Vec<String> = (0..200).map(|i| format!("durable-{i:03}")).collect();
    store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &subjects,
    );
    let cfg = w.config();
    let mut h = start(&w, cfg.clone());
    assert!(
        logged(&h, "queue started")
            .iter()
            .any(|l| l.contains("waiting=200"))
    );
    // Let herald work on them (attempts, deferrals, state writes), then crash it mid-way.
    wait_lines(&mut h, "delivery attempt", 250);
    h.kill9();
    drop(h);

    let mut h = start(&w, cfg);
    let started = logged(&h, "queue started");
    assert!(
        started.iter().any(|l| l.contains("waiting=200")),
        "{started:#?}"
    );
    // Receivers up on the same address.
    let listener = TcpListener::bind((ip, w.port)).expect("rebind the receiver's address");
    let sink = SmtpSink::start(listener, SinkOptions::default());
    let got = sink.wait_for_messages(200, Duration::from_secs(120));
    wait_lines(&mut h, "finished: every recipient", 200);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in sink.messages() {
        let text = m.text();
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .expect("Message-ID")
            .to_string();
        *seen.entry(id).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "durability: {} messages delivered, {} distinct, {duplicates} duplicate(s)",
        got.len().max(sink.messages().len()),
        seen.len()
    );
    assert_eq!(seen.len(), 200, "every message delivered");
    assert_eq!(
        duplicates, 0,
        "the receivers were down when herald was killed: no 250 could be lost"
    );
    let left: Vec<_> = std::fs::read_dir(w.dir.path().join("spool/msg"))
        .expect("spool dir")
        .filter_map(Result::ok)
        .collect();
    assert!(
        left.is_empty(),
        "finished messages leave the spool: {left:?}"
    );
}
