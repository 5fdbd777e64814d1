//! `herald queue` in a cluster: through any node's admin endpoint, or on the database directly,
//! it shows and acts on every node's mail; the node holding a message applies the change.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::common::node_config;
use super::spool::{body, queued, seen, wait_until};
use crate::delivery::common::World;
use crate::hardening::certs;
use crate::submission::client::Client;
use crate::support::herald::{Herald, herald_bin};
use crate::support::postgres::Postgres;
use crate::support::{self, free_addr};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `herald --config CONFIG queue ARGS…`: (exit code, stdout, stderr).
fn queue(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .arg("queue")
        .args(args)
        .output()
        .expect("run herald queue");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(config: &Path, args: &[&str]) -> (String, String) {
    let (code, out, err) = queue(config, args);
    assert_eq!(code, 0, "herald queue {args:?} failed: {out}{err}");
    (out, err)
}

fn start(
    world: &World,
    pg: &Postgres,
    name: &str,
    admin: bool,
) -> (tempfile::TempDir, Herald, Arc<rustls::ClientConfig>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = node_config(dir.path(), pg, name);
    support::set(&mut cfg, "dns.servers", world.dns.config_value());
    support::set(&mut cfg, "delivery.port", world.port as i64);
    support::set(&mut cfg, "delivery.retry_schedule", vec!["1h"]);
    support::set(&mut cfg, "cluster.lease", "4s");
    if admin {
        support::set(&mut cfg, "admin.listen", free_addr().to_string());
    }
    let herald = Herald::start(dir.path(), cfg);
    (dir, herald, tls)
}

#[tokio::test(flavor = "multi_thread")]
async fn herald_queue_shows_and_acts_on_every_nodes_mail() {
    let mut world = World::new(1);
    let _sink = world.sink("mx.example.org", Default::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    // Nothing can be delivered: the mail stays queued on the node that accepted it.
    world.dns.fail("example.org");
    let pg = Postgres::start();
    let (_a_dir, mut a, a_tls) = start(&world, &pg, "node-a", false);
    let (_b_dir, b, _) = start(&world, &pg, "node-b", true);

    let mut c = Client::submission_login(a.smtp_addr("submission"), a_tls).await;
    let mut ids = Vec::new();
    for (subject, rcpts) in [
        ("kept", &["r@example.org", "s@EXAMPLE.org"][..]),
        ("deleted", &["r@example.org"][..]),
    ] {
        let r = c
            .submit(
                "app@example.test",
                rcpts,
                &format!("From: <app@example.test>\r\nSubject: {subject}\r\n\r\nHello."),
            )
            .await;
        assert_eq!(r.code, 250, "{}", r.text);
        ids.push(r.text.rsplit(' ').next().expect("queue id").to_string());
    }
    let (kept, deleted) = (ids[0].as_str(), ids[1].as_str());

    // Through node b's admin endpoint: node a's mail, with the node delivering it.
    let (list, how) = ok(&b.config_path, &["list"]);
    assert!(how.contains("using the running herald"), "{how}");
    for id in &ids {
        let line = list
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} listed: {list}"));
        assert!(line.contains("node node-a"), "{line}");
    }

    // The summary, counted by the database: one message per domain however many of its
    // recipients wait there, domains in lower case.
    let (json, _) = ok(&b.config_path, &["summary", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&json).expect("summary JSON");
    let counts = |rows: &serde_json::Value| {
        rows.as_array()
            .expect("rows")
            .iter()
            .filter(|c| c["messages"] != 0)
            .map(|c| {
                let key = c["key"].as_str().expect("key").to_string();
                (key, c["messages"].clone(), c["recipients"].clone())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        (
            &summary["messages"],
            &summary["recipients"],
            &summary["held"]
        ),
        (&2.into(), &3.into(), &0.into()),
        "{json}"
    );
    assert!(summary["bytes"].as_u64().is_some_and(|b| b > 0), "{json}");
    assert_eq!(
        counts(&summary["domains"]),
        [("example.org".to_string(), 2.into(), 3.into())]
    );
    assert_eq!(
        counts(&summary["apps"]),
        [("demo".to_string(), 2.into(), 3.into())]
    );
    assert_eq!(
        counts(&summary["ages"]),
        [("< 5m".to_string(), 2.into(), 3.into())]
    );

    // A page at a time, by id.
    let (first, more) = ok(&b.config_path, &["list", "--limit", "1"]);
    assert!(first.contains(kept) && !first.contains(deleted), "{first}");
    assert!(more.contains(&format!("--after {kept}")), "{more}");
    let (second, _) = ok(&b.config_path, &["list", "--limit", "1", "--after", kept]);
    assert!(
        second.contains(deleted) && !second.contains(kept),
        "{second}"
    );

    let (held, _) = ok(&b.config_path, &["hold", kept]);
    assert!(held.contains("held"), "{held}");
    a.wait_for_log("cluster: operator change applied", WAIT);
    assert_eq!(
        pg.query(&format!(
            "SELECT held FROM herald_messages WHERE id = '{kept}'"
        )),
        "t"
    );
    let (show, _) = ok(&b.config_path, &["show", kept]);
    assert!(show.contains("held:      yes"), "{show}");
    assert!(show.contains("node:      node-a"), "{show}");
    ok(&b.config_path, &["release", kept]);
    assert_eq!(
        pg.query(&format!(
            "SELECT held FROM herald_messages WHERE id = '{kept}'"
        )),
        "f"
    );

    let (gone, _) = ok(&b.config_path, &["delete", deleted]);
    assert!(gone.contains("deleted"), "{gone}");
    a.wait_for_log("message no longer this node's", WAIT);
    assert_eq!(
        pg.query(&format!(
            "SELECT count(*) FROM herald_messages WHERE id = '{deleted}'"
        )),
        "0"
    );

    // No admin endpoint on node a's machine: the command works on the database directly.
    let (list, how) = ok(&a.config_path, &["list"]);
    assert!(how.contains("working on the cluster's database"), "{how}");
    assert!(list.contains(kept) && !list.contains(deleted), "{list}");
    let (page, _) = ok(&a.config_path, &["list", "--limit", "5", "--after", kept]);
    assert!(page.contains("queue is empty"), "{page}");
    let (summary, _) = ok(&a.config_path, &["summary"]);
    assert!(
        summary.contains("1 message(s), 2 recipient(s) waiting"),
        "{summary}"
    );
    let (retried, _) = ok(&a.config_path, &["retry", kept]);
    assert!(
        retried.contains("scheduled for an attempt now"),
        "{retried}"
    );
    let (code, _, err) = queue(&a.config_path, &["hold", "00000000000000000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message"), "{err}");
}

/// A node stopped cleanly keeps its queued messages (its lease expires; no row is rewritten)
/// and, started again, reads them back from the database and delivers each once.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_takes_its_queued_mail_back_and_delivers_it() {
    let mut world = World::new(1);
    let sink = world.sink("mx.example.org", Default::default());
    world.dns.add_mx("example.org", 10, "mx.example.org");
    world.dns.fail("example.org");
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = node_config(dir.path(), &pg, "node-r");
    support::set(&mut cfg, "dns.servers", world.dns.config_value());
    support::set(&mut cfg, "delivery.port", world.port as i64);
    support::set(&mut cfg, "delivery.retry_schedule", vec!["1s"]);
    support::set(&mut cfg, "cluster.lease", "4s");
    let mut node = Herald::start(dir.path(), cfg.clone());
    let tags: Vec<String> = (0..3).map(|i| format!("restart-{i}")).collect();
    let mut c = Client::submission_login(node.smtp_addr("submission"), tls).await;
    for tag in &tags {
        let r = c
            .submit("app@example.test", &["r@example.org"], &body(tag))
            .await;
        assert_eq!(r.code, 250, "{}", r.text);
    }
    node.wait_for_log("delivery attempt: DNS trouble", WAIT);
    assert!(node.terminate().success());
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_messages WHERE lease_owner = 'node-r'"),
        "3"
    );

    world.dns.unfail("example.org");
    let _again = Herald::start(dir.path(), cfg);
    wait_until("the queue to empty", || queued(&pg) == 0);
    let seen = seen(&sink);
    for tag in &tags {
        assert_eq!(seen.get(tag), Some(&1), "{seen:?}");
    }
}
