//! The PostgreSQL spool shared by three nodes: mail spread over them is delivered once; a
//! node killed mid-delivery has its mail delivered by the others once its lease expires (with
//! the duplicates that window allows counted); while PostgreSQL is down submissions get
//! `451 4.3.0` and delivery resumes when it is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::node_config;
use crate::delivery::common::{World, arrivals};
use crate::hardening::certs;
use crate::submission::client::Client;
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};
use crate::support::{self};

const WAIT: Duration = Duration::from_secs(60);

/// One node: its directory, the running herald and a TLS config trusting its certificate.
pub(super) struct Node {
    _dir: tempfile::TempDir,
    pub(super) herald: Herald,
    pub(super) tls: Arc<rustls::ClientConfig>,
}

/// `n` nodes on `pg`, delivering through `world` (DNS, MX port), with a short lease.
pub(super) fn nodes(world: &World, pg: &Postgres, n: usize, lease: &str) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let dir = tempfile::tempdir().expect("tempdir");
            let tls = certs(dir.path());
            let mut cfg = node_config(dir.path(), pg, &format!("node-{i}"));
            support::set(&mut cfg, "dns.servers", world.dns.config_value());
            support::set(&mut cfg, "delivery.port", world.port as i64);
            support::set(&mut cfg, "delivery.retry_schedule", vec!["1s"]);
            support::set(&mut cfg, "delivery.connect_timeout", "5s");
            support::set(&mut cfg, "cluster.lease", lease);
            let herald = Herald::start(dir.path(), cfg);
            Node {
                _dir: dir,
                herald,
                tls,
            }
        })
        .collect()
}

pub(super) fn body(tag: &str) -> String {
    format!(
        "From: <app@example.test>\r\nTo: <r@example.org>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@example.test>\r\n\r\nHello from the cluster tests."
    )
}

/// Submits one message per tag to `node` over one authenticated connection; the replies.
async fn submit(node: &Node, tags: &[String]) -> Vec<(u16, String)> {
    let mut c =
        Client::submission_login(node.herald.smtp_addr("submission"), node.tls.clone()).await;
    let mut out = Vec::new();
    for tag in tags {
        let r = c
            .submit("app@example.test", &["r@example.org"], &body(tag))
            .await;
        out.push((r.code, r.text));
    }
    out
}

/// Polls `cond` until true; panics with `what` after `WAIT`.
pub(super) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling a condition in another process (the database, the sink) with a deadline.
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(super) fn queued(pg: &Postgres) -> usize {
    pg.query("SELECT count(*) FROM herald_messages")
        .parse()
        .expect("count")
}

