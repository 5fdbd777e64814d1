//! REQUIRETLS (RFC 8689) over DANE: an MX authenticated by DNSSEC and TLSA that advertises
//! REQUIRETLS receives the message with the flag; one that does not advertise it never gets
//! the message (it bounces `5.7.30`; what the bounce holds is checked in `requiretls::`); and
//! `TLS-Required: No` gets through where DANE would stop an ordinary message.

use std::time::{Duration, Instant};

use herald::spool::TlsRequest;

use super::world::{DaneWorld, Relay, WAIT, spki_sha256, tlsa_name};
use crate::support::ca::{Validity, self_signed_der};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requiretls_message_reaches_a_dane_authenticated_mx_that_advertises_it() {
    let d = DaneWorld::signed();
    let (cert, tls) = self_signed_der(&["mx1.bank.test"], Validity::Current);
    let mx = d.start_mx_offering(tls, true);
    let port = mx.addr().port();
    d.w.dns
        .add_tlsa(&tlsa_name(port), 3, 1, 1, spki_sha256(&cert));
    let relay = Relay::start(d.config(port)).await;
    relay.send_asking("over DANE", TlsRequest::RequireTls).await;
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: over DANE"));
    assert!(got[0].tls.is_some());
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "the flag is passed on: {:?}",
        got[0].mail_params
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_dane_without_requiretls_at_the_mx_the_message_is_not_delivered() {
    let d = DaneWorld::signed();
    let (cert, tls) = self_signed_der(&["mx1.bank.test"], Validity::Current);
    let mx = d.start_mx_offering(tls, false);
    let port = mx.addr().port();
    let sender_mx = d.start_sender_mx(port);
    d.w.dns
        .add_tlsa(&tlsa_name(port), 3, 1, 1, spki_sha256(&cert));
    let relay = Relay::start(d.config(port)).await;
    let id = relay
        .send_asking("not advertised", TlsRequest::RequireTls)
        .await;
    // Failed for good (5.7.30): the message leaves the queue, a redacted bounce is queued.
    let deadline = Instant::now() + WAIT;
    while relay.spool.load(&id).await.is_ok() {
        assert!(Instant::now() < deadline, "{id} is still queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mx.connections() >= 1, "the DANE-authenticated MX was asked");
    assert!(mx.messages().is_empty(), "{:?}", mx.messages());
    // A (redacted) bounce was queued: it reaches the sender's MX, from the null sender.
    let bounces = sender_mx.wait_for_messages(1, WAIT);
    assert_eq!(bounces.len(), 1, "one bounce: {bounces:?}");
    assert_eq!(bounces[0].mail_from, "", "a bounce has the null sender");
    assert_eq!(bounces[0].rcpts, ["app@example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_gets_through_a_dane_mismatch() {
    let d = DaneWorld::signed();
    let (_cert, tls) = self_signed_der(&["mx1.bank.test"], Validity::Current);
    let mx = d.start_mx_offering(tls, false);
    let port = mx.addr().port();
    // A record no certificate matches: an ordinary message would wait (see `failures.rs`).
    d.w.dns.add_tlsa(&tlsa_name(port), 3, 1, 1, vec![0x5a; 32]);
    let relay = Relay::start(d.config(port)).await;
    relay.send_asking("optional", TlsRequest::TlsOptional).await;
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: optional"));
    assert!(got[0].tls.is_some(), "STARTTLS is still used when offered");
}
