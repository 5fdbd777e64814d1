//! Item 5: slowloris. A command line must be complete within `command_timeout` of the
//! previous reply and a message within `data_timeout` of the `354`, however the bytes drip.

use std::time::{Duration, Instant};

use super::rig;
use crate::submission::client::{Client, SmtpReply};

/// Sends `bytes` one at a time, `every` apart, until herald answers; returns how long the
/// dripping went on and herald's reply (`None`: it never answered before the bytes ran out).
async fn drip(c: &mut Client, bytes: &[u8], every: Duration) -> (Duration, Option<SmtpReply>) {
    let start = Instant::now();
    for b in bytes {
        c.send([*b]).await;
        tokio::select! {
            r = c.try_reply() => return (start.elapsed(), r),
            _ = tokio::time::sleep(every) => {}
        }
    }
    (start.elapsed(), None)
}

#[tokio::test]
async fn a_command_dripped_byte_by_byte_is_cut_off_at_command_timeout() {
    let rig = rig(|cfg| crate::support::set(cfg, "smtp.command_timeout", "2s"));
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    // One byte every 250 ms: each read is well inside 2 s, the line never is.
    let line = format!("EHLO {}\r\n", "a".repeat(200));
    let (took, answer) = drip(&mut c, line.as_bytes(), Duration::from_millis(250)).await;
    let r = answer.expect("herald answered while the line was dripping");
    assert_eq!(r.code, 421, "{r:?} after {took:?}");
    assert!(r.text.starts_with("4.4.2"), "{r:?}");
    assert!(c.closed().await);
    assert!(
        took < Duration::from_secs(10),
        "the connection stayed open {took:?} while dripping (command_timeout 2 s)"
    );
}

#[tokio::test]
async fn a_message_dripped_byte_by_byte_is_cut_off_at_data_timeout_and_not_kept() {
    let rig = rig(|cfg| crate::support::set(cfg, "smtp.data_timeout", "2s"));
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    let body = format!("{}\r\n{}\r\n.\r\n", super::BODY, "x".repeat(200));
    let (took, answer) = drip(&mut c, body.as_bytes(), Duration::from_millis(100)).await;
    let r = answer.expect("herald answered while the message was dripping");
    assert_eq!(r.code, 421, "{r:?} after {took:?}");
    assert!(r.text.starts_with("4.4.2"), "{r:?}");
    assert!(took < Duration::from_secs(10), "DATA went on for {took:?}");
    assert!(rig.spooled().is_empty());
}
