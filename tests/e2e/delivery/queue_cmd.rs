//! `herald queue`: against a running herald (admin endpoint) and offline on the spool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use super::common::{WAIT, World, logged, set, start, wait_lines};
use crate::support::free_addr;
use crate::support::herald::herald_bin;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

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

fn ok(config: &Path, args: &[&str]) -> String {
    let (code, out, err) = queue(config, args);
    assert_eq!(code, 0, "herald queue {args:?} failed: {out}{err}");
    out
}

/// A GET with the admin token herald generated in its data directory `data`.
fn http_get(addr: SocketAddr, data: &Path, path: &str) -> String {
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token file");
    let mut s = TcpStream::connect(addr).expect("connect admin");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token.trim()
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn queue_commands_work_offline_on_the_spool() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.down_host("mx.example.org");
    let a = w.store("app@example.test", &["bob@example.org"], "offline-a");
    let b = w.store("app@example.test", &["eve@example.org"], "offline-b");
    let config = w.dir.path().join("herald.toml");
    std::fs::write(&config, toml::to_string(&w.config()).expect("toml")).expect("write config");

    let (code, out, err) = queue(&config, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("offline"), "says it works offline: {err}");
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    assert!(
        out.contains("bob@example.org  pending  attempts 0"),
        "{out}"
    );
    assert!(out.contains("from <app@example.test>"), "{out}");
    assert!(
        out.contains("2 message(s), 2 recipient(s) waiting"),
        "{out}"
    );

    assert!(ok(&config, &["hold", &a]).contains("held"));
    assert!(ok(&config, &["show", &a]).contains("held:      yes"));
    assert!(ok(&config, &["list"]).contains("[held]"));
    ok(&config, &["release", &a]);
    assert!(ok(&config, &["show", &a]).contains("held:      no"));
    assert!(ok(&config, &["retry", "--all"]).contains("2 message(s)"));

    let out = ok(&config, &["delete", &b, "--bounce"]);
    assert!(out.contains("deleted") && out.contains("bounce"), "{out}");
    let out = ok(&config, &["list"]);
    assert!(!out.contains(&b), "{out}");
    assert!(
        out.contains("from <>") && out.contains("app@example.test  pending"),
        "the bounce waits: {out}"
    );

    let (code, _, err) = queue(&config, &["show", "00000000000000000000"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message"), "{err}");
    let (code, _, err) = queue(&config, &["retry"]);
    assert_eq!(code, 2, "usage error: {err}");
}

#[test]
fn queue_commands_work_against_a_running_herald() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let ip = w.down_host("mx.example.org");
    let sender = w.sink("mx.example.test", SinkOptions::default());
    let a = w.store("app@example.test", &["bob@example.org"], "online-a");
    let b = w.store("app@example.test", &["eve@example.org"], "online-b");
    let admin = free_addr();
    let mut cfg = w.config();
    set(&mut cfg, "admin", "listen", admin.to_string());
    // One attempt, then a long wait: only `retry` brings the next attempt forward.
    set(
        &mut cfg,
        "delivery",
        "retry_schedule",
        toml::Value::Array(vec!["1h".into()]),
    );
    let mut h = start(&w, cfg);
    let config = h.config_path.clone();
    wait_lines(&mut h, "delivery attempt", 2);

    let (code, out, err) = queue(&config, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("running herald"),
        "says it uses the running herald: {err}"
    );
    assert!(out.contains(&a) && out.contains(&b), "{out}");
    assert!(out.contains("bob@example.org  pending"), "{out}");

    assert!(ok(&config, &["hold", &a]).contains("held"));
    assert!(ok(&config, &["show", &a]).contains("held:      yes"));
    let (code, _, err) = queue(&config, &["retry", &a]);
    assert_eq!(code, 1, "a held message is not retried");
    assert!(err.contains("release it first"), "{err}");

    // The receiver comes back; `retry` sends b now instead of in an hour.
    let sink = SmtpSink::start(
        TcpListener::bind((ip, w.port)).expect("rebind"),
        SinkOptions::default(),
    );
    assert!(ok(&config, &["retry", &b]).contains("scheduled"));
    let got = sink.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: online-b"));
    wait_lines(&mut h, &format!("queue {b} finished"), 1);

    // Delete the held one with a bounce to its sender.
    let out = ok(&config, &["delete", &a, "--bounce"]);
    assert!(out.contains("deleted") && out.contains("bounce"), "{out}");
    let bounce = sender.wait_for_messages(1, WAIT);
    assert!(
        bounce[0]
            .text()
            .contains("deleted from the queue by the operator"),
        "{}",
        bounce[0].text()
    );
    assert!(!ok(&config, &["list"]).contains(&a));
    assert_eq!(
        sink.messages().len(),
        1,
        "the deleted message was never sent"
    );

    let metrics = http_get(admin, w.dir.path(), "/metrics");
    assert!(
        metrics.contains("herald_recipients_delivered_total"),
        "{metrics}"
    );
    // The operator's bounce counts as a notification sent, like the queue's own.
    assert!(
        metrics.lines().any(|l| l == "herald_dsn_sent_total 1"),
        "{metrics}"
    );
    assert!(http_get(admin, w.dir.path(), "/health").contains("ok"));
    // The same records `herald dns --format json` prints, with the demo domain's DKIM key.
    let dns = http_get(admin, w.dir.path(), "/dns");
    assert!(dns.contains("dev._domainkey.example.test"), "{dns}");
    assert!(dns.contains("v=DKIM1; k=ed25519; p="), "{dns}");
    assert!(logged(&h, "deleted by the operator").len() == 1);
}
