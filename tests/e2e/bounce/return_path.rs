//! herald's return path: MAIL FROM at the MX is a signed VERP address; a DSN mailed back to it
//! suppresses the address and is passed on to the app's sender with `<>`; that copy is never
//! bounced in turn (no bounce loop); forged return-path addresses are refused at RCPT.

use super::{RETURN_PATH, config, mail_feedback, start, try_submit};
use crate::delivery::common::{WAIT, World, logged, wait_lines};
use crate::support::herald::has_event;
use crate::support::smtp_sink::SinkOptions;

fn dsn(verp: &str, recipient: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.org\r\nTo: <{verp}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown\r\n\r\n\
--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: <app@example.test>\r\nTo: <{recipient}>\r\nSubject: later\r\n\r\n\
--b1--"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dsn_to_the_return_path_suppresses_and_is_passed_on_without_a_bounce_loop() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.test", 10, "mx.example.test");
    let mx = w.sink("mx.example.org", SinkOptions::default());
    // The app's own mailbox refuses everything: the passed-on bounce fails there.
    let app_mx = w.sink(
        "mx.example.test",
        SinkOptions {
            data_replies: vec!["550 5.1.1 no such user".into()],
            ..SinkOptions::default()
        },
    );
    let mut rig = start(&w, config(&w));
    let mut c = rig.login("demo").await;
    let r = try_submit(&mut c, "app@example.test", "later@example.org", "later").await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = mx.wait_for_messages(1, WAIT);
    let verp = got[0].mail_from.clone();
    assert!(
        verp.starts_with("b-") && verp.ends_with(&format!("@{RETURN_PATH}")),
        "MAIL FROM at the MX is herald's VERP address: {verp}"
    );
    assert!(verp.split('@').next().is_some_and(|l| l.len() <= 64));

    // Forged return-path addresses are refused at RCPT, never relayed.
    let (local, _) = verp.split_once('@').expect("address");
    let mut tampered = local.to_string().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
    let tampered = format!(
        "{}@{RETURN_PATH}",
        String::from_utf8(tampered).expect("ascii")
    );
    for forged in [
        tampered.as_str(),
        "postmaster@bounces.example.test",
        "b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@bounces.example.test",
    ] {
        let r = mail_feedback(&rig, forged, &dsn(forged, "later@example.org")).await;
        assert_eq!(r.code, 550, "{forged}: {r:?}");
        assert!(r.text.starts_with("5.1.1"), "{r:?}");
    }
    let r = mail_feedback(&rig, "someone@elsewhere.test", "Subject: x\r\n\r\nx").await;
    assert_eq!(r.code, 550, "no relaying: {r:?}");
    let log = rig.herald.log.lock().expect("log").clone();
    assert!(
        !log.iter().any(|l| has_event(l, "suppressed")),
        "forged bounces suppress nothing"
    );

    // The real DSN, in any case: taken, suppressed, passed on.
    let r = mail_feedback(
        &rig,
        &verp.to_ascii_uppercase(),
        &dsn(&verp, "later@example.org"),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.contains("1 recipient(s) recorded"), "{r:?}");
    assert!(r.text.contains("passed on to <app@example.test>"), "{r:?}");
    let line = rig.herald.wait_for_event("suppressed", WAIT);
    assert!(line.contains("later@example.org"), "{line}");
    let r = try_submit(&mut c, "app@example.test", "later@example.org", "again").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text.contains("suppressed"), "{r:?}");

    // The passed-on copy goes with <> and fails at the app's mailbox: no bounce of a bounce.
    let line = rig.herald.wait_for_event("classified", WAIT);
    assert!(
        line.contains("app@example.test") && line.contains("bounced"),
        "{line}"
    );
    // Both messages (the app's and the passed-on bounce) have left the queue.
    wait_lines(&mut rig.herald, "every recipient delivered or failed", 2);
    let refused = app_mx.rejected();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].mail_from, "", "passed on with the null sender");
    assert!(app_mx.messages().is_empty());
    assert!(
        logged(&rig.herald, "delivery status notification").is_empty(),
        "herald never bounces a bounce"
    );
}
