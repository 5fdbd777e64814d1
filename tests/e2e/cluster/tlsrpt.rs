//! TLS-RPT in a cluster: deliveries from two nodes to a domain with an MTA-STS policy and a
//! `_smtp._tls` record produce exactly one report, covering both nodes' sessions, however
//! many nodes flush at once.

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::node_config;
use crate::hardening::certs;
use crate::mta_sts::world::{DOMAIN, MxCert, World};
use crate::submission::client::Client;
use crate::support::herald::{Herald, herald_bin};
use crate::support::https::Response;
use crate::support::postgres::Postgres;
use crate::support::{self, free_addr};

const WAIT: Duration = Duration::from_secs(60);

fn gunzip_json(bytes: &[u8]) -> serde_json::Value {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .expect("gzip");
    serde_json::from_slice(&json).expect("JSON report")
}

/// A node delivering into the MTA-STS test world (`world_cfg`: its DNS, CA, MTA-STS host),
/// with an admin endpoint.
fn node(
    world_cfg: &toml::Table,
    pg: &Postgres,
    name: &str,
) -> (tempfile::TempDir, Herald, Arc<rustls::ClientConfig>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = node_config(dir.path(), pg, name);
    for key in ["dns", "delivery", "mta_sts", "report"] {
        cfg.insert(key.into(), world_cfg[key].clone());
    }
    support::set(
        &mut cfg,
        "tls.extra_roots",
        world_cfg["tls"]["extra_roots"].clone(),
    );
    support::set(&mut cfg, "admin.listen", free_addr().to_string());
    let herald = Herald::start(dir.path(), cfg);
    (dir, herald, tls)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_deliveries_make_exactly_one_report_with_both_nodes_sessions() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    w.dns.set_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!(
            "v=TLSRPTv1; rua=https://reports.{DOMAIN}:{}/tlsrpt",
            w.https_port
        ),
    );
    w.https().set_response("/tlsrpt", Response::status(200));
    let mx = w.start_mx("mx1.bank.test", MxCert::Valid);
    let text = std::fs::read_to_string(w.config_file(mx.addr().port())).expect("world config");
    let world_cfg: toml::Table = toml::from_str(&text).expect("world config parses");
    let pg = Postgres::start();
    let nodes: Vec<_> = ["node-a", "node-b"]
        .iter()
        .map(|n| node(&world_cfg, &pg, n))
        .collect();

    // One delivery from each node.
    for (i, (_, herald, tls)) in nodes.iter().enumerate() {
        let mut c = Client::submission_login(herald.smtp_addr("submission"), tls.clone()).await;
        let r = c
            .submit(
                "app@example.test",
                &[&format!("user{i}@{DOMAIN}")],
                &format!("From: <app@example.test>\r\nSubject: from node {i}\r\n\r\nHello."),
            )
            .await;
        assert_eq!(r.code, 250, "{}", r.text);
    }
    let got = tokio::task::block_in_place(|| mx.wait_for_messages(2, WAIT));
    assert_eq!(got.len(), 2);

    // Both nodes' sessions reach the shared counts (each node moves its counts every 2 s).
    let deadline = Instant::now() + WAIT;
    loop {
        let success = pg.query(&format!(
            "SELECT coalesce(sum((counts->>'success')::int), 0) FROM herald_tlsrpt_counts \
             WHERE domain = '{DOMAIN}'"
        ));
        if success == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both sessions never counted: {success}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Both nodes flush at the same moment: one report is built and sent, once.
    let flushes: Vec<_> = nodes
        .iter()
        .map(|(_, herald, _)| {
            let config = herald.config_path.clone();
            std::thread::spawn(move || {
                let out = Command::new(herald_bin())
                    .arg("--config")
                    .arg(&config)
                    .args(["report", "flush"])
                    .output()
                    .expect("run herald report flush");
                assert!(out.status.success(), "{out:?}");
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    let outputs: Vec<String> = flushes
        .into_iter()
        .map(|h| h.join().expect("flush thread"))
        .collect();
    let senders = outputs
        .iter()
        .filter(|o| o.contains("sent     bank.test"))
        .count();
    assert_eq!(senders, 1, "exactly one node sends: {outputs:#?}");

    let posts: Vec<_> = w
        .https()
        .posts()
        .into_iter()
        .filter(|(path, _, _)| path == "/tlsrpt")
        .collect();
    assert_eq!(posts.len(), 1, "one report for the domain and day");
    let report = gunzip_json(&posts[0].2);
    let policy = &report["policies"][0];
    assert_eq!(policy["policy"]["policy-domain"], DOMAIN);
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 2,
        "both nodes' sessions: {report}"
    );
    assert_eq!(pg.query("SELECT count(*) FROM herald_tlsrpt_counts"), "0");
    assert_eq!(pg.query("SELECT count(*) FROM herald_tlsrpt_outbox"), "0");

    // A later flush has nothing left to send again.
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(&nodes[0].1.config_path)
        .args(["report", "flush"])
        .output()
        .expect("run herald report flush");
    assert!(out.status.success());
    assert_eq!(
        w.https()
            .posts()
            .iter()
            .filter(|(path, _, _)| path == "/tlsrpt")
            .count(),
        1
    );
}
