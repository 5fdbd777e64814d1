//! Shaping limits hold for the whole cluster: two nodes on one PostgreSQL, a rule for the test
//! MX, mail accepted by both nodes at once. Each node takes its share of the limit from the
//! number of live nodes: for two connections the MX never sees more than two sessions at once
//! (each node alone would open two); for 12 messages a minute it receives one from each node
//! at once (each node alone would send two) and the rest wait.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::common::node_config;
use crate::delivery::common::{World, arrivals, logged};
use crate::hardening::certs;
use crate::submission::client::Client;
use crate::support::herald::Herald;
use crate::support::postgres::Postgres;
use crate::support::smtp_sink::SinkOptions;
use crate::support::{self};

const WAIT: Duration = Duration::from_secs(60);
/// The rule's connections, for the whole cluster.
const CONNECTIONS: usize = 2;
/// Messages each node accepts.
const PER_NODE: usize = 6;

struct Node {
    _dir: tempfile::TempDir,
    herald: Herald,
    tls: Arc<rustls::ClientConfig>,
}

/// A node on `pg` delivering to `world`, with a rule for `*.prov.test` of `limit` (a line of
/// TOML, e.g. `connections = 2`).
fn start_node(world: &World, pg: &Postgres, name: &str, limit: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = node_config(dir.path(), pg, name);
    support::set(&mut cfg, "dns.servers", world.dns.config_value());
    support::set(&mut cfg, "delivery.port", world.port as i64);
    support::set(&mut cfg, "delivery.retry_schedule", vec!["1s", "1s"]);
    let rule: toml::Table = toml::from_str(&format!(
        "name = \"testprov\"\nmx = [\"*.prov.test\"]\n{limit}\n"
    ))
    .expect("rule");
    support::set(
        &mut cfg,
        "shaping.rules",
        toml::Value::Array(vec![toml::Value::Table(rule)]),
    );
    let herald = Herald::start(dir.path(), cfg);
    Node {
        _dir: dir,
        herald,
        tls,
    }
}

/// Nodes A and B on `pg` with the rule's `limit`, once each counts both as live.
fn two_nodes(world: &World, pg: &Postgres, limit: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = ["node-a", "node-b"]
        .iter()
        .map(|name| start_node(world, pg, name, limit))
        .collect();
    for n in &mut nodes {
        wait_logged(
            &mut n.herald,
            "traffic shaping: 2 live nodes share every destination's limits",
        );
    }
    nodes
}

/// Submits `count` messages to `node` (the `i`th), each with its node and number as subject.
async fn submit(node: &Node, i: usize, count: usize) {
    let mut c =
        Client::submission_login(node.herald.smtp_addr("submission"), node.tls.clone()).await;
    for k in 0..count {
        let r = c
            .submit(
                "app@example.test",
                &["bob@prov.test"],
                &format!("From: <app@example.test>\r\nSubject: node {i} message {k}\r\n\r\nHello."),
            )
            .await;
        assert_eq!(r.code, 250, "{}", r.text);
    }
}

/// Waits until `h` has logged `needle` (before now or from now on).
fn wait_logged(h: &mut Herald, needle: &str) {
    if logged(h, needle).is_empty() {
        h.wait_for_log(needle, WAIT);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_limit_holds_for_the_whole_cluster_not_per_node() {
    let mut world = World::new(1);
    world.dns.add_mx("prov.test", 10, "mx.prov.test");
    let sink = world.sink("mx.prov.test", SinkOptions::default());
    // Every transaction waits at its end of data until resumed: the deliveries the nodes let
    // run at once are all open at the MX together.
    sink.pause_data();
    let pg = Postgres::start();
    let nodes = two_nodes(&world, &pg, &format!("connections = {CONNECTIONS}"));

    for (i, n) in nodes.iter().enumerate() {
        submit(n, i, PER_NODE).await;
    }
    // One delivery from each node at the MX at once: each has its share, no more.
    sink.wait_for_held(CONNECTIONS, WAIT);
    sink.resume_data();

    let all = 2 * PER_NODE;
    sink.wait_for_messages(all, WAIT);
    let seen = arrivals(&sink);
    assert_eq!(seen.len(), all, "every message delivered: {seen:?}");
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
    assert_eq!(
        sink.max_concurrent(),
        CONNECTIONS,
        "the MX saw {} sessions at once for a cluster-wide limit of {CONNECTIONS} \
         ({} connections in all)",
        sink.max_concurrent(),
        sink.connections()
    );
    for n in &nodes {
        assert!(
            logged(&n.herald, "delivery status notification").is_empty(),
            "nothing bounced"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_holds_for_the_whole_cluster_not_per_node() {
    // 12 a minute for the cluster: 6 for each of two nodes, whose bucket holds ten seconds'
    // worth, one message; the next waits ten seconds. A node counting the whole 12 for itself
    // would hold two and send both of its messages at once.
    let mut world = World::new(1);
    world.dns.add_mx("prov.test", 10, "mx.prov.test");
    let sink = world.sink("mx.prov.test", SinkOptions::default());
    let pg = Postgres::start();
    let mut nodes = two_nodes(&world, &pg, "messages_per_minute = 12");
    for (i, n) in nodes.iter().enumerate() {
        submit(n, i, 2).await;
    }
    for n in &mut nodes {
        wait_logged(&mut n.herald, "traffic shaping: not attempted now");
    }
    sink.wait_for_messages(2, WAIT);
    let mut subjects: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| {
            m.text()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: node "))
                .map(|s| s[..1].to_string())
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["0", "1"],
        "one message from each node within the cluster's rate, the others wait"
    );
}
