//! A test MX answers `421 4.7.28` (Gmail's reputation deferral) to the fourth message: herald
//! suspends the destination (no attempt until the hold ends, by herald's own clock), then
//! delivers the rest and wins its limits back; every message arrives once, none bounces.

use std::time::{Duration, SystemTime};

use crate::delivery::common::{
    World, arrivals, logged, set, start, store_many, wait_finished, wait_lines,
};
use crate::support::smtp_sink::SinkOptions;

const SUSPEND: Duration = Duration::from_secs(2);

/// A JSON log line's time and fields.
fn parsed(line: &str) -> (SystemTime, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    let ts = v["timestamp"].as_str().expect("timestamp");
    (humantime::parse_rfc3339(ts).expect("RFC 3339 timestamp"), v)
}

#[test]
fn a_reputation_deferral_suspends_the_destination_then_it_recovers_and_nothing_bounces() {
    let mut w = World::new(1);
    w.dns.add_mx("prov.test", 10, "mx.prov.test");
    let mut data_replies = vec!["250 2.0.0 queued".to_string(); 3];
    data_replies.push(
        "421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail".into(),
    );
    let sink = w.sink(
        "mx.prov.test",
        SinkOptions {
            data_replies,
            ..SinkOptions::default()
        },
    );
    let subjects: Vec<String> = (0..10).map(|i| format!("shaped-{i}")).collect();
    let ids = store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@prov.test"],
        &subjects,
    );
    let mut cfg = w.config();
    set(&mut cfg, "server", "log_format", "json");
    set(&mut cfg, "shaping", "suspend_for", "2s");
    let rule: toml::Table =
        toml::from_str("name = \"testprov\"\nmx = [\"*.prov.test\"]\nconnections = 1\n")
            .expect("rule");
    set(
        &mut cfg,
        "shaping",
        "rules",
        toml::Value::Array(vec![toml::Value::Table(rule)]),
    );
    let mut h = start(&w, cfg);

    for id in &ids {
        wait_finished(&mut h, id);
    }
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), 10, "every message delivered: {seen:?}");
    assert!(
        seen.values().all(|n| *n == 1),
        "each exactly once: {seen:?}"
    );
    assert_eq!(sink.rejected().len(), 1, "the one 421, at end of data");
    assert!(
        logged(&h, "delivery status notification").is_empty(),
        "nothing bounced"
    );
    wait_lines(&mut h, "destination back to its full limits", 1);

    // Herald's own clock: after the suspension, no attempt before the hold ends.
    let suspended = logged(&h, "destination suspended");
    assert_eq!(
        suspended.len(),
        1,
        "one push-back, one suspension: {suspended:#?}"
    );
    let (at, fields) = parsed(&suspended[0]);
    assert_eq!(fields["destination"], "testprov");
    assert!(
        fields["reply"]
            .as_str()
            .is_some_and(|r| r.contains("4.7.28")),
        "{fields}"
    );
    let attempts: Vec<(SystemTime, serde_json::Value)> = logged(&h, "delivery attempt\"")
        .iter()
        .map(|l| parsed(l))
        .collect();
    let after: Vec<&SystemTime> = attempts
        .iter()
        .map(|(t, _)| t)
        .filter(|t| **t > at)
        .collect();
    let first = after.first().expect("attempts after the suspension");
    let gap = first.duration_since(at).expect("later");
    assert!(
        gap >= SUSPEND - Duration::from_millis(20),
        "an attempt {gap:?} into a 2 s suspension"
    );
    let refused = attempts
        .iter()
        .filter(|(_, f)| f["reply"].as_str().is_some_and(|r| r.starts_with("421")))
        .count();
    assert_eq!(
        refused, 1,
        "only the one 421: the held destination was not tried meanwhile"
    );

    let recovered = logged(&h, "destination back to its full limits");
    let (back, fields) = parsed(&recovered[0]);
    assert_eq!(fields["destination"], "testprov");
    assert!(back > at);
}
