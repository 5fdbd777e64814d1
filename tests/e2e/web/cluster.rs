//! `[web]` with `[cluster]`: one node orders, the others serve the certificate it stored.

use std::time::{Duration, Instant};

use super::rig::{HOST, STS_HOST, WAIT};
use crate::support::ca::{TestCa, Validity};
use crate::support::dns::DnsServer;
use crate::support::herald::{Herald, base_config, point_at};
use crate::support::pebble::{Pebble, PebbleOptions, curl};
use crate::support::postgres::Postgres;

/// Waits (with a deadline) until herald has logged a line containing `needle`, whether before
/// or after its ready line.
fn logged(h: &Herald, needle: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if h.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            return true;
        }
        // The log is filled by another thread reading the child's stderr.
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn one_node_orders_and_the_other_serves_the_stored_certificate() {
    let pg = Postgres::start();
    let dns = DnsServer::start();
    let ca = TestCa::new();
    let (a, b) = (crate::support::free_addr(), crate::support::free_addr());
    dns.add_ip(HOST, a.ip());
    dns.add_ip(STS_HOST, a.ip());
    let shared = tempfile::tempdir().expect("tempdir");
    let pebble = Pebble::start(
        shared.path(),
        &ca,
        &dns,
        PebbleOptions {
            tls_port: a.port(),
            validity_secs: 3600,
        },
    );
    let root = pebble.write_root(&shared.path().join("pebble-root.pem"));
    let node = |id: &str, web: std::net::SocketAddr| -> (tempfile::TempDir, toml::Table) {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        ca.write_issued(
            &[HOST],
            Validity::Current,
            &certs.join("herald.crt"),
            &certs.join("herald.key"),
        );
        let mut cfg = base_config(dir.path());
        point_at(&mut cfg, dir.path(), &dns, &ca);
        let test_ca = dir.path().join("test-ca.pem").display().to_string();
        crate::support::set(
            &mut cfg,
            "tls.extra_roots",
            vec![test_ca, root.display().to_string()],
        );
        crate::support::set(&mut cfg, "cluster.database_url", pg.url());
        let pw = pg.password_file(dir.path()).display().to_string();
        crate::support::set(&mut cfg, "cluster.password_file", pw);
        crate::support::set(&mut cfg, "cluster.tls", "disable");
        crate::support::set(&mut cfg, "cluster.node_id", id);
        let web_section: toml::Table = toml::from_str(&format!(
            "[web]\nlisten = \"{web}\"\nacme_directory = \"{}\"\nacme_retry = \"1s\"\n\n\
             [web.mta_sts.\"example.test\"]\nmx = [\"mx.example.test\"]\n",
            pebble.directory
        ))
        .unwrap();
        cfg.extend(web_section);
        (dir, cfg)
    };
    let (dir_a, cfg_a) = node("node-a", a);
    let mut node_a = Herald::start(dir_a.path(), cfg_a);
    node_a.wait_for_log("certificate issued and in force", WAIT);
    let (dir_b, cfg_b) = node("node-b", b);
    let node_b = Herald::start(dir_b.path(), cfg_b);
    assert!(
        logged(&node_b, "certificate from the cluster in force"),
        "node b adopts the stored certificate:\n{}",
        node_b.log.lock().unwrap().join("\n")
    );
    let policy = curl(
        &root,
        &format!("https://{STS_HOST}:{}/.well-known/mta-sts.txt", b.port()),
        &[(STS_HOST, b)],
        &[],
    );
    assert!(policy.status.success(), "node b serves with it: {policy:?}");
    let b_log = node_b.log.lock().unwrap().join("\n");
    assert!(
        !b_log.contains("certificate issued and in force"),
        "node b ordered nothing:\n{b_log}"
    );
    let issued = node_a
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("certificate issued and in force"))
        .count();
    assert_eq!(issued, 1, "one order in the cluster");
}
