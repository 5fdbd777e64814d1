//! What the report listener refuses in numbers (README "What the report listener accepts and
//! refuses"): counts that are not whole numbers within bounds, TLS-RPT reports dated in the
//! year 9999, and report mails built to expand to hundreds of thousands of rows. Each is
//! answered `250` (the sender cannot fix it) and kept as unreadable with its reason, never
//! stored as 0 or counted; herald's memory stays bounded.

use std::io::Write;

use base64::Engine;

use super::flow::story;
use super::samples::{self, Report, gzip};
use super::smtp::deliver;
use super::{FEEDBACK, feedback_config, herald_cmd, start, summary};
use crate::support::dns::DnsServer;

/// A multipart report mail with one gzip attachment per document.
fn mail_with_parts(from: &str, to: &str, parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Report Domain: example.com\r\n\
         Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <parts@report.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n"
    );
    for (name, gz) in parts {
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        m.push_str(&format!(
            "--=_b\r\nContent-Type: application/gzip; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            lines.join("\r\n")
        ));
    }
    m.push_str("--=_b--\r\n");
    m.into_bytes()
}

/// The `dmarc rejected --json` entries.
fn rejected(config: &std::path::Path) -> Vec<serde_json::Value> {
    let (code, out, _) = herald_cmd(config, &["dmarc", "rejected", "--json"]);
    assert_eq!(code, 0);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn counts_and_dates_outside_sane_bounds_make_a_report_unreadable_never_zero() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (base, _) = &story()[0];
    let bad_counts = [
        "9223372036854775808",
        "18446744073709551616",
        "-1",
        "1e3",
        "three",
        "4294967295000",
    ];
    let parts: Vec<(String, Vec<u8>)> = bad_counts
        .iter()
        .enumerate()
        .map(|(i, bad)| {
            let mut r: Report = base.clone();
            r.report_id = format!("bad-count-{i}");
            r.rows[0].count = 777;
            let xml = r
                .xml()
                .replace("<count>777</count>", &format!("<count>{bad}</count>"));
            assert!(xml.contains(bad));
            (format!("bad-{i}.xml.gz"), gzip(xml.as_bytes()))
        })
        .collect();
    let mail = mail_with_parts("dmarc@forger.test", &rcpt, &parts);
    let reply = deliver(listen, &rcpt, &mail);
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(
        reply.text.contains("0 stored") && reply.text.contains("6 unreadable"),
        "{reply:?}"
    );

    // A TLS-RPT report dated in the year 9999.
    let tls = r#"{"organization-name": "Far Future", "report-id": "y9999",
      "date-range": {"start-datetime": "9999-12-30T00:00:00Z", "end-datetime": "9999-12-30T23:59:59Z"},
      "contact-info": "tlsrpt@future.test",
      "policies": [{"policy": {"policy-type": "no-policy-found", "policy-domain": "example.com"},
        "summary": {"total-successful-session-count": 100, "total-failure-session-count": 100}}]}"#;
    let tlsrpt = format!("tlsrpt@{FEEDBACK}");
    let mail = samples::attachment_mail(
        base,
        "tlsrpt@future.test",
        &tlsrpt,
        "application/tlsrpt+gzip",
        "future.json.gz",
        &gzip(tls.as_bytes()),
    );
    let reply = deliver(listen, &tlsrpt, &mail);
    assert!(reply.text.contains("1 unreadable"), "{reply:?}");

    let rejected = rejected(&h.config_path);
    for (i, bad) in bad_counts.iter().enumerate() {
        let r = rejected
            .iter()
            .find(|r| r["part"] == format!("bad-{i}.xml.gz"))
            .unwrap_or_else(|| panic!("bad-{i} not rejected: {rejected:#?}"));
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains("record count") && error.contains(bad),
            "{bad}: {error}"
        );
    }
    assert!(
        rejected.iter().any(|r| r["part"] == "future.json.gz"
            && r["error"].as_str().unwrap().contains("date range")),
        "{rejected:#?}"
    );
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["dmarc_reports"], 0, "{s:#}");
    assert_eq!(s["counters"]["tls_reports"], 0, "{s:#}");
    assert_eq!(s["counters"]["rejected"], 7);
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// A DMARC report of `rows` minimal records, gzip'd, streamed into the encoder: with herald's
/// default `max_report_size` (32 MiB) about 438,000 rows fit in one document, a 336 KB mail.
fn gzip_report_of_rows(id: &str, rows: usize) -> Vec<u8> {
    let begin = samples::day_start(1);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    write!(
        gz,
        "<?xml version=\"1.0\"?><feedback><report_metadata><org_name>big.test</org_name>\
         <email>d@big.test</email><report_id>{id}</report_id><date_range><begin>{begin}</begin>\
         <end>{}</end></date_range></report_metadata><policy_published><domain>example.com\
         </domain><p>none</p></policy_published>",
        begin + 86_399
    )
    .unwrap();
    for i in 0..rows {
        write!(
            gz,
            "<record><row><source_ip>192.0.2.{}</source_ip><count>1</count></row></record>",
            i % 10
        )
        .unwrap();
    }
    gz.write_all(b"</feedback>").unwrap();
    gz.finish().unwrap()
}

