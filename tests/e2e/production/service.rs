//! herald under a service manager: `Type=notify` readiness on `NOTIFY_SOCKET`, the shipped
//! systemd unit, and JSON log lines for collectors.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use super::{serve, text};
use crate::support::herald::base_config;

/// Receives one notification datagram, or panics after a minute.
fn notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_and_stopping_are_sent_to_notify_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let cfg = base_config(dir.path());
    let mut h = serve(
        dir.path(),
        &cfg,
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))],
    );
    let first = notification(&sock);
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // READY=1 comes no earlier than herald accepts mail (the log line may reach the test's
    // reader thread after the datagram: wait for it rather than race it).
    h.wait_for_event("ready", Duration::from_secs(60));
    std::net::TcpStream::connect(
        cfg["smtp"]["submission"]
            .as_str()
            .expect("addr")
            .parse::<std::net::SocketAddr>()
            .expect("socket address"),
    )
    .expect("the listener accepts once READY=1 was sent");

    h.send_sigterm();
    let next = notification(&sock);
    assert!(next.lines().any(|l| l == "STOPPING=1"), "{next:?}");
}

#[test]
fn json_log_lines_are_one_object_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    crate::support::set(&mut cfg, "server.log_format", "json");
    let mut h = serve(dir.path(), &cfg, &[]);
    let line = h.wait_for_event("ready", Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(v["message"], "herald ready");
    assert_eq!(v["level"], "INFO");
    assert!(v["timestamp"].is_string());
    for line in h.log.lock().expect("log").iter() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["message"].is_string(), "{line}");
    }
    // Fields stay fields: the listener line carries its name and address as their own keys.
    let log = h.log.lock().expect("log").clone();
    let listening = log
        .iter()
        .find(|l| l.contains("\"listening\""))
        .expect("a listening line");
    let v: serde_json::Value = serde_json::from_str(listening).expect("JSON");
    assert_eq!(v["listener"], "submission", "{listening}");
    assert!(v["addr"].is_string(), "{listening}");
}

#[test]
fn the_systemd_unit_verifies_and_says_what_production_needs() {
    let unit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/herald.service");
    let unit = std::fs::read_to_string(&unit_path).expect("config/herald.service");
    let value = |key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= missing"))
            .trim()
            .to_string()
    };
    assert_eq!(value("Type"), "notify");
    assert!(value("ExecReload").contains("-HUP $MAINPID"));
    assert!(value("AmbientCapabilities").contains("CAP_NET_BIND_SERVICE"));
    assert_eq!(value("NoNewPrivileges"), "true");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("ReadWritePaths"), "/var/lib/herald");
    assert_eq!(value("User"), "herald");
    // Enough descriptors for the production example's connection limits.
    let example = herald::config::Config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml"),
    )
    .expect("example loads");
    let nofile: usize = value("LimitNOFILE").parse().expect("a number");
    assert!(
        nofile >= 2 * (example.smtp.max_connections + example.delivery.max_connections),
        "LimitNOFILE={nofile}"
    );
    // systemd's own checker: the unit parses and every directive is known. The binary path is
    // pointed at the herald under test (the unit's /usr/local/bin/herald is not installed).
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("herald.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/herald",
            &crate::support::herald::herald_bin().display().to_string(),
        ),
    )
    .expect("write");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (package systemd) runs");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}
