//! Outcomes: temporary failures retried and delivered once, permanent failures bounced with
//! an RFC 3464 report (DKIM-signed), no bounce for `<>`, several messages over one connection.

use mail_auth::{AuthenticatedMessage, DkimResult};
use mail_parser::{MessageParser, MimeHeaders};

use super::common::{WAIT, World, logged, set, start, store_many, wait_finished};
use crate::support::smtp_sink::SinkOptions;

#[test]
fn temporary_failures_are_retried_and_delivered_exactly_once() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink(
        "mx.example.org",
        SinkOptions {
            data_replies: vec![
                "451 4.3.0 try again later".into(),
                "451 4.3.0 still busy".into(),
            ],
            ..SinkOptions::default()
        },
    );
    let id = w.store("app@example.test", &["bob@example.org"], "retry-twice");
    let mut h = start(&w, w.config());
    sink.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    assert_eq!(sink.rejected().len(), 2, "two 451s before the 250");
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
    let attempts = logged(&h, "delivery attempt");
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(attempts[0].contains("451 4.3.0 try again later"));
    assert!(attempts[2].contains("250"));
    assert!(logged(&h, "delivery status notification").is_empty());
}

fn part_text(msg: &mail_parser::Message<'_>, ctype: &str, subtype: &str) -> String {
    let part = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == ctype && c.subtype() == Some(subtype))
        })
        .unwrap_or_else(|| panic!("no {ctype}/{subtype} part"));
    String::from_utf8_lossy(part.contents()).into_owned()
}

#[test]
fn permanent_failure_sends_one_signed_rfc3464_bounce() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let remote = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_replies: vec![
                "550 5.1.1 <nobody@example.org>: no such user".into(),
                "250 2.1.5 OK".into(),
            ],
            ..SinkOptions::default()
        },
    );
    let sender = w.sink("mx.example.test", SinkOptions::default());
    let id = w.store(
        "app@example.test",
        &["nobody@example.org", "bob@example.org"],
        "will-bounce",
    );
    let cfg = w.config();
    let mut h = start(&w, cfg);
    let delivered = remote.wait_for_messages(1, WAIT);
    assert_eq!(delivered[0].rcpts, vec!["bob@example.org"]);
    let got = sender.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    let dsn = &got[0];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpts, vec!["app@example.test"]);

    let parsed = MessageParser::default()
        .parse(&dsn.data)
        .expect("DSN parses");
    let ct = parsed.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(
        parsed
            .from()
            .and_then(|f| f.first())
            .and_then(|a| a.address()),
        Some("MAILER-DAEMON@example.test")
    );
    assert_eq!(
        parsed
            .to()
            .and_then(|f| f.first())
            .and_then(|a| a.address()),
        Some("app@example.test")
    );
    let human = part_text(&parsed, "text", "plain");
    assert!(human.contains("<nobody@example.org>: 550 5.1.1"), "{human}");
    let status = part_text(&parsed, "message", "delivery-status");
    for field in [
        "Reporting-MTA: dns; herald.example.test",
        "Final-Recipient: rfc822; nobody@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.example.org",
        "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: no such user",
    ] {
        assert!(status.contains(field), "{field:?} missing from {status}");
    }
    assert!(
        !status.contains("bob@example.org"),
        "only the failed recipient is reported"
    );
    let headers = part_text(&parsed, "text", "rfc822-headers");
    assert!(headers.contains("Subject: will-bounce"), "{headers}");
    assert!(
        headers.contains("Message-ID: <will-bounce@example.test>"),
        "{headers}"
    );

    // Signed with herald's own domain key (example.test, the host name's domain).
    let herald_cfg = herald::config::Config::load(&h.config_path).expect("config");
    let signer = herald::signing::Signer::load(&herald_cfg).expect("keys");
    for k in signer.published_keys() {
        w.dns.add_txt(&k.record_name(), &k.txt);
    }
    let auth = herald::resolver::authenticator(&herald::config::DnsConfig {
        servers: vec![w.dns.addr],
    })
    .expect("resolver");
    let msg = AuthenticatedMessage::parse(&dsn.data).expect("mail-auth parses the DSN");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(auth.verify_dkim(&msg));
    assert!(!results.is_empty(), "the DSN carries a DKIM signature");
    assert!(
        results.iter().all(|r| *r.result() == DkimResult::Pass),
        "{:?}",
        results.iter().map(|r| r.result()).collect::<Vec<_>>()
    );
    assert_eq!(sender.messages().len(), 1, "one bounce per message");
}

#[test]
fn no_bounce_for_a_null_sender() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let remote = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_replies: vec!["550 5.1.1 no such user".into()],
            ..SinkOptions::default()
        },
    );
    let sender = w.sink("mx.example.test", SinkOptions::default());
    let id = w.store("", &["nobody@example.org"], "bounce-of-a-bounce");
    let mut h = start(&w, w.config());
    wait_finished(&mut h, &id);
    assert!(remote.messages().is_empty());
    assert!(logged(&h, "delivery status notification").is_empty());
    assert_eq!(sender.connections(), 0, "nothing was sent back");
}

#[test]
fn several_messages_travel_over_one_connection() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    let subjects: Vec<String> = (0..5).map(|i| format!("reuse-{i}")).collect();
    let ids = store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &subjects,
    );
    let mut cfg = w.config();
    set(&mut cfg, "delivery", "max_connections_per_host", 1);
    let mut h = start(&w, cfg);
    let got = sink.wait_for_messages(5, WAIT);
    for id in &ids {
        wait_finished(&mut h, id);
    }
    assert_eq!(got.len(), 5);
    assert_eq!(
        sink.connections(),
        1,
        "one connection for all five messages"
    );
    assert!(got.iter().all(|m| m.connection == 1));
}

#[test]
fn a_delay_notice_is_sent_once_when_configured() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    w.down_host("mx.example.org");
    let sender = w.sink("mx.example.test", SinkOptions::default());
    let id = w.store("app@example.test", &["bob@example.org"], "slow");
    let mut cfg = w.config();
    set(&mut cfg, "delivery", "delay_notice", "1s");
    let mut h = start(&w, cfg);
    let got = sender.wait_for_messages(1, WAIT);
    let parsed = MessageParser::default()
        .parse(&got[0].data)
        .expect("parses");
    let status = part_text(&parsed, "message", "delivery-status");
    assert!(
        status.contains("Final-Recipient: rfc822; bob@example.org\r\nAction: delayed"),
        "{status}"
    );
    assert!(parsed.subject().is_some_and(|s| s.contains("Delayed")));
    // Later attempts send no second notice.
    super::common::wait_lines(&mut h, &format!("queue_id={id} domain=example.org"), 4);
    assert_eq!(logged(&h, "delivery status notification queued").len(), 1);
    assert!(
        crate::support::spool::is_spooled(w.dir.path(), &id),
        "still queued"
    );
}
