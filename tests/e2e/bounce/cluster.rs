//! With `[cluster]` the suppression list is one for all nodes: a hard bounce seen by one node
//! refuses the address at RCPT on the other (the real PostgreSQL, as tests/e2e/cluster).

use super::{Rig, try_submit};
use crate::cluster::common::node_config;
use crate::delivery::common::{WAIT, World};
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;
use crate::support::smtp_sink::SinkOptions;
use crate::support::{self};

fn node(world: &World, pg: &Postgres, id: &str, dir: &std::path::Path) -> Rig {
    let tls = crate::hardening::certs(dir);
    let mut cfg = node_config(dir, pg, id);
    support::set(&mut cfg, "dns.servers", world.dns.config_value());
    support::set(&mut cfg, "delivery.port", world.port as i64);
    support::set(&mut cfg, "delivery.retry_schedule", vec!["1s"]);
    support::set(&mut cfg, "bounce.refresh_interval", "200ms");
    let herald = Herald::start(dir, cfg);
    Rig {
        herald,
        tls,
        feedback: support::free_addr(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suppression_made_on_one_node_applies_on_the_other() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let _mx = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_reply_for: vec![("gone@example.org".into(), "550 5.1.1 no such user".into())],
            ..SinkOptions::default()
        },
    );
    let pg = Postgres::start();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut a = node(&w, &pg, "node-a", dir_a.path());
    let mut b = node(&w, &pg, "node-b", dir_b.path());
    let mut ca = a.login("demo").await;
    let r = try_submit(&mut ca, "app@example.test", "gone@example.org", "first").await;
    assert_eq!(r.code, 250, "{r:?}");
    let line = a.herald.wait_for_event("suppressed", WAIT);
    assert!(line.contains("gone@example.org"), "{line}");
    // Node B learns it from the database and refuses the address at RCPT.
    let line = b.herald.wait_for_event("suppression_synced", WAIT);
    assert!(line.contains("gone@example.org"), "{line}");
    let mut cb = b.login("demo").await;
    let r = try_submit(&mut cb, "app@example.test", "gone@example.org", "second").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text.starts_with("5.1.1"), "{r:?}");
    let rows = pg.query("SELECT address, reason FROM suppressions");
    assert!(rows.contains("gone@example.org"), "{rows}");
}
