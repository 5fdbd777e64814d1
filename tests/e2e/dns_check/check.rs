//! `herald check DOMAIN`: a correct domain, and each kind of mistake, named with its exit code.

use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, SigningKey};
use serde_json::Value;

use super::{DOMAIN, INCLUDE, World, message, status, statuses};

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

    // The include referenced but herald's own record not published.
    w.dns
        .set_txt(DOMAIN, &format!("v=spf1 include:{INCLUDE} ~all"));
    w.dns.remove(INCLUDE);
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "spf.include"), "fail");
    assert!(message(&report, "spf.include").contains("no valid SPF record"));
    assert_eq!(statuses(&report, "spf.eval"), ["fail", "fail"], "permerror");
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

    // So are malformed DKIM and DMARC records.
    w.dns.set_txt(
        "e1._domainkey.example.test",
        "v=DKIM1; k=ed25519; p=%%%not-base64",
    );
    w.dns
        .set_txt(&format!("_dmarc.{DOMAIN}"), "v=DMARC1; p=bogus");
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dkim.e1"), "fail");
    assert!(
        message(&report, "dkim.e1").contains("malformed"),
        "{report:#}"
    );
    assert_eq!(status(&report, "dmarc.record"), "fail");
    assert!(
        message(&report, "dmarc.record").contains("malformed"),
        "{report:#}"
    );

    // Usage errors exit 2.
    assert_eq!(w.herald(&["check", "not a domain"]).code, 2);

    // A resolver that does not answer: an error, never a pass.
    let closed = crate::support::free_addr();
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
