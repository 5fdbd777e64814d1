//! `herald queue summary` and `herald queue list --limit/--after` against a running herald:
//! counts per destination domain, app and age (text and JSON), traffic shaping's held
//! destination in the summary and on `/metrics`, and the list paged without gaps or repeats.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use crate::delivery::common::{World, set, start, store_many, wait_lines};
use crate::support::free_addr;
use crate::support::herald::herald_bin;
use crate::support::smtp_sink::SinkOptions;

/// Runs `herald --config CONFIG queue ARGS…`: (stdout, stderr), exit code 0 asserted.
fn queue(config: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .arg("queue")
        .args(args)
        .output()
        .expect("run herald queue");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "queue {args:?}: {stdout}{stderr}"
    );
    (stdout, stderr)
}

/// The queue ids a `herald queue list` printed, in order.
fn listed(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("  age "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn metrics(addr: SocketAddr, data: &Path) -> String {
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token file");
    let mut s = TcpStream::connect(addr).expect("connect admin");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn queue_summary_counts_per_domain_app_and_age_and_shows_shaping_and_list_pages() {
    let mut w = World::new(3);
    w.dns.add_mx("far.test", 10, "mx.far.test");
    w.dns.add_mx("other.test", 10, "mx.other.test");
    w.dns.add_mx("slow.test", 10, "mx.slow.test");
    w.down_host("mx.far.test");
    w.down_host("mx.other.test");
    let _slow = w.sink(
        "mx.slow.test",
        SinkOptions {
            greeting: Some("421 4.7.28 [127.0.0.1] unusual rate of unsolicited mail".into()),
            ..SinkOptions::default()
        },
    );
    let spool = w.dir.path().join("spool");
    let subjects = |p: &str, n: usize| (0..n).map(|i| format!("{p}-{i}")).collect::<Vec<_>>();
    let mut ids = store_many(
        &spool,
        "app@example.test",
        &["bob@far.test"],
        &subjects("far", 3),
    );
    ids.extend(store_many(
        &spool,
        "app@example.test",
        &["x@other.test", "y@far.test"],
        &subjects("both", 2),
    ));
    ids.extend(store_many(
        &spool,
        "app@example.test",
        &["z@slow.test"],
        &subjects("slow", 1),
    ));
    ids.sort();
    let admin = free_addr();
    let mut cfg = w.config();
    set(&mut cfg, "admin", "listen", admin.to_string());
    set(
        &mut cfg,
        "delivery",
        "retry_schedule",
        toml::Value::Array(vec!["1h".into()]),
    );
    set(&mut cfg, "shaping", "suspend_for", "1h");
    let mut h = start(&w, cfg);
    let config = h.config_path.clone();
    wait_lines(&mut h, "destination suspended", 1);
    // far: 5 jobs, other: 2, slow: 1 — each tried once, then an hour's wait.
    wait_lines(&mut h, "delivery attempt queue_id", 8);

    let (out, _) = queue(&config, &["summary", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&out).expect("summary JSON");
    assert_eq!(s["messages"], 6, "{s}");
    assert_eq!(s["recipients"], 8, "{s}");
    let count = |list: &str, key: &str| {
        s[list]
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["key"] == key)
            .map(|c| {
                (
                    c["messages"].as_u64().unwrap_or(0),
                    c["recipients"].as_u64().unwrap_or(0),
                )
            })
    };
    assert_eq!(count("domains", "far.test"), Some((5, 5)), "{s}");
    assert_eq!(count("domains", "other.test"), Some((2, 2)), "{s}");
    assert_eq!(count("domains", "slow.test"), Some((1, 1)), "{s}");
    assert_eq!(
        s["domains"][0]["key"], "far.test",
        "most waiting first: {s}"
    );
    assert_eq!(count("apps", "demo"), Some((6, 8)), "{s}");
    assert_eq!(count("ages", "< 5m"), Some((6, 8)), "{s}");
    let shaped = &s["shaping"].as_array().expect("shaping")[0];
    assert_eq!(shaped["destination"], "slow.test", "{s}");
    assert!(
        shaped["held_for_secs"].as_u64().is_some_and(|h| h > 3000),
        "{s}"
    );
    assert_eq!(shaped["limits"], 0.5, "{s}");

    let (text, _) = queue(&config, &["summary"]);
    assert!(
        text.contains("6 message(s), 8 recipient(s) waiting"),
        "{text}"
    );
    assert!(
        text.contains("slow.test") && text.contains("held for"),
        "{text}"
    );
    let m = metrics(admin, w.dir.path());
    assert!(
        m.contains("herald_shaping_held{destination=\"slow.test\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("herald_shaping_pushbacks_total{destination=\"slow.test\"} 1"),
        "{m}"
    );

    // Pages of 4: the first says where the next starts; together they are the queue, once.
    let (first, err) = queue(&config, &["list", "--limit", "4"]);
    let first = listed(&first);
    assert_eq!(first, ids[..4].to_vec());
    assert!(err.contains(&format!("--after {}", ids[3])), "{err}");
    let (second, err) = queue(&config, &["list", "--limit", "4", "--after", &ids[3]]);
    assert_eq!(listed(&second), ids[4..].to_vec());
    assert!(!err.contains("more may follow"), "{err}");
}
