//! `herald check`'s SPF walk, where it used to stop: domain-specs with macros (RFC 7208 §7) are
//! expanded and followed, and an `mx` mechanism naming more than 10 MX hosts fails (§4.6.4).

use std::net::Ipv4Addr;

use super::{feedback_config, herald_cmd};
use crate::support::dns::{DnsServer, RecordType};

fn findings(config: &std::path::Path, domain: &str) -> Vec<serde_json::Value> {
    let (_, out, err) = herald_cmd(config, &["check", domain, "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("check JSON ({e}): {out}{err}"));
    v["findings"].as_array().unwrap().clone()
}

fn by_id<'a>(f: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    f.iter()
        .find(|x| x["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {f:#?}"))
}

#[test]
fn spf_macros_are_expanded_and_followed_and_mx_names_are_limited_to_ten() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, _) = feedback_config(dir.path(), &dns);
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
    dns.add_txt("_spf.relay.example.test", "v=spf1 ip4:203.0.113.10 -all");

    // example.com reaches herald's include only through a macro: %{d} is example.com.
    dns.add_txt("example.com", "v=spf1 include:_spf.%{d} -all");
    dns.add_txt(
        "_spf.example.com",
        "v=spf1 include:_spf.relay.example.test -all",
    );
    let f = findings(&config, "example.com");
    assert_eq!(by_id(&f, "spf.include")["status"], "pass", "{f:#?}");
    let lookups = by_id(&f, "spf.lookups");
    let msg = lookups["message"].as_str().unwrap();
    assert!(msg.contains("_spf.example.com: 1"), "{msg}");
    assert!(msg.contains("macros were expanded"), "{msg}");

    // example.org's mx names eleven hosts.
    dns.add_txt("example.org", "v=spf1 mx ip4:203.0.113.10 -all");
    for i in 0..11u8 {
        let host = format!("mx{i}.example.org");
        dns.add_mx_host(
            "example.org",
            10,
            &host,
            Ipv4Addr::new(192, 0, 2, 100 + i).into(),
        );
    }
    let f = findings(&config, "example.org");
    let mx = by_id(&f, "spf.mx");
    assert_eq!(mx["status"], "fail", "{mx}");
    assert!(
        mx["message"].as_str().unwrap().contains("11 MX names"),
        "{mx}"
    );

    // Ten is fine.
    dns.remove_type("example.org", RecordType::MX);
    for i in 0..10u8 {
        dns.add_mx("example.org", 10, &format!("mx{i}.example.org"));
    }
    let f = findings(&config, "example.org");
    assert!(f.iter().all(|x| x["id"] != "spf.mx"), "{f:#?}");
}
