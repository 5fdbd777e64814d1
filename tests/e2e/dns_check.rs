//! End-to-end tests: `herald dns`, `herald check` and the authoritative listener.
//!
//! `herald dns` and `herald check` run as child processes (`herald --config … dns|check …`)
//! against the support test DNS server on loopback; the listener runs inside `herald serve`
//! and is asked by real DNS clients (hickory-resolver and `dig`) over UDP and TCP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use mail_auth::common::crypto::{Ed25519Key, SigningKey};
use mail_auth::{AuthenticatedMessage, DkimResult};
use serde_json::Value;

use super::support::dns::DnsServer;
use super::support::herald::{Herald, base_config, herald_bin};

const DOMAIN: &str = "example.test";
const INCLUDE: &str = "_spf.relay.example.test";
const INCLUDE_VALUE: &str = "v=spf1 ip4:203.0.113.10 ip6:2001:db8::10 -all";

/// One test's world: a temp dir with herald's config and keys, and a test DNS server.
struct World {
    dir: tempfile::TempDir,
    dns: DnsServer,
    config: PathBuf,
}

/// The output of one herald run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl World {
    /// A config with `[spf]`, `[report] own_rua`, `[dns] servers` on the test DNS server and
    /// the given keys as `(selector, algorithm, active)` for example.test (dev keys generated).
    fn new(keys: &[(&str, &str, bool)]) -> World {
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

    fn herald(&self, args: &[&str]) -> Run {
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
    fn records(&self) -> Value {
        let run = self.herald(&["dns", "--format", "json"]);
        assert_eq!(run.code, 0, "herald dns failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).expect("herald dns JSON parses")
    }

    /// Publishes every record `herald dns` prints, as an operator would, with a strict DMARC
    /// policy so that a correct domain passes every required check.
    fn publish_all(&self) -> Value {
        let json = self.records();
        for r in json["records"].as_array().expect("records") {
            let (name, value) = (r["name"].as_str().unwrap(), r["value"].as_str().unwrap());
            self.dns.add_txt(name, value);
        }
        self.dns.set_txt(
            &format!("_dmarc.{DOMAIN}"),
            "v=DMARC1; p=reject; rua=mailto:dmarc@example.test",
        );
        json
    }

    /// `herald check example.test --json`: the exit code and the parsed report.
    fn check(&self) -> (i32, Value) {
        let run = self.herald(&["check", DOMAIN, "--json"]);
        let report = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("check JSON ({e}): {}\n{}", run.stdout, run.stderr));
        (run.code, report)
    }
}

/// The statuses of every finding with `id`; panics with the report when there is none.
fn statuses(report: &Value, id: &str) -> Vec<String> {
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

fn status(report: &Value, id: &str) -> String {
    statuses(report, id).remove(0)
}

fn message(report: &Value, id: &str) -> String {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn named_checkzone() -> PathBuf {
    for p in ["/usr/sbin/named-checkzone", "/usr/bin/named-checkzone"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    PathBuf::from("named-checkzone")
}

#[test]
fn dns_prints_every_record_and_zone_output_loads_in_named_checkzone() {
    let w = World::new(&[
        ("r1", "rsa", true),
        ("e1", "ed25519", true),
        ("old", "ed25519", false),
    ]);
    let run = w.herald(&["dns"]);
    assert_eq!(run.code, 0);
    let zone = &run.stdout;
    assert!(
        zone.contains(&format!("{INCLUDE}. 3600 IN TXT \"{INCLUDE_VALUE}\"")),
        "{zone}"
    );
    assert!(zone.contains(&format!(
        "{DOMAIN}. 3600 IN TXT \"v=spf1 include:{INCLUDE} ~all\""
    )));
    assert!(zone.contains(
        "_dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=none; rua=mailto:dmarc@example.test\""
    ));
    assert!(zone.contains(
        "_smtp._tls.example.test. 3600 IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@example.test\""
    ));
    assert!(
        zone.contains("retiring"),
        "the retiring key is marked: {zone}"
    );
    // The RSA key does not fit one character-string: it is split, in parentheses.
    assert!(
        zone.contains("r1._domainkey.example.test. 3600 IN TXT (\n"),
        "{zone}"
    );

    // Each block loads in named-checkzone once placed in a zone with an SOA and NS.
    let blocks: Vec<&str> = zone.split("\n$ORIGIN ").skip(1).collect();
    assert_eq!(
        blocks.len(),
        2,
        "one block for the include's zone, one for the domain"
    );
    for block in blocks {
        let origin = block
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('.');
        let file = w.dir.path().join(format!("{origin}.zone"));
        std::fs::write(
            &file,
            format!(
                "$TTL 3600\n{origin}. IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 300\n\
                 {origin}. IN NS ns.invalid.\n$ORIGIN {block}"
            ),
        )
        .unwrap();
        let out = Command::new(named_checkzone())
            .args(["-k", "fail", "-n", "fail", origin])
            .arg(&file)
            .output()
            .expect("named-checkzone is installed (bind9-utils)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "named-checkzone {origin}: {text}");
        assert!(
            !text.contains("ignoring"),
            "out-of-zone data in {origin}: {text}"
        );
    }

    // JSON: every key, each TXT split into ≤255-byte strings that join back to the value.
    let json = w.records();
    let records = json["records"].as_array().unwrap();
    let dkim: Vec<&Value> = records.iter().filter(|r| r["purpose"] == "dkim").collect();
    assert_eq!(dkim.len(), 3);
    for r in records {
        let strings: Vec<&str> = r["strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(strings.iter().all(|s| s.len() <= 255));
        assert_eq!(strings.concat(), r["value"].as_str().unwrap());
    }
    let old = dkim
        .iter()
        .find(|r| r["name"] == "old._domainkey.example.test")
        .unwrap();
    assert_eq!(old["active"], false);
    // --domain with a domain herald does not sign for says so.
    let run = w.herald(&["dns", "--domain", "other.test"]);
    assert!(
        run.stderr.contains("other.test is not a signing domain"),
        "{}",
        run.stderr
    );
    assert_eq!(w.herald(&["dns", "--format", "yaml"]).code, 2);
}

#[tokio::test]
async fn published_dkim_records_verify_signatures_herald_made() {
    let w = World::new(&[("r1", "rsa", true), ("e1", "ed25519", true)]);
    w.publish_all();
    let cfg = herald::config::Config::load(&w.config).expect("config");
    let signer = herald::signing::Signer::load(&cfg).expect("keys");
    let message = b"From: App <app@example.test>\r\nTo: someone@example.org\r\nSubject: hi\r\n\
                    Message-ID: <1@example.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n"
        .to_vec();
    let signed = signer.sign(message).await.expect("herald signs");
    let auth = herald::resolver::authenticator(&cfg.dns).expect("resolver");
    let parsed = AuthenticatedMessage::parse(&signed).expect("parse signed message");
    let outputs = auth.verify_dkim(&parsed).await;
    assert_eq!(outputs.len(), 2, "one signature per active key");
    for o in &outputs {
        assert_eq!(o.result(), &DkimResult::Pass, "{:?}", o);
    }
}

#[test]
fn check_passes_a_correct_domain() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    for id in [
        "spf.record",
        "spf.include",
        "spf.lookups",
        "spf.void",
        "spf.all",
        "dkim.e1",
        "dmarc.record",
        "dmarc.policy",
        "dmarc.rua",
        "dmarc.alignment",
    ] {
        assert_eq!(status(&report, id), "pass", "{id}: {report:#}");
    }
    assert_eq!(
        statuses(&report, "spf.eval"),
        ["pass", "pass"],
        "both addresses pass"
    );
    assert_eq!(status(&report, "tls-rpt.record"), "info");
    assert_eq!(status(&report, "mta-sts.record"), "info");
    assert_eq!(report["ok"], true);
    // The text form names each finding too.
    let run = w.herald(&["check", DOMAIN]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("PASS   spf.include"), "{}", run.stdout);
}

#[test]
fn check_fails_a_domain_missing_the_include() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    w.dns.set_txt(DOMAIN, "v=spf1 ip4:192.0.2.1 ~all");
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.include"), "fail");
    assert_eq!(
        statuses(&report, "spf.eval"),
        ["fail", "fail"],
        "softfail for herald's addresses"
    );
}

#[test]
fn check_fails_two_spf_records() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    w.dns.add_txt(DOMAIN, "v=spf1 include:_spf.other.test ~all");
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.record"), "fail");
    assert!(message(&report, "spf.record").contains("2 SPF records"));
}

#[test]
fn check_counts_lookups_through_nested_includes() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    // 2 at the top (herald's include and vendors), 9 inside vendors: 11.
    w.dns.set_txt(
        DOMAIN,
        &format!("v=spf1 include:{INCLUDE} include:vendors.example.test ~all"),
    );
    let nested: Vec<String> = (1..=9)
        .map(|i| format!("include:v{i}.example.test"))
        .collect();
    w.dns.add_txt(
        "vendors.example.test",
        &format!("v=spf1 {} -all", nested.join(" ")),
    );
    for i in 1..=9 {
        w.dns.add_txt(
            &format!("v{i}.example.test"),
            &format!("v=spf1 ip4:198.51.100.{i} -all"),
        );
    }
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.lookups"), "fail");
    assert!(
        message(&report, "spf.lookups").starts_with("11 DNS look-ups"),
        "{report:#}"
    );
    assert_eq!(status(&report, "spf.include"), "pass");

    // Ten is within the limit, and herald's include found one level down still counts.
    w.dns.remove("v9.example.test");
    w.dns.set_txt(
        "vendors.example.test",
        &format!("v=spf1 include:{INCLUDE} {} -all", nested[..7].join(" ")),
    );
    w.dns
        .set_txt(DOMAIN, "v=spf1 include:vendors.example.test ~all");
    let (code, report) = w.check();
    assert_eq!(status(&report, "spf.lookups"), "pass", "{report:#}");
    assert!(message(&report, "spf.lookups").starts_with("9 DNS look-ups"));
    assert!(message(&report, "spf.include").contains("through vendors.example.test"));
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn check_fails_too_many_void_lookups() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    w.dns
        .add_a("host.example.test", "192.0.2.7".parse().unwrap());
    w.dns.set_txt(
        DOMAIN,
        &format!("v=spf1 a:host.example.test a:gone1.example.test mx:gone2.example.test exists:gone3.example.test include:{INCLUDE} ~all"),
    );
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.void"), "fail");
    let m = message(&report, "spf.void");
    assert!(
        m.starts_with("3 void look-ups") && m.contains("mx:gone2.example.test"),
        "{m}"
    );
    assert!(!m.contains("host.example.test"), "{m}");
}

#[test]
fn check_finds_a_stale_dkim_key_and_a_retired_key_still_published() {
    let w = World::new(&[("e1", "ed25519", true), ("old", "ed25519", false)]);
    w.publish_all();
    // Someone else's key at herald's active selector: what DNS holds after a botched rotation.
    let pkcs8 = Ed25519Key::generate_pkcs8().expect("generate");
    let other = Ed25519Key::from_pkcs8_der(&pkcs8).expect("key");
    let _ = other.algorithm();
    let p = base64::engine::general_purpose::STANDARD.encode(other.public_key());
    w.dns.set_txt(
        "e1._domainkey.example.test",
        &format!("v=DKIM1; k=ed25519; p={p}"),
    );
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dkim.e1"), "fail");
    assert!(message(&report, "dkim.e1").contains("different public key"));
    assert_eq!(
        status(&report, "dkim.old"),
        "warn",
        "retired key still published"
    );

    // Withdrawn: the retired selector passes; a missing active one fails.
    w.dns.remove("old._domainkey.example.test");
    w.dns.remove("e1._domainkey.example.test");
    let (_, report) = w.check();
    assert_eq!(status(&report, "dkim.old"), "pass");
    assert_eq!(status(&report, "dkim.e1"), "fail");
    assert!(message(&report, "dkim.e1").contains("no DKIM record"));
}

#[test]
fn check_fails_without_dmarc_and_warns_on_p_none() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    w.dns.remove(&format!("_dmarc.{DOMAIN}"));
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dmarc.record"), "fail");

    w.dns
        .add_txt(&format!("_dmarc.{DOMAIN}"), "v=DMARC1; p=none; adkim=s");
    let (code, report) = w.check();
    assert_eq!(code, 0, "p=none is a warning, not a failure: {report:#}");
    assert_eq!(status(&report, "dmarc.policy"), "warn");
    assert!(
        report.to_string().contains("quarantine"),
        "the advice is given"
    );
    assert_eq!(status(&report, "dmarc.rua"), "warn");
    assert_eq!(
        status(&report, "dmarc.alignment"),
        "pass",
        "d=example.test aligns strictly"
    );
}

#[test]
fn check_names_a_missing_domain_a_dead_resolver_bad_records_and_bad_usage() {
    let w = World::new(&[("e1", "ed25519", true)]);
    // Nothing published: the domain does not exist.
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dns.domain"), "fail");
    assert!(message(&report, "dns.domain").contains("NXDOMAIN"));

    // A malformed SPF record is named, not a panic.
    w.publish_all();
    w.dns
        .set_txt(DOMAIN, "v=spf1 ip4:not-an-address include: ~all");
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.syntax"), "fail");

    // Usage errors exit 2.
    assert_eq!(w.herald(&["check", "not a domain"]).code, 2);

    // A resolver that does not answer: an error, never a pass.
    let closed = super::support::free_addr();
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace(&w.dns.addr.to_string(), &closed.to_string());
    std::fs::write(&w.config, text).unwrap();
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dns.resolver"), "error");
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
}

/// A hickory resolver asking only `addr`, over TCP or UDP only.
fn resolver(addr: SocketAddr, tcp: bool) -> TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = addr.port();
    let ns = NameServerConfig::new(addr.ip(), false, vec![conn]);
    let mut opts = ResolverOpts::default();
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("resolver")
}

