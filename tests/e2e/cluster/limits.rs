//! Limits counted across the cluster: an app's `rate_limit` holds for the sum of its
//! submissions to every node, and failed AUTH attempts spread over the nodes lock out after the
//! configured count, per address and per user name.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use super::common::node_config;
use crate::delivery::common::World;
use crate::hardening::certs;
use crate::submission::client::Client;
use crate::support::herald::{DEMO_PASSWORD, Herald};
use crate::support::postgres::Postgres;
use crate::support::{self};

struct Node {
    _dir: tempfile::TempDir,
    herald: Herald,
    tls: Arc<rustls::ClientConfig>,
}

/// Three nodes on `pg`, each with `shape` applied to its config. Nothing can be delivered
/// (the recipient domain does not resolve): accepted mail stays queued.
fn three_nodes(world: &World, pg: &Postgres, shape: impl Fn(&mut toml::Table)) -> Vec<Node> {
    (0..3)
        .map(|i| {
            let dir = tempfile::tempdir().expect("tempdir");
            let tls = certs(dir.path());
            let mut cfg = node_config(dir.path(), pg, &format!("node-{i}"));
            support::set(&mut cfg, "dns.servers", world.dns.config_value());
            support::set(&mut cfg, "delivery.port", world.port as i64);
            support::set(&mut cfg, "delivery.retry_schedule", vec!["1h"]);
            shape(&mut cfg);
            let herald = Herald::start(dir.path(), cfg);
            Node {
                _dir: dir,
                herald,
                tls,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_rate_limit_holds_across_the_nodes() {
    const PER_MINUTE: usize = 6;
    let world = World::new(1);
    world.dns.fail("example.org");
    let pg = Postgres::start();
    let nodes = three_nodes(&world, &pg, |cfg| {
        support::set(cfg, "apps.demo.rate_limit", PER_MINUTE as i64);
    });
    let mut clients = Vec::new();
    for n in &nodes {
        clients
            .push(Client::submission_login(n.herald.smtp_addr("submission"), n.tls.clone()).await);
    }
    // Three times the limit, round robin over the nodes: each node alone would accept all of
    // its share (2N of 3N over a minute would pass a per-node limit of N).
    let started = Instant::now();
    let (mut accepted, mut refused) = (0usize, Vec::new());
    for i in 0..3 * PER_MINUTE {
        let c = &mut clients[i % 3];
        let r = c.cmd("MAIL FROM:<app@example.test>").await;
        if r.code != 250 {
            refused.push((i % 3, r));
            continue;
        }
        c.expect("RCPT TO:<r@example.org>", 250).await;
        c.expect("DATA", 354).await;
        c.send(format!(
            "From: <app@example.test>\r\nSubject: {i}\r\n\r\nHello.\r\n.\r\n"
        ))
        .await;
        let r = c.reply().await;
        assert_eq!(r.code, 250, "{}", r.text);
        accepted += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Tolerance: the bucket holds N at once and refills N per minute, so the cluster accepts
    // N plus what refilled while the test ran (N × elapsed / 60, rounded up), never 3N.
    let refill = (PER_MINUTE as f64 * elapsed / 60.0).ceil() as usize;
    assert!(
        accepted >= PER_MINUTE && accepted <= PER_MINUTE + refill,
        "accepted {accepted} of {} in {elapsed:.1} s with a limit of {PER_MINUTE}/min",
        3 * PER_MINUTE
    );
    assert_eq!(accepted + refused.len(), 3 * PER_MINUTE);
    for (_, r) in &refused {
        assert_eq!(r.code, 450, "{}", r.text);
        assert!(
            r.text
                .contains("4.7.1 app demo is over its rate limit of 6 messages per minute"),
            "{}",
            r.text
        );
    }
    for node in 0..3 {
        assert!(
            refused.iter().any(|(n, _)| *n == node),
            "node-{node} refused nothing: the limit is not shared"
        );
    }
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_messages"),
        accepted.to_string()
    );
    assert_eq!(
        pg.query("SELECT key FROM herald_rate_buckets"),
        "app:demo",
        "one bucket for the app, shared by the nodes"
    );
}

/// One AUTH PLAIN on implicit TLS to `node` from `from`: the reply.
async fn auth_from(node: &Node, from: Ipv4Addr, password: &str) -> (u16, String) {
    let mut c =
        Client::tls_from(from, node.herald.smtp_addr("submissions"), node.tls.clone()).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO app.test", 250).await;
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0demo\0{password}"));
    let r = c.cmd(&format!("AUTH PLAIN {token}")).await;
    (r.code, r.text)
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_spread_over_the_nodes_lock_out_an_address_and_slow_a_user_name() {
    let world = World::new(1);
    let pg = Postgres::start();
    let nodes = three_nodes(&world, &pg, |cfg| {
        support::set(cfg, "smtp.auth_max_failures", 3);
        support::set(cfg, "smtp.auth_max_user_failures", 4);
        support::set(cfg, "smtp.auth_failure_delay", "10ms");
        support::set(cfg, "smtp.auth_block", "5m");
    });
    let guesser = Ipv4Addr::new(127, 0, 0, 1);
    // One wrong guess per node: no node alone reaches 3.
    for n in &nodes {
        let (code, text) = auth_from(n, guesser, "wrong").await;
        assert_eq!(code, 535, "{text}");
    }
    // The fourth attempt, on a node that saw one failure, is refused: even the right password.
    let (code, text) = auth_from(&nodes[1], guesser, DEMO_PASSWORD).await;
    assert_eq!(code, 421, "{text}");
    assert!(
        text.contains("4.7.0 too many failed AUTH attempts from 127.0.0.1"),
        "{text}"
    );
    // Another address is not affected by that address's lockout.
    let (code, text) = auth_from(&nodes[2], Ipv4Addr::new(127, 0, 0, 2), "wrong").await;
    assert_eq!(code, 535, "{text}");
    // That was the user name's fourth failure (from two addresses, three nodes). A new
    // address is slowed for that user name (one verification at a time, after a delay), never
    // locked out: a wrong guess is refused as wrong, and the app's right password still works
    // from an address that never failed.
    let (code, text) = auth_from(&nodes[0], Ipv4Addr::new(127, 0, 0, 3), "wrong").await;
    assert_eq!(code, 535, "{text}");
    let (code, text) = auth_from(&nodes[1], Ipv4Addr::new(127, 0, 0, 4), DEMO_PASSWORD).await;
    assert_eq!(code, 235, "{text}");
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_auth_attempts WHERE outcome = 'f'"),
        "5"
    );
}
