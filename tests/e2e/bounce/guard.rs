//! The per-app guard: an app with 12% hard bounces over its last 500 messages is paused (its
//! submissions get `451 4.7.1`, its queued mail is held) while another app's mail is
//! delivered; `herald app resume` lets it flow again.

use super::{config, herald_cli, start, try_submit};
use crate::delivery::common::{WAIT, World};
use crate::support::smtp_sink::SinkOptions;

#[tokio::test(flavor = "multi_thread")]
async fn an_app_with_12_percent_hard_bounces_is_paused_while_another_app_flows() {
    const MESSAGES: usize = 500;
    const DEAD: usize = 60;
    let mut w = World::new(3);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.net", 10, "mx.example.net");
    w.dns.add_mx("slow.example.com", 10, "mx.slow.example.com");
    let live = w.sink("mx.example.org", SinkOptions::default());
    let _dead = w.sink(
        "mx.example.net",
        SinkOptions {
            rcpt_replies: vec!["550 5.1.1 no such user".into(); DEAD],
            ..SinkOptions::default()
        },
    );
    let slow = w.sink(
        "mx.slow.example.com",
        SinkOptions {
            data_replies: vec!["451 4.3.0 try again later".into(); 1000],
            ..SinkOptions::default()
        },
    );
    let mut rig = start(&w, config(&w));
    let mut c = rig.login("demo").await;
    // One message that keeps being retried: queued mail of the app, held once it is paused.
    let r = try_submit(
        &mut c,
        "app@example.test",
        "queued@slow.example.com",
        "held",
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let mut dead = 0;
    for i in 0..MESSAGES {
        // Every 25th message in 3 goes to a dead address: 60 of 500, 12%.
        let to = if i % 25 < 3 && dead < DEAD {
            dead += 1;
            format!("dead-{i}@example.net")
        } else {
            format!("reader-{i}@example.org")
        };
        let r = try_submit(&mut c, "app@example.test", &to, &format!("m{i}")).await;
        assert_eq!(r.code, 250, "{i}: {r:?}");
    }
    assert_eq!(dead, DEAD);
    let line = rig.herald.wait_for_event("paused", WAIT);
    assert!(line.contains("demo"), "{line}");
    assert!(line.contains("hard bounce rate 12.00%"), "{line}");

    // Its submissions are refused with the reason; its queued mail is held.
    let r = c.cmd("MAIL FROM:<app@example.test>").await;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(
        r.text.starts_with("4.7.1 app paused: hard bounce rate"),
        "{r:?}"
    );
    rig.herald.wait_for_log("held: the app is paused", WAIT);
    let attempts_while_paused = slow.rejected().len();

    // Another app flows meanwhile.
    let mut other = rig.login("other").await;
    let before = live.messages().len();
    let r = try_submit(
        &mut other,
        "billing@example.test",
        "payer@example.org",
        "invoice",
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = live.wait_for_messages(before + 1, WAIT);
    assert!(got.iter().any(|m| m.rcpts == ["payer@example.org"]));
    assert_eq!(
        slow.rejected().len(),
        attempts_while_paused,
        "the paused app's queued message was not attempted while another app's mail went"
    );

    let stats = super::app_stats(&rig);
    let demo = stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["app"] == "demo"))
        .expect("demo stats");
    assert_eq!(demo["day"]["hard"], DEAD, "{stats}");
    assert!(demo["paused"].as_str().is_some(), "{stats}");

    // The operator resumes it: submissions are taken and the held message is tried again.
    let out = herald_cli(&rig, &["app", "resume", "demo"]);
    assert!(out.contains("resumed demo"), "{out}");
    rig.herald.wait_for_event("resumed", WAIT);
    c.expect("RSET", 250).await;
    let r = try_submit(&mut c, "app@example.test", "reader-x@example.org", "after").await;
    assert_eq!(r.code, 250, "{r:?}");
    slow.wait_for_rejected(attempts_while_paused + 1, WAIT);
}
