//! `[delivery] capture_dir`: what herald would deliver is written to files, one per message and
//! destination domain, and the recipients count as delivered; no MX is asked.

use super::common::{World, set, start, wait_finished};

#[test]
fn capture_dir_receives_each_message_per_domain_and_the_queue_empties() {
    let w = World::new(0);
    let capture = w.dir.path().join("captured");
    let mut cfg = w.config();
    set(
        &mut cfg,
        "delivery",
        "capture_dir",
        capture.display().to_string(),
    );
    // No MX exists for these domains: only the capture can succeed.
    let id = w.store(
        "app@example.test",
        &["bob@example.org", "carol@example.org", "dave@other.test"],
        "captured-1",
    );
    let mut h = start(&w, cfg);
    wait_finished(&mut h, &id);

    let org = std::fs::read_to_string(capture.join(format!("{id}.example.org.eml")))
        .expect("the example.org copy");
    assert!(
        org.starts_with("Return-Path: <app@example.test>\r\n"),
        "{org}"
    );
    assert!(org.contains("Delivered-To: bob@example.org\r\n"), "{org}");
    assert!(org.contains("Delivered-To: carol@example.org\r\n"), "{org}");
    assert!(!org.contains("dave@other.test\r\nDelivered"), "{org}");
    assert!(
        org.contains("Message-ID: <captured-1@example.test>"),
        "{org}"
    );
    assert!(org.contains("\r\n.a line with a leading dot\r\n"), "{org}");
    let other = std::fs::read_to_string(capture.join(format!("{id}.other.test.eml")))
        .expect("the other.test copy");
    assert!(
        other.contains("Delivered-To: dave@other.test\r\n"),
        "{other}"
    );
    // Delivered: the spool no longer holds the message.
    assert!(
        !w.dir
            .path()
            .join("spool/msg")
            .join(format!("{id}.msg"))
            .exists(),
        "the message left the spool"
    );
}
