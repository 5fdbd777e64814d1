//! DANE matches deliver: DANE-EE(3) (no name, no expiry checked), DANE-TA(2) (chain to the
//! published anchor, MX name checked), a secure "no TLSA" falling back to MTA-STS, and the
//! trust-AD mode with a resolver that sets the AD bit.

use super::world::{DaneWorld, MX, Relay, WAIT, cert_sha256, spki_sha256, tlsa_name};
use crate::mta_sts::world::{DOMAIN, World};
use crate::support::ca::{Validity, self_signed_der};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ee_match_delivers_whatever_the_name_and_dates() {
    let d = DaneWorld::signed();
    // Self-signed, for another name, expired: WebPKI would refuse it three times over;
    // DANE-EE(3) binds the key itself (RFC 7672 §3.1.1).
    let (cert, tls) = self_signed_der(&["elsewhere.test"], Validity::Expired);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns
        .add_tlsa(&tlsa_name(port), 3, 1, 1, spki_sha256(&cert));
    let relay = Relay::start(d.config(port)).await;
    relay.send("DANE-EE").await;
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: DANE-EE"));
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| t.success == 1))
        .await;
    assert!(!counts.has_sts(), "DANE sessions are not MTA-STS sessions");
    let tlsa = counts.tlsa.expect("tlsa counts");
    assert!(tlsa.failures.is_empty(), "{tlsa:?}");
    assert_eq!(tlsa.mx_hosts, vec![MX.to_string()]);
    assert!(tlsa.records[0].starts_with("3 1 1 "), "{:?}", tlsa.records);

    // `herald report pending` shows the DANE sessions beside the MTA-STS ones.
    relay.reporter.persist().expect("counts saved");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(d.config_file(port))
        .args(["report", "pending"])
        .output()
        .expect("run herald");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dane (tlsa, mx1.bank.test): 1 successful, 0 failed session(s)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_match_delivers() {
    let d = DaneWorld::signed();
    // The CA is not in herald's trust store for this test's purpose: only the TLSA record
    // names it, as a trust anchor for mx1.bank.test.
    let tls = d.w.ca.server_config_with_root(&[MX], Validity::Current);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns
        .add_tlsa(&tlsa_name(port), 2, 0, 1, cert_sha256(&d.w.ca.root_der()));
    let mut cfg = d.config(port);
    cfg.tls.extra_roots.clear();
    let relay = Relay::start(cfg).await;
    relay.send("DANE-TA").await;
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: DANE-TA"));
    relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| t.success == 1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_denial_of_tlsa_falls_back_to_mta_sts() {
    let d = DaneWorld::signed();
    d.w.publish_policy("1", World::enforce());
    let tls = d.w.ca.server_config(&[MX], Validity::Current);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    let relay = Relay::start(d.config(port)).await;
    relay.send("no TLSA").await;
    mx.wait_for_messages(1, WAIT);
    // Counted under the MTA-STS policy, not under DANE.
    let counts = relay.wait_for_counts(|c| c.success == 1).await;
    assert!(counts.tlsa.is_none(), "{counts:?}");
    assert_eq!(counts.mx_patterns, vec![format!("*.{DOMAIN}")]);
    assert!(
        d.w.dns.was_asked(&tlsa_name(port), "TLSA"),
        "the TLSA record was looked up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_mode_applies_dane_when_the_resolver_sets_ad() {
    let w = World::new();
    w.dns.act_as_validating_resolver();
    let (cert, tls) = self_signed_der(&["elsewhere.test"], Validity::Current);
    let d = DaneWorld {
        anchor: w.dir.path().join("unused"),
        w,
    };
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns
        .add_tlsa(&tlsa_name(port), 3, 1, 1, spki_sha256(&cert));
    let mut cfg = d.w.config(port);
    cfg.dane.trust_resolver_ad = true;
    cfg.validate("test").expect("loopback resolver: allowed");
    let relay = Relay::start(cfg).await;
    relay.send("trust AD").await;
    mx.wait_for_messages(1, WAIT);
    relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| t.success == 1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_mode_ignores_tlsa_without_ad() {
    // The same records, but the resolver does not vouch for the MX answer: no DANE, the
    // self-signed certificate is only opportunistic TLS and the mail goes (RFC 7672 §2.2).
    let w = World::new();
    w.dns.act_as_validating_resolver();
    w.dns.mark_insecure(DOMAIN);
    let (cert, tls) = self_signed_der(&["elsewhere.test"], Validity::Current);
    let d = DaneWorld {
        anchor: w.dir.path().join("unused"),
        w,
    };
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns.add_tlsa(&tlsa_name(port), 3, 1, 1, vec![0; 32]);
    let _ = cert;
    let mut cfg = d.w.config(port);
    cfg.dane.trust_resolver_ad = true;
    let relay = Relay::start(cfg).await;
    relay.send("insecure MX").await;
    mx.wait_for_messages(1, WAIT);
    assert!(
        relay.reporter.pending().iter().all(|c| c.tlsa.is_none()),
        "no DANE session was counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_domain_gets_no_dane_and_no_tlsa_look_up() {
    let d = DaneWorld::signed();
    // bank.test is an unsigned zone under the signed root (an insecure delegation): its
    // TLSA record, however wrong, is not even looked up, and delivery is opportunistic.
    d.w.dns.add_unsigned_zone(DOMAIN);
    let (_, tls) = self_signed_der(&[MX], Validity::Current);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns.add_tlsa(&tlsa_name(port), 3, 1, 1, vec![0x5a; 32]);
    let relay = Relay::start(d.config(port)).await;
    relay.send("unsigned").await;
    mx.wait_for_messages(1, WAIT);
    assert!(d.w.dns.was_asked(DOMAIN, "MX"));
    assert!(
        !d.w.dns.was_asked(&tlsa_name(port), "TLSA"),
        "no TLSA look-up below an insecure MX answer"
    );
    assert!(relay.reporter.pending().iter().all(|c| c.tlsa.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_takes_precedence_over_mta_sts_enforce() {
    let d = DaneWorld::signed();
    // An enforce policy that neither lists mx1 nor would accept its self-signed certificate:
    // the DANE record decides for that host (RFC 8461 §2).
    d.w.publish_policy(
        "1",
        crate::support::https::Response::mta_sts_policy("enforce", &["mx9.bank.test"], 86400),
    );
    let (cert, tls) = self_signed_der(&[MX], Validity::Current);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    d.w.dns
        .add_tlsa(&tlsa_name(port), 3, 1, 1, spki_sha256(&cert));
    let relay = Relay::start(d.config(port)).await;
    relay.send("precedence").await;
    mx.wait_for_messages(1, WAIT);
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| t.success == 1))
        .await;
    assert_eq!(counts.success, 0, "not an MTA-STS session: {counts:?}");
    assert!(counts.failures.is_empty(), "{counts:?}");
    assert!(
        d.w.https().hits(crate::mta_sts::world::POLICY_PATH) >= 1,
        "the enforce policy was fetched, so it was in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_mx_host_uses_the_tlsa_records_and_name_at_the_end_of_the_chain() {
    let d = DaneWorld::signed();
    // mx1.bank.test is a CNAME for the hosting provider's server, which publishes the TLSA
    // records and whose certificate names only itself (RFC 7672 §2.2.3, §3.2.2).
    let real = "smtp7.hosting.test";
    let tls = d.w.ca.server_config_with_root(&[real], Validity::Current);
    let mx = crate::support::smtp_sink::SmtpSink::start(
        crate::support::listener(),
        crate::support::smtp_sink::SinkOptions {
            tls: Some(tls),
            hostname: Some(real.to_string()),
            ..Default::default()
        },
    );
    let port = mx.addr().port();
    d.w.dns.add_mx(DOMAIN, 10, MX);
    d.w.dns.add_cname(MX, real);
    d.w.dns.add_ip(real, mx.addr().ip());
    d.w.dns.add_tlsa(
        &format!("_{port}._tcp.{real}"),
        2,
        0,
        1,
        cert_sha256(&d.w.ca.root_der()),
    );
    let mut cfg = d.config(port);
    cfg.tls.extra_roots.clear();
    let relay = Relay::start(cfg).await;
    relay.send("via CNAME").await;
    let got = mx.wait_for_messages(1, WAIT);
    assert_eq!(
        got[0].sni.as_deref(),
        Some(real),
        "SNI is the TLSA base domain (RFC 7672 §8.1)"
    );
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| t.success == 1))
        .await;
    assert!(counts.tlsa.expect("tlsa").failures.is_empty());
}
