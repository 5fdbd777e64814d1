//! Start-up order: every listen socket is bound before anything else starts, so a busy port
//! fails fast — no spool recovery, no delivery attempt, no key or certificate generated.

use std::path::Path;
use std::time::Duration;

use crate::hardening::{BODY, certs};
use crate::submission::client::Client;
use crate::support::herald::{Herald, base_config};

const WAIT: Duration = Duration::from_secs(60);

/// Starts `herald serve` on `cfg` written to `dir/herald.toml`, without waiting for readiness.
fn spawn(dir: &Path, cfg: &toml::Table) -> Herald {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml::to_string(cfg).expect("toml")).expect("write config");
    Herald::spawn(&path, cfg.clone(), &["serve"])
}

fn log_of(h: &Herald) -> String {
    h.log.lock().expect("log").join("\n")
}

#[tokio::test]
async fn a_busy_admin_port_fails_before_recovery_and_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = base_config(dir.path());
    // DNS (`[dns] servers`) is a dead port: the message stays queued, retried only in an hour.
    crate::support::set(&mut cfg, "delivery.retry_schedule", vec!["1h"]);
    let mut first = Herald::start(dir.path(), cfg.clone());
    let mut c = Client::submission_login(first.smtp_addr("submission"), tls).await;
    let reply = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    first.wait_for_log("delivery attempt", WAIT);
    assert!(first.terminate().success());
    let queued = std::fs::read_dir(dir.path().join("spool/msg"))
        .expect("spool dir")
        .count();
    assert!(queued > 0, "the message waits in the spool");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let addr = busy.local_addr().expect("addr").to_string();
    crate::support::set(&mut cfg, "admin.listen", addr.as_str());
    let mut second = spawn(dir.path(), &cfg);
    let status = second.wait_exit(WAIT);
    let log = log_of(&second);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("admin.listen") && l.contains(&addr)),
        "the error names the setting and the address:\n{log}"
    );
    for started in [
        "queue started",
        "delivery attempt",
        "listening",
        "herald ready",
    ] {
        assert!(
            !log.contains(started),
            "{started:?} before the failure:\n{log}"
        );
    }
    // The message is still there for the next start.
    let left = std::fs::read_dir(dir.path().join("spool/msg"))
        .expect("spool dir")
        .count();
    assert_eq!(left, queued);
}

#[test]
fn a_busy_dns_port_fails_before_any_key_or_certificate_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("occupy a port");
    let addr = busy.local_addr().expect("addr").to_string();
    crate::support::set(&mut cfg, "dns_server.listen", addr.as_str());
    let mut h = spawn(dir.path(), &cfg);
    let status = h.wait_exit(WAIT);
    let log = log_of(&h);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("[dns_server] listen") && l.contains(&addr)),
        "the error names the setting and the address:\n{log}"
    );
    assert!(!log.contains("queue started"), "{log}");
    for made in ["keys", "certs", "spool"] {
        assert!(
            !dir.path().join(made).exists(),
            "{made}/ created before the failure:\n{log}"
        );
    }
}
