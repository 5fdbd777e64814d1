//! `herald cluster status`: every node registered and alive, its load, and a warning when one
//! node's configuration differs from the others'.

use std::path::Path;
use std::process::Command;

use super::common::node_config;
use crate::support::herald::{Herald, herald_bin};
use crate::support::postgres::Postgres;
use crate::support::{self};

/// Runs `herald --config CONFIG cluster status`: (exit code, stdout, stderr).
fn status(config: &Path) -> (i32, String, String) {
    cluster(config, &["status"])
}

/// Runs `herald --config CONFIG cluster ARGS…`: (exit code, stdout, stderr).
fn cluster(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .arg("cluster")
        .args(args)
        .output()
        .expect("run herald cluster status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn node_line<'a>(out: &'a str, node: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{node} ")))
        .unwrap_or_else(|| panic!("{node} listed: {out}"))
}

#[test]
fn cluster_status_lists_the_nodes_and_warns_when_a_config_differs() {
    let pg = Postgres::start();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = node_config(dir.path(), &pg, &format!("node-{i}"));
        if i == 2 {
            // The third node got another rate limit for the app: a real difference.
            support::set(&mut cfg, "apps.demo.rate_limit", 50);
        }
        nodes.push(Herald::start(dir.path(), cfg));
        dirs.push(dir);
        if i == 1 {
            // Two nodes with the same settings (other paths and ports): no warning.
            let (code, out, err) = status(&nodes[0].config_path);
            assert_eq!(code, 0, "{out}{err}");
            assert!(!out.contains("warning"), "{out}");
            let a = node_line(&out, "node-0")
                .split_whitespace()
                .nth(5)
                .map(str::to_string);
            let b = node_line(&out, "node-1")
                .split_whitespace()
                .nth(5)
                .map(str::to_string);
            assert_eq!(a, b, "same digest: {out}");
        }
    }
    let (code, out, err) = status(&nodes[1].config_path);
    assert_eq!(code, 1, "digests differ: {out}{err}");
    for i in 0..3 {
        let line = node_line(&out, &format!("node-{i}"));
        assert!(line.contains(" alive "), "{line}");
        assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    }
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: config digests differ"))
        .unwrap_or_else(|| panic!("digest warning: {out}"));
    assert!(warning.contains("node-2 (digest"), "{warning}");
    assert!(
        !warning.contains("node-0,") && !warning.contains("node-1,"),
        "{warning}"
    );
    // The load columns: nothing leased or queued, no SMTP connection open.
    let cols: Vec<&str> = node_line(&out, "node-0").split_whitespace().collect();
    assert_eq!(&cols[6..9], &["0", "0", "0"], "{out}");

    // Forgetting: refused for a node that is alive; a retired one (stopped, last heartbeat an
    // hour ago) leaves the list; an unknown name is an error.
    let (code, _, err) = cluster(&nodes[0].config_path, &["forget", "node-2"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop it first"), "{err}");
    assert!(nodes[2].terminate().success());
    pg.query(
        "UPDATE herald_nodes SET last_seen = now() - interval '1 hour' WHERE node_id = 'node-2'",
    );
    let (code, out, err) = cluster(&nodes[0].config_path, &["forget", "node-2"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = status(&nodes[0].config_path);
    assert_eq!(code, 0, "the differing node is gone: {out}{err}");
    assert!(!out.contains("node-2"), "{out}");
    let (code, _, err) = cluster(&nodes[0].config_path, &["forget", "node-9"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no node"), "{err}");
}
