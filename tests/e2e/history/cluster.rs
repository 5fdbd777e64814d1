//! With `[cluster]` the events go to the cluster's PostgreSQL too, and `herald log search`
//! reads them from there (so any node answers for every node); the webhook outbox is the
//! cluster's, so a live node sends the events of a node that died.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::rig::{Rig, WAIT, events_in, submit, verify, wait_posts, wait_search};
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;

#[test]
fn in_a_cluster_events_are_in_postgresql_and_searched_there() {
    let pg = Postgres::start();
    let rig = Rig::new(204);
    let mut cfg = rig.config();
    let dir = rig.w.dir.path();
    join_cluster(&mut cfg, &pg, dir, "node-a");
    let h = Herald::start(dir, cfg);
    submit(&h, "bob@example.net", "cluster");
    let found = wait_search(
        &h,
        &["--recipient", "bob@example.net", "--status", "delivered"],
        1,
    );
    assert_eq!(found[0]["node"], "node-a");
    let rows =
        pg.query("SELECT kind FROM herald_events WHERE recipient = 'bob@example.net' ORDER BY id");
    assert_eq!(
        rows.split_whitespace().collect::<Vec<_>>(),
        ["accepted", "delivered"],
        "{rows}"
    );
}

/// Makes `cfg` node `node_id` of the cluster on `pg` (its password file written in `dir`).
fn join_cluster(cfg: &mut toml::Table, pg: &Postgres, dir: &std::path::Path, node_id: &str) {
    crate::support::set(cfg, "cluster.database_url", pg.url());
    crate::support::set(
        cfg,
        "cluster.password_file",
        pg.password_file(dir).display().to_string(),
    );
    crate::support::set(cfg, "cluster.tls", "disable");
    crate::support::set(cfg, "cluster.node_id", node_id);
}

/// `rig`'s config for a node `node_id` of the cluster on `pg`, its data in `dir`.
fn node_config(rig: &Rig, pg: &Postgres, dir: &std::path::Path, node_id: &str) -> toml::Table {
    let world = rig.config();
    let mut cfg = crate::support::herald::base_config(dir);
    for section in ["dns", "delivery", "apps", "webhooks"] {
        if let Some(v) = world.get(section) {
            cfg.insert(section.into(), v.clone());
        }
    }
    crate::support::set(
        &mut cfg,
        "tls.extra_roots",
        world["tls"]["extra_roots"].clone(),
    );
    join_cluster(&mut cfg, pg, dir, node_id);
    // A POST's lease runs out this long (and a margin) after a node died holding it.
    crate::support::set(&mut cfg, "webhooks.timeout", "2s");
    cfg
}

#[test]
fn in_a_cluster_a_live_node_sends_the_webhook_events_of_a_node_killed_with_9() {
    let pg = Postgres::start();
    let rig = Rig::new(204);
    rig.hook.set_down(true);
    let mut a = Herald::start(
        rig.w.dir.path(),
        node_config(&rig, &pg, rig.w.dir.path(), "node-a"),
    );
    let rcpts = ["ann@example.net", "bob@example.net"];
    for (i, r) in rcpts.iter().enumerate() {
        submit(&a, r, &format!("cluster hook {i}"));
    }
    wait_search(&a, &["--status", "delivered"], rcpts.len());
    // Node A's batches (accepted and delivered of each) are in the cluster's outbox, and A
    // has tried to POST them; then it dies.
    let queued =
        "SELECT coalesce(sum(events), 0) FROM herald_webhook_batches WHERE node = 'node-a'";
    let deadline = Instant::now() + WAIT;
    while pg.query(queued).trim().parse::<usize>().unwrap_or(0) < 2 * rcpts.len() {
        assert!(
            Instant::now() < deadline,
            "A's batches never reached the cluster's outbox"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.wait_for_log("webhook: POST failed", WAIT);
    a.kill9();
    let tried: BTreeSet<String> = pg
        .query("SELECT webhook_id FROM herald_webhook_batches")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        rig.hook.posts().is_empty(),
        "nothing was acknowledged before the kill"
    );

    // The endpoint is back; node B (its own data, nothing of A's in it) sends A's events.
    rig.hook.set_down(false);
    let b_dir = tempfile::tempdir().expect("tempdir");
    let _b = Herald::start(b_dir.path(), node_config(&rig, &pg, b_dir.path(), "node-b"));
    let posts = wait_posts(&rig.hook, |p| {
        let got = events_in(p);
        rcpts.iter().all(|r| {
            ["accepted", "delivered"].iter().all(|k| {
                got.values()
                    .any(|(_, e)| e["kind"] == *k && e["recipient"] == *r)
            })
        })
    });
    for (_, e) in events_in(&posts).values() {
        assert_eq!(e["node"], "node-a", "{e}");
    }
    // The batches A made and tried arrive with the ids they had: receivers de-duplicate on them.
    let sent: BTreeSet<String> = posts.iter().map(|p| verify(p).0).collect();
    assert_eq!(sent, tried, "webhook-ids kept across nodes");
    let deadline = Instant::now() + WAIT;
    while pg
        .query("SELECT count(*) FROM herald_webhook_batches")
        .trim()
        != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the cluster's outbox never emptied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
