//! Routing: plain MX, several domains, preference and fall-back, implicit MX, null MX and
//! NXDOMAIN, opportunistic TLS.

use mail_parser::{MessageParser, MimeHeaders};

use super::common::{WAIT, World, logged, set, start, wait_finished};
use crate::support::ca::{self, TestCa, Validity};
use crate::support::smtp_sink::SinkOptions;

#[test]
fn delivers_to_a_plain_mx() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    let id = w.store("app@example.test", &["bob@example.org"], "plain-mx");
    let mut h = start(&w, w.config());
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got[0].mail_from, "app@example.test");
    assert_eq!(got[0].rcpts, vec!["bob@example.org"]);
    assert_eq!(got[0].helo, "herald.example.test");
    assert!(got[0].tls.is_none(), "the sink offers no STARTTLS");
    let text = got[0].text();
    assert!(text.contains("Subject: plain-mx\r\n"), "{text}");
    assert!(
        text.ends_with("\r\n.a line with a leading dot\r\n"),
        "dot-stuffing round-trips and no line is added: {text:?}"
    );
    wait_finished(&mut h, &id);
    let line = logged(&h, "delivery attempt").remove(0);
    for part in [
        &format!("queue_id={id}") as &str,
        "domain=example.org",
        "mx=mx.example.org",
        "tls=none",
        "policy=opportunistic",
        "cert_verified=false",
        "250",
        "duration_ms=",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
    assert!(!crate::support::spool::is_spooled(w.dir.path(), &id));
}

#[test]
fn one_message_to_two_domains_makes_one_transaction_per_domain() {
    let mut w = World::new(2);
    w.dns.add_mx("one.example", 10, "mx.one.example");
    w.dns.add_mx("two.example", 10, "mx.two.example");
    let one = w.sink("mx.one.example", SinkOptions::default());
    let two = w.sink("mx.two.example", SinkOptions::default());
    let id = w.store(
        "app@example.test",
        &["a@one.example", "b@two.example", "c@one.example"],
        "two-domains",
    );
    let mut h = start(&w, w.config());
    let got_one = one.wait_for_messages(1, WAIT);
    let got_two = two.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    assert_eq!(got_one.len(), 1);
    assert_eq!(got_one[0].rcpts, vec!["a@one.example", "c@one.example"]);
    assert_eq!(got_two[0].rcpts, vec!["b@two.example"]);
    assert_eq!(one.messages().len() + two.messages().len(), 2);
}

#[test]
fn mx_preference_order_and_fallback_to_the_next_host() {
    let mut w = World::new(4);
    // Best first: down (connection refused), then a host greeting 421, then two that work.
    w.dns.add_mx("example.org", 5, "mx0.example.org");
    w.dns.add_mx("example.org", 10, "mx1.example.org");
    w.dns.add_mx("example.org", 20, "mx2.example.org");
    w.dns.add_mx("example.org", 30, "mx3.example.org");
    w.down_host("mx0.example.org");
    let busy = w.sink(
        "mx1.example.org",
        SinkOptions {
            greeting: Some("421 4.3.2 too busy, try another host".into()),
            ..SinkOptions::default()
        },
    );
    let good = w.sink("mx2.example.org", SinkOptions::default());
    let worse = w.sink("mx3.example.org", SinkOptions::default());
    let id = w.store("app@example.test", &["bob@example.org"], "fallback");
    let mut h = start(&w, w.config());
    good.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    assert_eq!(busy.connections(), 1, "the 421 host was tried");
    assert!(busy.messages().is_empty());
    assert_eq!(worse.connections(), 0, "a less preferred host is not tried");
    let attempts = logged(&h, "delivery attempt");
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(
        attempts[0].contains("mx=mx0.example.org"),
        "{}",
        attempts[0]
    );
    assert!(attempts[1].contains("mx=mx1.example.org") && attempts[1].contains("421"));
    assert!(attempts[2].contains("mx=mx2.example.org") && attempts[2].contains("250"));
}

#[test]
fn a_domain_without_mx_is_its_own_mx() {
    let mut w = World::new(1);
    let sink = w.sink("implicit.example", SinkOptions::default());
    let id = w.store("app@example.test", &["x@implicit.example"], "implicit-mx");
    let mut h = start(&w, w.config());
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got[0].rcpts, vec!["x@implicit.example"]);
    wait_finished(&mut h, &id);
}

