//! A failing disk under the spool: a failed fsync, a full disk, a read-only remount. Nothing
//! answered 250 is lost, and nothing is answered 250 that was not made durable.

use std::time::Duration;

use super::rig::PowerRig;
use crate::delivery::common::arrivals;
use crate::submission::client::SmtpReply;

fn codes(replies: &[SmtpReply]) -> Vec<u16> {
    replies.iter().map(|r| r.code).collect()
}

#[test]
fn a_failed_fsync_answers_451_and_a_later_flush_is_not_taken_for_it() {
    let mut rig = PowerRig::new();
    // Nothing delivered (so nothing removed and flushed) until the end: the only flushes are
    // the arrivals'.
    rig.sink.pause_data();
    rig.start();
    assert_eq!(codes(&rig.send_each(&["eio-1"], false)), [250]);
    rig.lazy().fail_fsyncs(1);
    let refused = rig.send_each(&["eio-2"], false);
    assert_eq!(codes(&refused), [451], "{refused:?}");
    // Linux forgets the pages a failed fsync could not write, and the next fsync of the same
    // file succeeds: were the next groups appended behind the lost record, that success would
    // cover them but not it, and recovery would stop at the hole.
    assert_eq!(
        codes(&rig.send_each(&["eio-3", "eio-4"], false)),
        [250, 250]
    );
    rig.kill();
    rig.cut_now();
    rig.cuts += 1;
    rig.sink.resume_data();
    let tally = rig.finish();
    assert_eq!((tally.acknowledged, tally.lost), (3, 0), "{tally:?}");
    assert!(
        !arrivals(&rig.sink).contains_key("<eio-2@example.test>"),
        "the message answered 451 is not delivered (its client sends it again)"
    );
}

#[test]
fn a_full_disk_answers_452_delivers_what_is_queued_and_accepts_again_once_space_is_freed() {
    let mut rig = PowerRig::new();
    rig.sink.pause_data();
    rig.start();
    assert_eq!(
        codes(&rig.send_each(&["full-1", "full-2"], false)),
        [250, 250]
    );
    rig.lazy().set_full(true);
    let refused = rig.send_each(&["full-big-1"], true);
    assert_eq!(codes(&refused), [452], "{refused:?}");
    assert!(refused[0].text.starts_with("4.3.1"), "{refused:?}");
    // Delivery goes on: a removal is a record in space the segment already holds.
    rig.sink.resume_data();
    rig.sink.wait_for_messages(2, Duration::from_secs(30));
    rig.lazy().set_full(false);
    assert_eq!(codes(&rig.send_each(&["full-big-2"], true)), [250]);
    let tally = rig.finish();
    assert_eq!((tally.acknowledged, tally.lost), (3, 0), "{tally:?}");
}

#[test]
fn a_read_only_spool_answers_451_and_still_delivers_what_it_holds() {
    let mut rig = PowerRig::new();
    let admin = crate::support::free_addr();
    crate::support::set(&mut rig.cfg, "admin.listen", admin.to_string());
    rig.sink.pause_data();
    rig.start();
    assert!(
        health(admin).starts_with("HTTP/1.1 200"),
        "{}",
        health(admin)
    );
    assert_eq!(codes(&rig.send_each(&["ro-1", "ro-2"], false)), [250, 250]);
    rig.lazy().set_read_only(true);
    let refused = rig.send_each(&["ro-3", "ro-4"], false);
    assert_eq!(codes(&refused), [451, 451], "{refused:?}");
    let said = health(admin);
    assert!(
        said.starts_with("HTTP/1.1 503") && said.contains("read-only file system"),
        "{said}"
    );
    rig.sink.resume_data();
    rig.sink.wait_for_messages(2, Duration::from_secs(30));
    // The operator repairs the file system and restarts herald: nothing accepted is lost
    // (what was delivered but could not be recorded may go out again).
    rig.lazy().set_read_only(false);
    rig.kill();
    let tally = rig.finish();
    assert_eq!((tally.acknowledged, tally.lost), (2, 0), "{tally:?}");
}

/// The admin endpoint's `/health` (no token needed): status line, headers and body.
fn health(admin: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).expect("connect admin");
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}
