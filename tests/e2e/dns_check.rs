//! End-to-end tests: `herald dns`, `herald check` and the authoritative listener.
//!
//! `herald dns` and `herald check` run as child processes (`herald --config … dns|check …`)
//! against the support test DNS server on loopback; the listener runs inside `herald serve`
//! and is asked by real DNS clients (hickory-resolver and `dig`) over UDP and TCP.

mod bimi;
mod check;
mod dmarcbis;
mod listener;
mod ptr;
mod readiness;
mod records;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::support::dns::DnsServer;
use super::support::herald::herald_bin;

pub(super) const DOMAIN: &str = "example.test";
pub(super) const INCLUDE: &str = "_spf.relay.example.test";
pub(super) const EHLO: &str = "herald.example.test";
pub(super) const EGRESS_V4: &str = "203.0.113.10";
pub(super) const EGRESS_V6: &str = "2001:db8::10";
pub(super) const INCLUDE_VALUE: &str = "v=spf1 ip4:203.0.113.10 ip6:2001:db8::10 -all";

/// One test's world: a temp dir with herald's config and keys, and a test DNS server.
pub(super) struct World {
    pub(super) dir: tempfile::TempDir,
    pub(super) dns: DnsServer,
    pub(super) config: PathBuf,
}

/// The output of one herald run.
pub(super) struct Run {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl World {
    /// A config with `[spf]`, `[report] own_rua`, `[dns] servers` on the test DNS server and
    /// the given keys as `(selector, algorithm, active)` for example.test (dev keys generated).
    pub(super) fn new(keys: &[(&str, &str, bool)]) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let dns = DnsServer::start();
        let data = dir.path().join("data");
        let mut text = format!(
            r#"
[server]
hostname = "herald.example.test"
data_dir = "{data}"

[dns]
servers = ["{dns}"]

[spf]
include = "{INCLUDE}"
addresses = ["203.0.113.10", "2001:db8::10"]
dmarc_rua = "dmarc@example.test"

[report]
own_rua = "mailto:tlsrpt@example.test"

[dkim]
allow_dev_keys = true
"#,
            data = data.display(),
            dns = dns.addr,
        );
        for (selector, algorithm, active) in keys {
            text.push_str(&format!(
                "\n[[dkim.keys]]\ndomain = \"{DOMAIN}\"\nselector = \"{selector}\"\nalgorithm = \
                 \"{algorithm}\"\nfile = \"{}/keys/{selector}.pem\"\nactive = {active}\n",
                data.display()
            ));
        }
        let config = dir.path().join("herald.toml");
        std::fs::write(&config, text).expect("write config");
        World { dir, dns, config }
    }

    pub(super) fn herald(&self, args: &[&str]) -> Run {
        let out = Command::new(herald_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run herald");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "herald {args:?} -> {}\n{}{}",
            run.code, run.stdout, run.stderr
        );
        run
    }

    /// `herald dns --format json`, parsed.
    pub(super) fn records(&self) -> Value {
        let run = self.herald(&["dns", "--format", "json"]);
        assert_eq!(run.code, 0, "herald dns failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).expect("herald dns JSON parses")
    }

    /// Publishes every record `herald dns` prints, as an operator would, with a strict DMARC
    /// policy so that a correct domain passes every required check.
    pub(super) fn publish_all(&self) -> Value {
        let json = self.records();
        for r in json["records"].as_array().expect("records") {
            let (name, value) = (r["name"].as_str().unwrap(), r["value"].as_str().unwrap());
            self.dns.add_txt(name, value);
        }
        self.dns.set_txt(
            &format!("_dmarc.{DOMAIN}"),
            "v=DMARC1; p=reject; rua=mailto:dmarc@example.test",
        );
        self.publish_reverse_dns();
        json
    }

    /// Forward-confirmed reverse DNS for both egress addresses, named as herald's EHLO.
    pub(super) fn publish_reverse_dns(&self) {
        for ip in [EGRESS_V4, EGRESS_V6] {
            let ip: std::net::IpAddr = ip.parse().expect("address");
            self.dns.add_ptr(ip, EHLO);
            self.dns.add_ip(EHLO, ip);
        }
    }

    /// `herald check example.test --json`: the exit code and the parsed report.
    pub(super) fn check(&self) -> (i32, Value) {
        let run = self.herald(&["check", DOMAIN, "--json"]);
        let report = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("check JSON ({e}): {}\n{}", run.stdout, run.stderr));
        (run.code, report)
    }
}

/// The statuses of every finding with `id`; panics with the report when there is none.
pub(super) fn statuses(report: &Value, id: &str) -> Vec<String> {
    let found: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["id"] == id)
        .map(|f| f["status"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!found.is_empty(), "no finding {id} in {report:#}");
    found
}

pub(super) fn status(report: &Value, id: &str) -> String {
    statuses(report, id).remove(0)
}

pub(super) fn message(report: &Value, id: &str) -> String {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_string()
}
