//! The feedback listener frames DATA with the same server core as submission: the smuggling
//! sequences that submission refuses (`smuggling_sequences_never_yield_a_second_message` in
//! `submission.rs`) are refused here the same way, and nothing is stored.

use std::io::Write;

use super::flow::{mail_for, story};
use super::smtp::Client;
use super::{FEEDBACK, feedback_config, start, summary};
use crate::support::dns::DnsServer;

#[test]
fn a_bare_lf_end_of_data_is_refused_as_submission_refuses_it_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (report, sender) = &story()[0];
    let mail = mail_for(report, sender, &rcpt);
    let body = mail.strip_suffix(b"\r\n").unwrap_or(&mail);
    let smuggled = format!("MAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n");
    let (mut c, greeting) = Client::connect(listen);
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO receiver.test").code, 250);
    for seq in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        let mut wire = body.to_vec();
        wire.extend_from_slice(seq.as_bytes());
        wire.extend_from_slice(smuggled.as_bytes());
        wire.extend_from_slice(body);
        wire.extend_from_slice(b"\r\n.\r\n");
        c.send_raw(&wire);
        let r = c.read();
        assert_eq!(r.code, 550, "{seq:?}: {r:?}");
        assert_eq!(
            r.text,
            "5.6.0 message contains a bare CR or bare LF: every line must end with CRLF \
             (refused to prevent SMTP smuggling)",
            "{seq:?}: the words submission uses"
        );
        // The connection is in a clean state: the next command is a command.
        assert_eq!(c.cmd("NOOP").code, 250, "{seq:?}");
    }
    assert_eq!(c.cmd("QUIT").code, 221);
    let s = summary(&h.config_path);
    assert_eq!(
        s["counters"]["mails"], 0,
        "nothing stored, smuggled or not: {s:#}"
    );
    assert_eq!(s["counters"]["dmarc_reports"], 0, "{s:#}");
}

#[test]
fn a_report_dripped_byte_by_byte_is_cut_off_at_data_timeout_for_the_whole_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    crate::support::set(&mut cfg, "feedback.data_timeout", "2s");
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (mut c, _) = Client::connect(listen);
    assert_eq!(c.cmd("EHLO receiver.test").code, 250);
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    // One byte every 100 ms: each read is well inside 2 s, the whole transfer is not. A
    // writer thread drips while this one waits for herald's answer.
    let mut w = c.writer();
    let dripper = std::thread::spawn(move || {
        for _ in 0..600 {
            if w.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let start = std::time::Instant::now();
    let r = c.read();
    let took = start.elapsed();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.starts_with("4.4.2"), "{r:?}");
    assert!(
        took < std::time::Duration::from_secs(20),
        "the transfer went on for {took:?} (data_timeout 2 s)"
    );
    let _ = dripper.join();
    assert_eq!(summary(&h.config_path)["counters"]["mails"], 0);
}
