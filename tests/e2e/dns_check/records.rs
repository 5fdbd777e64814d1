//! `herald dns`: the records, their zone-file and JSON forms, and that they work once published.

use std::process::Command;

use mail_auth::{AuthenticatedMessage, DkimResult};
use serde_json::Value;

use super::{DOMAIN, INCLUDE, INCLUDE_VALUE, World, status};
use crate::support::tools::require_tool;

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
        zone.contains("not signing"),
        "the inactive key is marked: {zone}"
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
        let out = Command::new(require_tool("named-checkzone", "bind9-utils"))
            .args(["-k", "fail", "-n", "fail", origin])
            .arg(&file)
            .output()
            .expect("named-checkzone runs");
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