#[test]
fn null_mx_and_nxdomain_bounce_at_once() {
    let mut w = World::new(1);
    w.dns.add_null_mx("nomail.example");
    // "nowhere.example" is not in the zone at all: NXDOMAIN.
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let sender = w.sink("mx.example.test", SinkOptions::default());
    let id = w.store(
        "app@example.test",
        &["a@nomail.example", "b@nowhere.example"],
        "no-route",
    );
    let mut h = start(&w, w.config());
    let got = sender.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    let dsn = &got[0];
    assert_eq!(dsn.mail_from, "", "bounces come from <>");
    assert_eq!(dsn.rcpts, vec!["app@example.test"]);
    let parsed = MessageParser::default()
        .parse(&dsn.data)
        .expect("DSN parses");
    let status = parsed
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let text = String::from_utf8_lossy(status.contents()).into_owned();
    assert!(
        text.contains(
            "Final-Recipient: rfc822; a@nomail.example\r\nAction: failed\r\nStatus: 5.1.10"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Final-Recipient: rfc822; b@nowhere.example\r\nAction: failed\r\nStatus: 5.1.2"
        ),
        "{text}"
    );
    // At once: one routing decision each, no retry.
    assert_eq!(
        logged(&h, "no route").len(),
        2,
        "{:#?}",
        logged(&h, "no route")
    );
}

#[test]
fn starttls_is_used_whenever_offered_and_the_certificate_is_recorded() {
    let ca = TestCa::new();
    let mut w = World::new(2);
    let root = w.dir.path().join("test-root.pem");
    ca.write_root(&root);
    w.dns.add_mx("good.example", 10, "mx.good.example");
    w.dns
        .add_mx("selfsigned.example", 10, "mx.selfsigned.example");
    let good = w.sink(
        "mx.good.example",
        SinkOptions {
            tls: Some(ca.server_config(&["mx.good.example"], Validity::Current)),
            ..SinkOptions::default()
        },
    );
    let selfsigned = w.sink(
        "mx.selfsigned.example",
        SinkOptions {
            tls: Some(ca::self_signed_server_config(&["mx.selfsigned.example"])),
            ..SinkOptions::default()
        },
    );
    let a = w.store("app@example.test", &["a@good.example"], "tls-verified");
    let b = w.store(
        "app@example.test",
        &["b@selfsigned.example"],
        "tls-unverified",
    );
    let mut cfg = w.config();
    set(
        &mut cfg,
        "tls",
        "extra_roots",
        toml::Value::Array(vec![root.display().to_string().into()]),
    );
    let mut h = start(&w, cfg);
    let got = good.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some(), "delivered over TLS");
    assert_eq!(got[0].sni.as_deref(), Some("mx.good.example"));
    let got = selfsigned.wait_for_messages(1, WAIT);
    assert!(
        got[0].tls.is_some(),
        "an invalid certificate still encrypts"
    );
    wait_finished(&mut h, &a);
    wait_finished(&mut h, &b);
    let line_a = logged(&h, &format!("queue_id={a}")).remove(0);
    let line_b = logged(&h, &format!("queue_id={b}")).remove(0);
    assert!(
        line_a.contains("tls=TLSv1.") && line_a.contains("cert_verified=true"),
        "{line_a}"
    );
    assert!(
        line_b.contains("tls=TLSv1.") && line_b.contains("cert_verified=false"),
        "{line_b}"
    );
}

#[test]
fn a_dns_failure_is_temporary() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    w.dns.fail("example.org");
    let id = w.store("app@example.test", &["bob@example.org"], "servfail");
    let mut h = start(&w, w.config());
    super::common::wait_lines(&mut h, "DNS trouble", 2);
    assert!(sink.messages().is_empty());
    w.dns.unfail("example.org");
    sink.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    assert!(
        logged(&h, "delivery status notification").is_empty(),
        "no bounce"
    );
}

#[test]
fn an_ipv6_only_mx_is_reached() {
    let w = World::new(1);
    // The MX has only an AAAA record (::1), on the world's delivery port.
    let listener = std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, w.port))
        .expect("bind [::1] on the delivery port");
    let sink = crate::support::smtp_sink::SmtpSink::start(listener, SinkOptions::default());
    w.dns.add_mx("six.example", 10, "mx.six.example");
    w.dns
        .add_aaaa("mx.six.example", std::net::Ipv6Addr::LOCALHOST);
    let id = w.store("app@example.test", &["v6@six.example"], "ipv6");
    let mut h = start(&w, w.config());
    sink.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    let line = logged(&h, &format!("queue_id={id}")).remove(0);
    assert!(line.contains("addr=[::1]:"), "{line}");
}
