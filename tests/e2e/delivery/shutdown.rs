//! Shutdown drains the queue: SIGTERM during a delivery round lets the deliveries in flight
//! finish and records them, so a restart sends nothing twice; what is still in flight after
//! `[server] grace_period` is cut and recorded as not attempted.

use herald::spool::{RecipientStatus, Spool};

use super::common::{WAIT, World, arrivals, set, start, store_many, wait_lines};
use crate::support::smtp_sink::SinkOptions;

#[test]
fn sigterm_mid_round_then_restart_delivers_each_message_once() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    // Each delivery stops after the MX has the whole message and before its 250.
    sink.pause_data();
    let subjects: Vec<String> = (0..3).map(|i| format!("drain-{i}")).collect();
    store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &subjects,
    );
    let mut cfg = w.config();
    set(&mut cfg, "server", "grace_period", "20s");
    let mut h = start(&w, cfg.clone());
    sink.wait_for_held(1, WAIT);

    h.send_sigterm();
    h.wait_for_log("queue draining", WAIT);
    // The round in flight completes while herald shuts down.
    sink.resume_data();
    let status = h.wait_exit(WAIT);
    assert!(status.success(), "herald exits cleanly: {status:?}");
    // Log lines leave through their own thread; the last one, logged on the way out, too.
    h.wait_for_event("stopped", WAIT);
    let delivered_before = sink.messages().len();
    assert!(delivered_before >= 1, "the delivery in flight completed");
    drop(h);

    let mut h = start(&w, cfg);
    sink.wait_for_messages(3, WAIT);
    // Every message still queued at restart has finished before counting.
    let restarted_with = 3 - delivered_before;
    wait_lines(&mut h, "finished: every recipient", restarted_with);
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), 3, "every message delivered: {seen:?}");
    assert!(
        seen.values().all(|&n| n == 1),
        "each message arrives exactly once: {seen:?}"
    );
    let left = std::fs::read_dir(w.dir.path().join("spool/msg"))
        .expect("spool dir")
        .count();
    assert_eq!(left, 0, "finished messages leave the spool");
}

#[test]
fn a_delivery_still_running_at_the_end_of_the_grace_period_is_cut_and_not_counted() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    sink.pause_data();
    let id = store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &["cut-0".to_string()],
    )
    .remove(0);
    let mut cfg = w.config();
    set(&mut cfg, "server", "grace_period", "1s");
    let mut h = start(&w, cfg);
    sink.wait_for_held(1, WAIT);

    // The MX never answers: herald must not wait for it beyond the grace period.
    h.send_sigterm();
    let status = h.wait_exit(WAIT);
    assert!(status.success(), "herald exits cleanly: {status:?}");
    h.wait_for_log("recorded as not attempted", WAIT);
    drop(h);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let msg = rt.block_on(async {
        let (spool, _arrivals) = Spool::open_dir(&w.dir.path().join("spool")).expect("spool");
        spool
            .load(&id)
            .await
            .expect("the cut message is still queued")
    });
    let r = &msg.state.recipients[0];
    assert_eq!(r.status, RecipientStatus::Pending);
    assert_eq!(r.attempts, 0, "a cut delivery is not counted as an attempt");
    let reply = r.last_reply.clone().unwrap_or_default();
    assert!(reply.contains("not attempted"), "{reply}");
    assert!(
        r.next_attempt <= herald::clock::unix_now(),
        "due at once on restart"
    );
}