/// Each Message-ID's arrivals at the sink, keyed by tag.
pub(super) fn seen(sink: &SmtpSink) -> HashMap<String, usize> {
    arrivals(sink)
        .into_iter()
        .map(|(id, n)| {
            (
                id.trim_matches(['<', '>'])
                    .trim_end_matches("@example.test")
                    .to_string(),
                n,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_spread_over_three_nodes_is_delivered_once() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", SinkOptions::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    let pg = Postgres::start();
    let nodes = nodes(&world, &pg, 3, "4s");

    // Ten messages per node, the three nodes submitting at once.
    let per_node: Vec<Vec<String>> = (0..3)
        .map(|n| (0..10).map(|i| format!("spread-{n}-{i}")).collect())
        .collect();
    let (a, b, c) = tokio::join!(
        submit(&nodes[0], &per_node[0]),
        submit(&nodes[1], &per_node[1]),
        submit(&nodes[2], &per_node[2]),
    );
    for (code, text) in a.iter().chain(&b).chain(&c) {
        assert_eq!(*code, 250, "{text}");
    }
    let accepted_by =
        pg.query("SELECT accepted_by, count(*) FROM herald_messages GROUP BY 1 ORDER BY 1");
    sink.wait_for_messages(30, WAIT);
    wait_until("the cluster's queue to empty", || queued(&pg) == 0);
    let seen = seen(&sink);
    for tag in per_node.iter().flatten() {
        assert_eq!(
            seen.get(tag),
            Some(&1),
            "{tag} delivered exactly once: {seen:?}"
        );
    }
    assert_eq!(sink.messages().len(), 30, "no duplicate, nothing else");
    eprintln!("accepted_by (while queued): {accepted_by:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_nodes_mail_is_delivered_by_the_others_after_its_lease() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", SinkOptions::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    let pg = Postgres::start();
    let mut nodes = nodes(&world, &pg, 3, "3s");

    // Node 0 takes six messages and starts delivering them; the MX holds every transaction
    // after its end of data (the message received, no reply yet): node 0 dies there.
    sink.pause_data();
    let tags: Vec<String> = (0..6).map(|i| format!("killed-{i}")).collect();
    for (code, text) in submit(&nodes[0], &tags).await {
        assert_eq!(code, 250, "{text}");
    }
    sink.wait_for_held(1, WAIT);
    // A renewal is one row for the node (issue 29): node 0's lease moves on twice (every
    // 0.75 s) while its messages' rows stay exactly as they were (same row versions).
    let rows = || {
        pg.query("SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM herald_messages")
    };
    let lease = || pg.query("SELECT lease_until FROM herald_node_leases WHERE node_id = 'node-0'");
    let before = rows();
    for _ in 0..2 {
        let last = lease();
        wait_until("node 0's lease to be renewed", || lease() != last);
    }
    assert_eq!(rows(), before, "renewals left the message rows alone");
    // Connections are numbered from 1; every one so far is node 0's (no other node has mail).
    let connections_before_kill = sink.connections();
    nodes[0].herald.kill9();
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_messages WHERE lease_owner = 'node-0'"),
        "6",
        "every message is still node 0's until its lease expires"
    );
    sink.resume_data();

    // The other nodes adopt node 0's mail once its lease (3s) has expired, and deliver it.
    wait_until("every message to be delivered", || {
        let seen = seen(&sink);
        tags.iter().all(|t| seen.contains_key(t))
    });
    wait_until("the cluster's queue to empty", || queued(&pg) == 0);
    let adopted: usize = nodes[1..]
        .iter()
        .map(|n| {
            n.herald
                .log
                .lock()
                .expect("log")
                .iter()
                .filter(|l| l.contains("adopted messages whose lease had expired or was released"))
                .count()
        })
        .sum();
    assert!(adopted >= 1, "node 1 or node 2 adopted node 0's mail");

    // Duplicates: only the transactions node 0 had in flight when it died (the MX had the
    // whole message; node 0 never recorded the delivery), delivered again by the adopter.
    let in_flight_at_kill = sink
        .messages()
        .iter()
        .filter(|m| m.connection <= connections_before_kill)
        .count();
    let seen = seen(&sink);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 mid-delivery: 6 messages, {in_flight_at_kill} in flight at the kill, \
         {duplicates} duplicate(s) at the MX"
    );
    assert!(in_flight_at_kill >= 1);
    assert!(
        duplicates <= in_flight_at_kill,
        "no duplicate beyond the deliveries in flight when the node died: {seen:?}"
    );
    assert_eq!(seen.len(), 6, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_gives_451_and_delivery_resumes_when_it_is_back() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", SinkOptions::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    // The destination's DNS is failing: the first message waits in the queue.
    world.dns.fail("example.org");
    let mut pg = Postgres::start();
    let mut nodes = nodes(&world, &pg, 1, "3s");
    let node = &mut nodes[0];

    let first = submit(node, &["before-outage".to_string()]).await;
    assert_eq!(first[0].0, 250, "{}", first[0].1);
    node.herald
        .wait_for_log("delivery attempt: DNS trouble", WAIT);

    pg.stop();
    let refused = submit(node, &["during-outage".to_string()]).await;
    assert_eq!(refused[0].0, 451, "{}", refused[0].1);
    assert!(refused[0].1.contains("4.3.0"), "{}", refused[0].1);
    node.herald
        .wait_for_log("cannot renew this node's leases", WAIT);

    world.dns.unfail("example.org");
    pg.run();
    node.herald.wait_for_log("the database answers again", WAIT);
    let got = sink.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: before-outage"));
    wait_until("the queue to empty", || queued(&pg) == 0);
    let seen = seen(&sink);
    assert_eq!(seen.get("before-outage"), Some(&1), "{seen:?}");
    assert!(!seen.contains_key("during-outage"), "a 451 never delivers");
    // After the outage submissions are accepted again.
    let after = submit(node, &["after-outage".to_string()]).await;
    assert_eq!(after[0].0, 250, "{}", after[0].1);
    sink.wait_for_messages(2, WAIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_cleanly_hands_its_mail_over_without_waiting_for_the_lease() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", SinkOptions::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    // Nothing is delivered while node 0 runs: its mail stays queued under its lease.
    world.dns.fail("example.org");
    let pg = Postgres::start();
    // A lease far longer than the test's wait: only the release at shutdown can hand over.
    let mut nodes = nodes(&world, &pg, 2, "10m");
    let tags: Vec<String> = (0..3).map(|i| format!("handover-{i}")).collect();
    for (code, text) in submit(&nodes[0], &tags).await {
        assert_eq!(code, 250, "{text}");
    }
    nodes[0]
        .herald
        .wait_for_log("delivery attempt: DNS trouble", WAIT);
    assert!(nodes[0].herald.terminate().success());
    let log = nodes[0].herald.log.lock().expect("log").join("\n");
    assert!(log.contains("leases released for the other nodes"), "{log}");
    world.dns.unfail("example.org");
    // Node 1 adopts within its adoption round (5s), long before the 10-minute lease would
    // have expired.
    nodes[1].herald.wait_for_log(
        "adopted messages whose lease had expired or was released",
        WAIT,
    );
    wait_until("the cluster's queue to empty", || queued(&pg) == 0);
    let seen = seen(&sink);
    for tag in &tags {
        assert_eq!(seen.get(tag), Some(&1), "{seen:?}");
    }
}
