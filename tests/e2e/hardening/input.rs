//! Items 7 and 8: input herald would have rewritten silently is refused, and the author
//! fields (`From:`, `Sender:`) must be unambiguous and allowed.

use std::time::{Duration, Instant};

use super::{BODY, rig};

#[tokio::test]
async fn control_characters_and_invalid_utf8_in_paths_are_refused() {
    let rig = rig(|_| {});
    let mut c = rig.login().await;
    c.send("MAIL FROM:<app\x01@example.test>\r\n").await;
    let r = c.reply().await;
    assert_eq!((r.code, &r.text[..5]), (501, "5.1.7"), "{r:?}");
    c.send(b"MAIL FROM:<\xff\xfe@example.test>\r\n").await;
    let r = c.reply().await;
    assert_eq!((r.code, &r.text[..5]), (501, "5.1.7"), "{r:?}");
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.send("RCPT TO:<a\rb@dest.test>\r\n").await;
    let r = c.reply().await;
    assert_eq!((r.code, &r.text[..5]), (501, "5.1.3"), "{r:?}");
    c.send(b"RCPT TO:<\xff\xfe@dest.test>\r\n").await;
    let r = c.reply().await;
    assert_eq!((r.code, &r.text[..5]), (501, "5.1.3"), "{r:?}");
    c.expect("RCPT TO:<ok@dest.test>", 250).await;
    c.expect("DATA", 354).await;
    c.send(format!("{BODY}\r\n.\r\n")).await;
    assert_eq!(c.reply().await.code, 250);
    let spooled = rig.spooled();
    assert_eq!(spooled.len(), 1);
    let envelope = spooled[0].lines().next().expect("envelope line");
    assert!(envelope.contains("\"ok@dest.test\""), "{envelope}");
    assert!(!envelope.contains("ab@dest.test") && !envelope.contains('\u{fffd}'));
}

#[tokio::test]
async fn a_bdat_size_over_the_limit_is_refused_at_once_and_a_garbled_one_too() {
    let rig = rig(|cfg| crate::support::set(cfg, "smtp.data_timeout", "30s"));
    // Sizes that cannot be framed: refused at once, and the session ends.
    for (size, code, status) in [
        ("99999999999999999999999", 552, "5.3.4"),
        ("12abc", 501, "5.5.4"),
    ] {
        let mut c = rig.login().await;
        c.expect("MAIL FROM:<app@example.test>", 250).await;
        c.expect("RCPT TO:<r@example.org>", 250).await;
        let start = Instant::now();
        let r = c.cmd(&format!("BDAT {size}")).await;
        assert_eq!((r.code, &r.text[..5]), (code, status), "BDAT {size}: {r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "BDAT {size} was answered only after {:?}",
            start.elapsed()
        );
        assert!(
            c.closed().await,
            "the chunk cannot be framed: herald must close"
        );
    }
    // Over the limit but a number: 552 before a byte of the chunk is sent; the chunk is then
    // skipped and the session stays in step.
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    let size = 25 * 1024 * 1024 + 1;
    let r = c.cmd(&format!("BDAT {size} LAST")).await;
    assert_eq!((r.code, &r.text[..5]), (552, "5.3.4"), "{r:?}");
    c.send(vec![b'x'; size]).await;
    c.expect("NOOP", 250).await;
    assert!(rig.spooled().is_empty());
}

async fn submit_with_headers(
    rig: &super::Rig,
    headers: &str,
) -> crate::submission::client::SmtpReply {
    let mut c = rig.login().await;
    let body = format!("{headers}To: r@example.org\r\nSubject: hi\r\n\r\nHello.");
    c.submit("app@example.test", &["r@example.org"], &body)
        .await
}

#[tokio::test]
async fn ambiguous_from_and_foreign_sender_headers_are_refused() {
    let rig = rig(|_| {});
    for headers in [
        "From: evil@bad.test@example.test\r\n",
        "From: evil\\@bad.test@example.test\r\n",
        "From: <evil@bad.test@example.test>\r\n",
        "From: app@example.test\r\nFrom: evil@bad.test\r\n",
        "From: app@example.test\r\nSender: evil@bad.test\r\n",
        "From: app@example.test\r\nSender: evil@bad.test@example.test\r\n",
    ] {
        let r = submit_with_headers(&rig, headers).await;
        assert_eq!(r.code, 550, "{headers:?} got {r:?}");
        assert!(r.text.starts_with("5.7.1"), "{r:?}");
    }
    assert!(rig.spooled().is_empty());
    for headers in [
        "From: \"App, Inc\" <app@example.test>\r\nSender: bot@example.test\r\n",
        "From: App <app@example.test>\r\nReply-To: anyone@elsewhere.test\r\n",
    ] {
        let r = submit_with_headers(&rig, headers).await;
        assert_eq!(r.code, 250, "{headers:?} got {r:?}");
    }
    assert_eq!(rig.spooled().len(), 2);
}
