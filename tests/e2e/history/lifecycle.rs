//! The history across a node's life: a clean stop writes the events still queued, and the
//! webhooks follow `herald reload`.

use serde_json::Value;

use super::rig::{Rig, WAIT, events_in, log_search, submit, wait_posts, wait_search};
use crate::delivery::common::set;
use crate::support::herald::Herald;

#[test]
fn a_delivery_finishing_during_sigterm_has_its_delivered_event_written_before_exit() {
    let rig = Rig::new(204);
    let mut cfg = rig.config();
    set(&mut cfg, "server", "grace_period", "20s");
    let mut h = Herald::start(rig.w.dir.path(), cfg);
    // The delivery is held after the MX has the message, so it ends during the drain: its
    // `delivered` event is emitted moments before herald exits.
    rig.sink.pause_data();
    submit(&h, "late@example.net", "sigterm");
    rig.sink.wait_for_held(1, WAIT);
    h.send_sigterm();
    h.wait_for_log("queue draining", WAIT);
    rig.sink.resume_data();
    let status = h.wait_exit(WAIT);
    assert!(status.success(), "herald exits cleanly: {status:?}");
    // Read from the file after exit: only what the writer wrote before exiting is there.
    let delivered = log_search(&h, &["--status", "delivered"]);
    assert!(
        delivered
            .iter()
            .any(|e| e["recipient"] == "late@example.net"),
        "the delivered event is in the history: {delivered:?}"
    );
}

#[test]
fn a_webhook_url_added_by_reload_receives_the_next_deliverys_events() {
    let rig = Rig::new(204);
    let cfg = rig.config();
    let mut without = cfg.clone();
    let demo = without["apps"]["demo"].as_table_mut().expect("demo app");
    demo.remove("webhook_url");
    demo.remove("webhook_secret");
    let mut h = Herald::start(rig.w.dir.path(), without);
    submit(&h, "before@example.net", "before the reload");
    wait_search(&h, &["--status", "delivered"], 1);

    std::fs::write(&h.config_path, toml::to_string(&cfg).expect("toml")).expect("write");
    h.send_signal(1);
    h.wait_for_event("reloaded", WAIT);
    submit(&h, "after@example.net", "after the reload");
    let posts = wait_posts(&rig.hook, |p| {
        events_in(p)
            .values()
            .any(|(_, e)| e["kind"] == "delivered" && e["recipient"] == "after@example.net")
    });
    let got = events_in(&posts);
    let rcpts: Vec<&Value> = got.values().map(|(_, e)| &e["recipient"]).collect();
    assert!(
        !rcpts.iter().any(|r| *r == "before@example.net"),
        "events from before the webhook was configured are not sent: {rcpts:?}"
    );
}