async fn txt(r: &TokioResolver, name: &str) -> Result<String, NetError> {
    let lookup = r.txt_lookup(name).await?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+norec",
            "+time=5",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig is installed (dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn listener_answers_its_names_over_udp_and_tcp_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let listen = super::support::free_addr();
    let mut cfg = base_config(dir.path());
    let extra: toml::Table = toml::from_str(&format!(
        "[spf]\ninclude = \"{INCLUDE}\"\naddresses = [\"203.0.113.10\", \"2001:db8::10\"]\n\
         [dns_server]\nlisten = \"{listen}\"\nrate_limit = 1000\n"
    ))
    .unwrap();
    cfg.extend(extra);
    let h = Herald::start(dir.path(), cfg);
    let dkim_name = "dev._domainkey.example.test.";

    for tcp in [false, true] {
        let r = resolver(listen, tcp);
        assert_eq!(
            txt(&r, &format!("{INCLUDE}.")).await.expect("include"),
            INCLUDE_VALUE
        );
        let key = txt(&r, dkim_name).await.expect("selector");
        assert!(key.starts_with("v=DKIM1; k=ed25519; p="), "{key}");
        match txt(&r, "example.com.").await {
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))) => {}
            other => panic!(
                "foreign name over {}: {other:?}",
                if tcp { "TCP" } else { "UDP" }
            ),
        }
    }

    // The same over dig, which shows the flags: authoritative, no recursion.
    for mode in ["+notcp", "+tcp"] {
        let out = dig(listen, &[mode, "TXT", INCLUDE]);
        assert!(
            out.contains("status: NOERROR") && out.contains("flags: qr aa"),
            "{out}"
        );
        assert!(out.contains(&format!("\"{INCLUDE_VALUE}\"")), "{out}");
        let out = dig(listen, &[mode, "TXT", "www.example.org"]);
        assert!(out.contains("status: REFUSED"), "{out}");
        let out = dig(listen, &[mode, "A", &format!("nope.{INCLUDE}")]);
        assert!(
            out.contains("status: NXDOMAIN") && out.contains("SOA"),
            "{out}"
        );
    }
    drop(h);
}