#[test]
fn one_sending_address_adds_at_most_its_daily_rows() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    crate::support::set(&mut cfg, "feedback.max_rows_per_sender_per_day", 10_000);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let one = |id: &str| {
        mail_with_parts(
            "dmarc@big.test",
            &rcpt,
            &[(format!("{id}.xml.gz"), gzip_report_of_rows(id, 6_000))],
        )
    };
    let reply = deliver(listen, &rcpt, &one("first"));
    assert!(reply.text.contains("1 stored"), "{reply:?}");
    let reply = deliver(listen, &rcpt, &one("second"));
    assert!(
        reply.text.contains("0 stored") && reply.text.contains("1 unreadable"),
        "{reply:?}"
    );
    let rejected = rejected(&h.config_path);
    assert!(
        rejected.iter().any(|r| r["part"] == "report second"
            && r["error"]
                .as_str()
                .unwrap()
                .contains("max_rows_per_sender_per_day")),
        "{rejected:#?}"
    );
    assert_eq!(summary(&h.config_path)["counters"]["dmarc_reports"], 1);
}

#[test]
fn report_mails_that_expand_to_millions_of_rows_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let pid = h.child.id();
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (base, sender) = &story()[0];
    let good = super::flow::mail_for(base, sender, &rcpt);
    assert_eq!(deliver(listen, &rcpt, &good).code, 250);
    let before = peak_rss_kib(pid);

    // The issue's mail: four gzip parts of 438,016 rows each (1.75 M rows, about 1.3 MB).
    let big = gzip_report_of_rows("huge", 438_016);
    let parts: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("huge-{i}.xml.gz"), big.clone()))
        .collect();
    let mail = mail_with_parts("dmarc@big.test", &rcpt, &parts);
    eprintln!("big mail: {} bytes", mail.len());
    let reply = deliver(listen, &rcpt, &mail);
    assert!(reply.text.contains("4 unreadable"), "{reply:?}");

    // Reports under the per-report bound still add at most 20,000 records per mail.
    let parts: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("part-{i}.xml.gz"),
                gzip_report_of_rows(&format!("p{i}"), 9_000),
            )
        })
        .collect();
    let reply = deliver(
        listen,
        &rcpt,
        &mail_with_parts("dmarc@big.test", &rcpt, &parts),
    );
    assert!(
        reply.text.contains("2 stored") && reply.text.contains("1 unreadable"),
        "{reply:?}"
    );
    let after = peak_rss_kib(pid);
    eprintln!(
        "herald peak RSS before {before} KiB, after {after} KiB (growth {} MiB)",
        after.saturating_sub(before) / 1024
    );
    assert!(
        after.saturating_sub(before) < 96 * 1024,
        "peak memory grew by {} MiB",
        after.saturating_sub(before) / 1024
    );
    let rejected = rejected(&h.config_path);
    assert!(
        rejected
            .iter()
            .filter(|r| r["part"].as_str().unwrap().starts_with("huge-"))
            .all(|r| r["error"]
                .as_str()
                .unwrap()
                .contains("more than 10000 records")),
        "{rejected:#?}"
    );
    assert!(
        rejected.iter().any(|r| r["part"] == "part-2.xml.gz"
            && r["error"].as_str().unwrap().contains("records in one mail")),
        "{rejected:#?}"
    );
}
