//! Forged reports: anyone can mail the report address a report naming any organization. Only
//! a report whose mail is authenticated for the organization it names (here: DKIM-signed by
//! google.com, whose key the test DNS publishes) moves a verdict; eight reports from one
//! address under made-up organizations are stored, shown as unverified, and leave the verdict
//! where it was.

use super::flow::{mail_for, story};
use super::samples::{self, Report};
use super::smtp::deliver;
use super::{FEEDBACK, domain, feedback_config, herald_cmd, start, summary};
use crate::support::dns::DnsServer;

#[test]
fn forged_reports_under_made_up_organizations_leave_the_verdict_and_are_shown_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    super::flow::publish_spf(&dns);
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");

    // A forger sends first, under Google's name and the id Google's next report will have ...
    let (genuine, sender) = story().remove(7);
    let mut squatter: Report = genuine.clone();
    for row in &mut squatter.rows {
        row.count = 1;
    }
    let mail = samples::multipart_gzip_mail(&squatter, "reports@forger.test", &rcpt);
    assert!(deliver(listen, &rcpt, &mail).text.contains("1 stored"));
    // ... and the genuine report (signed by google.com) still takes its place: one day of
    // reports, so "wait".
    let reply = deliver(listen, &rcpt, &mail_for(&genuine, sender, &rcpt));
    assert!(reply.text.contains("1 stored"), "{reply:?}");
    let before = summary(&h.config_path);
    let com = domain(&before, "example.com");
    assert_eq!(com["verdict"]["next"], "wait", "{com:#}");
    let genuine_messages: u64 = genuine.rows.iter().map(|r| r.count).sum();
    assert_eq!(com["messages"], genuine_messages);

    // Eight reports from one address, eight made-up organizations, eight days of all-passing
    // mail: counted, they would make p=quarantine "safe".
    for i in 0..8 {
        let begin = samples::day_start(8 - i);
        let mut forged: Report = genuine.clone();
        forged.org = [
            "Acme Mail",
            "Bigpost",
            "Mailcorp",
            "Postly",
            "Inboxer",
            "Sendwell",
            "Letterly",
            "Mailbox One",
        ][i as usize];
        forged.email = "reports@forger.test";
        forged.report_id = format!("forged-{i}");
        forged.begin = begin;
        forged.end = begin + 86_399;
        for row in &mut forged.rows {
            row.dkim_aligned = true;
            row.spf_aligned = true;
            row.count = 50_000;
        }
        let mail = samples::multipart_gzip_mail(&forged, "reports@forger.test", &rcpt);
        let reply = deliver(listen, &rcpt, &mail);
        assert!(
            reply.text.contains("1 stored"),
            "forged report {i}: {reply:?}"
        );
    }

    let after = summary(&h.config_path);
    // Ten stored over time; the squatter was replaced by the genuine report.
    assert_eq!(after["counters"]["dmarc_reports"], 10);
    let com = domain(&after, "example.com");
    assert_eq!(com["verdict"]["next"], "wait", "{com:#}");
    assert_eq!(com["verdict"]["safe"], false);
    assert_eq!(
        com["messages"], genuine_messages,
        "forged messages are not counted"
    );
    assert_eq!(com["reports"], 1);
    assert_eq!(com["unverified"]["reports"], 8, "{com:#}");
    assert_eq!(
        com["unverified"]["messages"],
        8 * 50_000 * genuine.rows.len() as u64
    );
    assert!(
        com["verdict"]["text"]
            .as_str()
            .unwrap()
            .contains("8 unverified reports"),
        "{com:#}"
    );
    let (code, text, _) = herald_cmd(&h.config_path, &["dmarc", "summary"]);
    assert_eq!(code, 0);
    assert!(text.contains("unverified 8 reports"), "{text}");
    assert!(text.contains("verdict: wait"), "{text}");
}
