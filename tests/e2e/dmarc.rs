//! End-to-end tests of the DMARC loop: receivers' aggregate reports arrive over SMTP at the
//! feedback listener, are stored, classified and judged; `herald dmarc`, `herald dns`,
//! `herald check` and the `/dmarc` page show the result.

mod bombs;
mod browser;
mod durability;
mod flow;
mod forged;
mod framing;
mod limits;
mod records;
mod samples;
mod smtp;
mod spf_check;
mod stores;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::support::dns::DnsServer;
use super::support::herald::{Herald, base_config, herald_bin};

/// herald's report domain in these tests.
pub(super) const FEEDBACK: &str = "reports.relay.example.test";
/// herald's egress address.
pub(super) const HERALD_IP: &str = "203.0.113.10";

/// The reporting organizations of the tests' reports, whose DKIM keys `dns` publishes.
pub(super) const REPORTERS: &[&str] = &["google.com", "microsoft.com", "yahooinc.com"];

/// A herald config with `[feedback]` on a fresh loopback address, signing keys for
/// example.com and example.org, `[spf] addresses`, and DNS on `dns` (which publishes the
/// reporters' DKIM keys, [`REPORTERS`]).
pub(super) fn feedback_config(dir: &Path, dns: &DnsServer) -> (toml::Table, SocketAddr) {
    samples::publish_reporter_keys(dns, REPORTERS);
    let mut cfg = base_config(dir);
    let listen = super::support::free_addr();
    super::support::set(&mut cfg, "feedback.listen", listen.to_string());
    super::support::set(&mut cfg, "feedback.domain", FEEDBACK);
    super::support::set(&mut cfg, "dns.servers", vec![dns.addr.to_string()]);
    super::support::set(&mut cfg, "spf.addresses", vec![HERALD_IP.to_string()]);
    super::support::set(&mut cfg, "spf.include", "_spf.relay.example.test");
    let keys = cfg["dkim"]["keys"].as_array().cloned().unwrap_or_default();
    let mut keys = keys;
    for domain in ["example.com", "example.org"] {
        let mut k = toml::Table::new();
        k.insert("domain".into(), domain.into());
        k.insert("selector".into(), "herald".into());
        k.insert("algorithm".into(), "ed25519".into());
        k.insert(
            "file".into(),
            dir.join(format!("keys/{domain}.herald.pem"))
                .display()
                .to_string()
                .into(),
        );
        keys.push(toml::Value::Table(k));
    }
    super::support::set(&mut cfg, "dkim.keys", toml::Value::Array(keys));
    (cfg, listen)
}

/// Runs `herald --config <config> ARGS…` and returns (exit code, stdout, stderr).
pub(super) fn herald_cmd(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run herald");
    let r = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("herald {args:?} -> {}\n{}{}", r.0, r.1, r.2);
    r
}

/// `herald dmarc summary --json`, parsed.
pub(super) fn summary(config: &Path) -> Value {
    let (code, out, err) = herald_cmd(config, &["dmarc", "summary", "--json"]);
    assert_eq!(code, 0, "summary failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary JSON ({e}): {out}"))
}

/// The summary entry for `domain`.
pub(super) fn domain<'a>(summary: &'a Value, domain: &str) -> &'a Value {
    summary["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .find(|d| d["domain"] == domain)
        .unwrap_or_else(|| panic!("no {domain} in {summary:#}"))
}

/// The source entry for `ip` in a domain summary.
pub(super) fn source<'a>(domain: &'a Value, ip: &str) -> &'a Value {
    domain["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["ip"] == ip)
        .unwrap_or_else(|| panic!("no source {ip} in {domain:#}"))
}

/// Starts herald with `cfg` and waits for the feedback listener.
pub(super) fn start(dir: &Path, cfg: toml::Table) -> Herald {
    Herald::start(dir, cfg)
}
