//! DANE failures defer (the message stays queued, nothing reaches the MX) and are counted for
//! TLS-RPT under the `tlsa` policy: a certificate matching no record, an expired DANE-TA chain,
//! a bogus signature on the TLSA records, a TLSA look-up answered SERVFAIL.

use mail_auth::report::tlsrpt::ResultType;

use super::world::{DaneWorld, Relay, cert_sha256, tlsa_name};
use crate::support::ca::Validity;
use crate::support::smtp_sink::SmtpSink;

/// Sends one message, checks it is deferred with the MX having received nothing, and that
/// TLS-RPT counted `expected` under the `tlsa` policy.
async fn assert_deferred_and_reported(d: &DaneWorld, mx: &SmtpSink, expected: ResultType) {
    let relay = Relay::start(d.config(mx.addr().port())).await;
    let id = relay.send("must not go").await;
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| !t.failures.is_empty()))
        .await;
    relay.assert_still_queued(&id).await;
    assert!(mx.messages().is_empty(), "nothing may reach the MX");
    let tlsa = counts.tlsa.expect("tlsa counts");
    assert_eq!(tlsa.success, 0);
    assert!(
        tlsa.failures.iter().all(|f| f.result_type == expected),
        "expected {expected:?}: {:?}",
        tlsa.failures
    );
    assert_eq!(tlsa.failures[0].mx_host.as_deref(), Some(super::world::MX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatching_certificate_defers_and_is_reported() {
    let d = DaneWorld::signed();
    // A certificate WebPKI accepts (test CA, right name): DANE still refuses it, since the
    // published record is for another key.
    let mx = d.start_mx(d.w.ca.server_config(&[super::world::MX], Validity::Current));
    d.w.dns
        .add_tlsa(&tlsa_name(mx.addr().port()), 3, 1, 1, vec![0x5a; 32]);
    assert_deferred_and_reported(&d, &mx, ResultType::TlsaInvalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_dane_ta_chain_defers() {
    let d = DaneWorld::signed();
    let tls =
        d.w.ca
            .server_config_with_root(&[super::world::MX], Validity::Expired);
    let mx = d.start_mx(tls);
    d.w.dns.add_tlsa(
        &tlsa_name(mx.addr().port()),
        2,
        0,
        1,
        cert_sha256(&d.w.ca.root_der()),
    );
    assert_deferred_and_reported(&d, &mx, ResultType::CertificateExpired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_ta_chain_for_another_name_defers() {
    let d = DaneWorld::signed();
    let tls =
        d.w.ca
            .server_config_with_root(&["mx9.elsewhere.test"], Validity::Current);
    let mx = d.start_mx(tls);
    d.w.dns.add_tlsa(
        &tlsa_name(mx.addr().port()),
        2,
        0,
        1,
        cert_sha256(&d.w.ca.root_der()),
    );
    assert_deferred_and_reported(&d, &mx, ResultType::CertificateHostMismatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_tlsa_signature_defers() {
    let d = DaneWorld::signed();
    let mx = d.start_mx(d.w.ca.server_config(&[super::world::MX], Validity::Current));
    let name = tlsa_name(mx.addr().port());
    d.w.dns.add_tlsa(&name, 3, 1, 1, vec![0x5a; 32]);
    d.w.dns.corrupt_signatures(&name);
    assert_deferred_and_reported(&d, &mx, ResultType::DnssecInvalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlsa_servfail_defers() {
    let d = DaneWorld::signed();
    let mx = d.start_mx(d.w.ca.server_config(&[super::world::MX], Validity::Current));
    d.w.dns.fail(&tlsa_name(mx.addr().port()));
    assert_deferred_and_reported(&d, &mx, ResultType::DnssecInvalid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_mode_defers_when_the_resolver_answers_servfail() {
    // A validating resolver says SERVFAIL for bogus data: in trust-AD mode that is all herald
    // sees, and the host is not used.
    let w = crate::mta_sts::world::World::new();
    w.dns.act_as_validating_resolver();
    let d = DaneWorld {
        anchor: w.dir.path().join("unused"),
        w,
    };
    let mx = d.start_mx(d.w.ca.server_config(&[super::world::MX], Validity::Current));
    d.w.dns.fail(&tlsa_name(mx.addr().port()));
    let mut cfg = d.w.config(mx.addr().port());
    cfg.dane.trust_resolver_ad = true;
    let relay = Relay::start(cfg).await;
    let id = relay.send("must not go").await;
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| !t.failures.is_empty()))
        .await;
    relay.assert_still_queued(&id).await;
    assert!(mx.messages().is_empty());
    let tlsa = counts.tlsa.expect("tlsa");
    assert_eq!(tlsa.failures[0].result_type, ResultType::DnssecInvalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_domain_without_tlsa_defers_as_dane_required() {
    // [dane] required_domains: a signed domain whose MX publishes no TLSA is not delivered to
    // with anything less than DANE (Postfix's dane-only), and TLS-RPT hears `dane-required`.
    let d = DaneWorld::signed();
    let mx = d.start_mx(d.w.ca.server_config(&[super::world::MX], Validity::Current));
    let mut cfg = d.config(mx.addr().port());
    cfg.dane.required_domains = vec![crate::mta_sts::world::DOMAIN.to_string()];
    let relay = Relay::start(cfg).await;
    let id = relay.send("must not go").await;
    let counts = relay
        .wait_for_counts(|c| c.tlsa.as_ref().is_some_and(|t| !t.failures.is_empty()))
        .await;
    relay.assert_still_queued(&id).await;
    assert!(mx.messages().is_empty());
    let tlsa = counts.tlsa.expect("tlsa");
    assert_eq!(tlsa.failures[0].result_type, ResultType::DaneRequired);
    assert!(
        tlsa.failures[0].detail.contains("no TLSA records"),
        "{:?}",
        tlsa.failures[0]
    );
}
