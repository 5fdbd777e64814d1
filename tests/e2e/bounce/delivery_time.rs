//! Refusals at delivery time: a `550 5.1.1` suppresses the address (the next submission is
//! refused at RCPT with the reason and the date, and herald's own bounce names the class);
//! Gmail's `421 4.7.28` is a block: retried, never a suppression.

use super::{config, herald_cli, start, try_submit};
use crate::delivery::common::{WAIT, World};
use crate::support::smtp_sink::SinkOptions;

#[tokio::test(flavor = "multi_thread")]
async fn a_550_5_1_1_suppresses_the_address_and_the_next_submission_is_refused_at_rcpt() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let mx = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_reply_for: vec![(
                "gone@example.org".into(),
                "550 5.1.1 <gone@example.org>: The email account that you tried to reach does not exist".into(),
            )],
            ..SinkOptions::default()
        },
    );
    let app_mx = w.sink("mx.example.test", SinkOptions::default());
    let mut rig = start(&w, config(&w));
    let mut c = rig.login("demo").await;
    let r = try_submit(&mut c, "app@example.test", "gone@example.org", "first").await;
    assert_eq!(r.code, 250, "{r:?}");

    // herald's own bounce reaches the app's MAIL FROM, with the class of the refusal.
    let dsn = app_mx.wait_for_messages(1, WAIT);
    let text = dsn[0].text();
    assert!(text.contains("X-Herald-Bounce-Class: hard"), "{text}");
    let line = rig.herald.wait_for_event("suppressed", WAIT);
    assert!(line.contains("gone@example.org"), "{line}");
    assert!(mx.messages().is_empty());

    // The next message to it is refused at RCPT, with the reason and the date.
    let r = try_submit(&mut c, "news@example.test", "gone@example.org", "second").await;
    assert_eq!(r.code, 550, "{r:?}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(r.text.starts_with("5.1.1"), "{r:?}");
    assert!(r.text.contains("suppressed for example.test"), "{r:?}");
    assert!(r.text.contains(&today), "{r:?}");
    // Other recipients still go.
    let r = try_submit(&mut c, "app@example.test", "bob@example.org", "third").await;
    assert_eq!(r.code, 250, "{r:?}");
    mx.wait_for_messages(1, WAIT);

    // The operator sees it on the list and can remove it; then the address is taken again.
    let list = herald_cli(&rig, &["suppress", "list", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    assert_eq!(entries[0]["address"], "gone@example.org");
    assert_eq!(entries[0]["reason"], "hard_bounce");
    assert!(
        entries[0]["expires_at"].as_i64().is_some(),
        "hard bounces expire"
    );
    // The admin endpoint: JSON and a page.
    let json = super::admin_get(&rig, w.dir.path(), "/suppressions?domain=example.test");
    assert!(json.starts_with("HTTP/1.1 200"), "{json}");
    assert!(json.contains("\"address\":\"gone@example.org\""), "{json}");
    let page = super::admin_get(&rig, w.dir.path(), "/suppressions/page");
    assert!(
        page.contains("<td>gone@example.org</td><td>hard_bounce</td>"),
        "{page}"
    );
    herald_cli(
        &rig,
        &["suppress", "remove", "example.test", "gone@example.org"],
    );
    rig.herald.wait_for_event("unsuppressed", WAIT);
    let r = try_submit(&mut c, "app@example.test", "gone@example.org", "fourth").await;
    assert_eq!(r.code, 250, "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gmail_421_4_7_28_is_a_block_retried_and_never_a_suppression() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let mx = w.sink(
        "mx.example.org",
        SinkOptions {
            data_replies: vec![
                "421 4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP".into(),
            ],
            ..SinkOptions::default()
        },
    );
    let mut cfg = config(&w);
    // Traffic shaping suspends a destination after a reputation deferral (15 minutes by
    // default): short here, so the retry comes within the test.
    crate::delivery::common::set(&mut cfg, "shaping", "suspend_for", "1s");
    let mut rig = start(&w, cfg);
    let mut c = rig.login("demo").await;
    let r = try_submit(&mut c, "app@example.test", "bob@example.org", "blocked").await;
    assert_eq!(r.code, 250, "{r:?}");
    let line = rig.herald.wait_for_event("classified", WAIT);
    assert!(
        line.contains("class=\"block\"") || line.contains("class=block"),
        "{line}"
    );
    assert!(line.contains("deferred"), "{line}");
    // Retried and delivered on the next attempt.
    mx.wait_for_messages(1, WAIT);
    // Never suppressed: the same address is taken again at once.
    let r = try_submit(&mut c, "app@example.test", "bob@example.org", "again").await;
    assert_eq!(r.code, 250, "{r:?}");
    let stats = super::app_stats(&rig);
    let demo = stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["app"] == "demo"))
        .expect("demo stats");
    assert_eq!(demo["day"]["block"], 1, "{stats}");
    assert_eq!(demo["day"]["hard"], 0, "{stats}");
}

/// A server may answer RCPT with `421` and close (RFC 5321 §3.8): herald reads those last words
/// as the deferral they are (classified, with the server's reply), not as a broken session,
/// and delivers on the next attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_421_at_rcpt_then_close_is_a_deferral_with_the_servers_words() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let mx = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_replies: vec!["421 4.3.2 shutting down for maintenance, try again later".into()],
            ..SinkOptions::default()
        },
    );
    let mut rig = start(&w, config(&w));
    let mut c = rig.login("demo").await;
    let r = try_submit(&mut c, "app@example.test", "carol@example.org", "closing").await;
    assert_eq!(r.code, 250, "{r:?}");
    let line = rig.herald.wait_for_event("classified", WAIT);
    assert!(line.contains("deferred"), "{line}");
    assert!(
        line.contains("421 4.3.2 shutting down for maintenance"),
        "the server's own reply is recorded: {line}"
    );
    // Retried and delivered on the next attempt.
    mx.wait_for_messages(1, WAIT);
}