#[test]
fn listener_rate_limits_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let listen = super::support::free_addr();
    let mut cfg = base_config(dir.path());
    let extra: toml::Table = toml::from_str(&format!(
        "[spf]\ninclude = \"{INCLUDE}\"\naddresses = [\"203.0.113.10\"]\n\
         [dns_server]\nlisten = \"{listen}\"\nrate_limit = 2\n"
    ))
    .unwrap();
    cfg.extend(extra);
    let _h = Herald::start(dir.path(), cfg);
    // Far more queries than the bucket holds, back to back from one address.
    let statuses: Vec<String> = (0..12)
        .map(|_| {
            let out = dig(listen, &["+tcp", "TXT", INCLUDE]);
            out.lines()
                .find_map(|l| l.split("status: ").nth(1))
                .map(|s| s.split(',').next().unwrap_or("").to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(statuses[0], "NOERROR", "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "REFUSED"), "{statuses:?}");
}

#[test]
fn without_configured_addresses_herald_lists_the_hosts_and_warns() {
    let w = World::new(&[("e1", "ed25519", true)]);
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace("addresses = [\"203.0.113.10\", \"2001:db8::10\"]\n", "");
    std::fs::write(&w.config, text).unwrap();
    let run = w.herald(&["dns", "--domain", DOMAIN]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("[spf] addresses is empty"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("; WARNING: [spf] addresses is empty"),
        "{}",
        run.stdout
    );
    let json = w.records();
    assert_eq!(json["addresses_guessed"], true);
    // Loopback and private addresses are never offered as herald's public addresses.
    for a in json["addresses"].as_array().unwrap() {
        let a = a.as_str().unwrap();
        assert!(
            !a.starts_with("127.") && !a.starts_with("10.") && !a.starts_with("::1"),
            "{a}"
        );
    }
    w.publish_all();
    let (_, report) = w.check();
    assert_eq!(status(&report, "herald.addresses"), "warn");
}

#[test]
fn check_a_subdomain_signed_by_its_parent_follows_adkim() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    let sub = "news.example.test";
    w.dns
        .add_txt(sub, &format!("v=spf1 include:{INCLUDE} ~all"));
    w.dns.add_txt(
        &format!("_dmarc.{sub}"),
        "v=DMARC1; p=reject; adkim=s; rua=mailto:d@example.test",
    );
    let check = || {
        let run = w.herald(&["check", sub, "--json"]);
        (
            run.code,
            serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        )
    };
    let (code, report) = check();
    assert_eq!(code, 1);
    assert_eq!(
        status(&report, "dkim.e1"),
        "pass",
        "the parent's key signs: {report:#}"
    );
    assert_eq!(status(&report, "dmarc.alignment"), "fail");
    assert!(message(&report, "dmarc.alignment").contains("d=example.test"));

    w.dns.set_txt(
        &format!("_dmarc.{sub}"),
        "v=DMARC1; p=reject; adkim=r; rua=mailto:d@example.test",
    );
    let (code, report) = check();
    assert_eq!(status(&report, "dmarc.alignment"), "pass");
    assert_eq!(code, 0, "{report:#}");

    // Without a record of its own, the organizational domain's DMARC record applies.
    w.dns.remove(&format!("_dmarc.{sub}"));
    let (code, report) = check();
    assert_eq!(status(&report, "dmarc.record"), "pass");
    assert!(message(&report, "dmarc.record").contains("organizational domain"));
    assert_eq!(code, 0, "{report:#}");
}
