//! A misbehaving resolver between herald and the world: questions that time out, DNSSEC
//! records stripped, SERVFAIL on every other question, every UDP answer truncated, answers for
//! the wrong name. Mail to a domain without DNSSEC keeps flowing (DANE not applicable is not
//! DANE failed), and none of it stalls for good once the resolver behaves.

use std::time::Duration;

use crate::delivery::common::{World, start, store_many};
use crate::support::dns::RecordType;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

/// A world with one MX for example.org; `spoil` sets the resolver's misbehaviour before
/// herald starts; returns the world, the MX and the started herald.
fn deliver_one(subject: &str, spoil: impl FnOnce(&World)) -> (World, SmtpSink) {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    spoil(&w);
    store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &[subject.to_string()],
    );
    let h = start(&w, w.config());
    let got = sink.wait_for_messages(1, Duration::from_secs(60));
    assert!(got[0].text().contains(&format!("Subject: {subject}")));
    drop(h);
    (w, sink)
}

#[test]
fn mail_flows_while_every_question_about_the_root_times_out() {
    deliver_one("timeouts", |w| {
        w.dns.enable_dnssec();
        w.dns.time_out(".", None);
    });
}

#[test]
fn mail_flows_when_the_resolver_strips_dnssec_records() {
    deliver_one("stripped", |w| {
        w.dns.enable_dnssec();
        w.dns.strip_dnssec();
    });
}

#[test]
fn mail_flows_through_a_resolver_failing_every_other_question() {
    deliver_one("flaky", |w| {
        w.dns.flaky("example.org");
        w.dns.flaky("mx.example.org");
    });
}

#[test]
fn truncated_udp_answers_are_asked_again_over_tcp() {
    deliver_one("truncated", |w| w.dns.truncate_every_udp_answer());
}

#[test]
fn an_answer_for_the_wrong_name_is_not_used_and_mail_flows_once_answers_are_right() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    let decoy = w.sink("decoy.example.net", SinkOptions::default());
    let decoy_ip = match decoy.addr().ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => unreachable!("loopback v4"),
    };
    w.dns
        .answer_for_wrong_name("mx.example.org", "decoy.example.net", decoy_ip);
    store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &["wrong-name".to_string()],
    );
    let mut h = start(&w, w.config());
    // herald tries (and finds no address for the MX), then waits for its retry.
    h.wait_for_log("delivery attempt", Duration::from_secs(30));
    assert!(
        decoy.messages().is_empty(),
        "nothing to an address for another name"
    );
    assert_eq!(decoy.connections(), 0, "no connection to it either");
    w.dns.behave();
    let got = sink.wait_for_messages(1, Duration::from_secs(60));
    assert!(got[0].text().contains("Subject: wrong-name"));
    assert_eq!(decoy.connections(), 0);
}

/// A DANE domain (signed, TLSA published for its MX) behind a resolver spoiled by `spoil`:
/// the message is deferred and nothing reaches the MX, whose certificate DANE would refuse
/// anyway (the record is for another key), so any delivery would have been unauthenticated.
async fn dane_mail_never_goes_unauthenticated(spoil: impl FnOnce(&crate::support::dns::DnsServer)) {
    use crate::dane::world::{DaneWorld, MX, Relay, tlsa_name};
    use crate::support::ca::Validity;
    let d = DaneWorld::signed();
    let mx = d.start_mx(d.w.ca.server_config(&[MX], Validity::Current));
    d.w.dns
        .add_tlsa(&tlsa_name(mx.addr().port()), 3, 1, 1, vec![0x5a; 32]);
    let relay = Relay::start(d.config(mx.addr().port())).await;
    // Validation works at first (the first message is deferred by DANE itself: the record is
    // for another key), then the resolver goes wrong.
    let first = relay.send("deferred by DANE").await;
    relay.assert_still_queued(&first).await;
    spoil(&d.w.dns);
    let id = relay.send("must not go unauthenticated").await;
    relay.assert_still_queued(&id).await;
    assert!(mx.messages().is_empty(), "nothing may reach the MX");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_mail_is_deferred_when_the_resolver_strips_dnssec_records() {
    dane_mail_never_goes_unauthenticated(|dns| dns.strip_dnssec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_mail_is_deferred_when_dnskey_and_ds_questions_time_out() {
    dane_mail_never_goes_unauthenticated(|dns| {
        dns.time_out_type(RecordType::DNSKEY);
        dns.time_out_type(RecordType::DS);
    })
    .await;
}
