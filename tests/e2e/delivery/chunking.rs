//! CHUNKING (RFC 3030): to an MX that offers it with PIPELINING, the envelope and a message of
//! up to 64 KiB go in one write as one `BDAT <size> LAST` chunk (one round trip, no
//! dot-stuffing); to one that does not, and for larger messages, DATA as before. Either way the
//! MX gets the same bytes.

use super::common::{
    WAIT, World, logged, message, set, start, store_many, store_messages, wait_finished,
};
use crate::support::smtp_sink::SinkOptions;

#[test]
fn the_message_goes_in_one_bdat_chunk_where_offered_and_after_data_elsewhere_byte_for_byte() {
    let mut w = World::new(2);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    w.dns.add_mx("example.net", 10, "mx.example.net");
    let chunking = w.sink("mx.example.org", SinkOptions::default());
    let data_only = w.sink(
        "mx.example.net",
        SinkOptions {
            hide_extensions: vec!["CHUNKING".into()],
            ..SinkOptions::default()
        },
    );
    let rcpts = ["bob@example.org", "carol@example.net"];
    let id = w.store("app@example.test", &rcpts, "chunked");
    let mut h = start(&w, w.config());
    wait_finished(&mut h, &id);

    let by_bdat = chunking.wait_for_messages(1, WAIT).remove(0);
    let by_data = data_only.wait_for_messages(1, WAIT).remove(0);
    assert!(by_bdat.chunked, "sent with BDAT where CHUNKING is offered");
    assert!(!by_data.chunked, "sent with DATA where it is not");
    assert_eq!(by_bdat.rcpts, ["bob@example.org"]);
    assert_eq!(by_data.rcpts, ["carol@example.net"]);
    // Exactly the stored message (a line starting with a dot included), both ways.
    let stored = message("app@example.test", &rcpts, "chunked");
    assert_eq!(by_bdat.data, stored);
    assert_eq!(by_data.data, stored);
    assert!(
        by_bdat
            .text()
            .contains("\r\n.a line with a leading dot\r\n")
    );
}

#[test]
fn over_bdat_a_refused_recipient_fails_alone_and_the_session_carries_on() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink(
        "mx.example.org",
        SinkOptions {
            rcpt_reply_for: vec![(
                "gone@example.org".into(),
                "550 5.1.1 <gone@example.org>: no such user".into(),
            )],
            ..SinkOptions::default()
        },
    );
    let spool = w.dir.path().join("spool");
    let from = "app@example.test";
    let mixed = store_many(
        &spool,
        from,
        &["bob@example.org", "gone@example.org"],
        &["mixed".into()],
    );
    let refused = store_many(&spool, from, &["gone@example.org"], &["all-refused".into()]);
    let after = store_many(&spool, from, &["bob@example.org"], &["after".into()]);
    let mut cfg = w.config();
    set(&mut cfg, "delivery", "max_connections_per_host", 1);
    let mut h = start(&w, cfg);
    for id in [&mixed[0], &refused[0], &after[0]] {
        wait_finished(&mut h, id);
    }

    let got = sink.messages();
    let subjects: Vec<bool> = got
        .iter()
        .map(|m| m.text().contains("Subject: after"))
        .collect();
    assert_eq!(got.len(), 2, "the mixed message and the one after it");
    assert!(
        got.iter()
            .all(|m| m.chunked && m.rcpts == ["bob@example.org"])
    );
    assert_eq!(subjects.iter().filter(|s| **s).count(), 1);
    assert!(sink.rejected().is_empty(), "no chunk was refused");
    assert_eq!(
        sink.connections(),
        1,
        "one session for all three, refusals included"
    );
    let refusals = logged(&h, "no such user");
    assert!(
        refusals.iter().any(|l| l.contains(&mixed[0]))
            && refusals.iter().any(|l| l.contains(&refused[0])),
        "{refusals:#?}"
    );
}

#[test]
fn a_message_over_64_kib_goes_after_data_once_the_envelope_is_accepted() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink("mx.example.org", SinkOptions::default());
    let rcpts = ["bob@example.org"];
    let mut big = message("app@example.test", &rcpts, "big");
    for i in 0..2500 {
        big.extend_from_slice(format!(".line {i} of a long report, dot first\r\n").as_bytes());
    }
    assert!(big.len() > 64 * 1024);
    let ids = store_messages(
        &w.dir.path().join("spool"),
        "app@example.test",
        &rcpts,
        vec![big.clone()],
    );
    let mut h = start(&w, w.config());
    wait_finished(&mut h, &ids[0]);
    let got = sink.wait_for_messages(1, WAIT).remove(0);
    assert!(!got.chunked, "sent after DATA");
    assert_eq!(got.data, big);
}
