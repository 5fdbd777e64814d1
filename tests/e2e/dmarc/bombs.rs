//! Hostile reports: a gzip bomb, a zip bomb (one huge entry, and thousands of entries), an XML
//! bomb and a broken attachment. Each is answered `250` (the sender cannot fix it), kept with
//! its error for `herald dmarc rejected`, and herald's memory does not grow with the bomb.

use super::flow::story;
use super::samples::{attachment_mail, zip};
use super::smtp::deliver;
use super::{FEEDBACK, feedback_config, herald_cmd, start, summary};
use crate::support::dns::DnsServer;

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// `n` bytes of spaces compressed with gzip, written in pieces (never all in memory).
fn gzip_of_spaces(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let piece = vec![b' '; 1024 * 1024];
    for _ in 0..n / piece.len() {
        gz.write_all(&piece).unwrap();
    }
    gz.finish().unwrap()
}

/// A zip with one entry of `n` spaces, streamed.
fn zip_of_spaces(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut w = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = ::zip::write::SimpleFileOptions::default()
        .compression_method(::zip::CompressionMethod::Deflated)
        .large_file(false);
    w.start_file("report.xml", opts).unwrap();
    let piece = vec![b' '; 1024 * 1024];
    for _ in 0..n / piece.len() {
        w.write_all(&piece).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<feedback><report_metadata><org_name>&lol9;</org_name></report_metadata></feedback>
"#;

#[test]
fn bombs_and_broken_reports_are_kept_as_rejected_without_memory_growth() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    crate::support::set(&mut cfg, "feedback.max_report_size", 4 * 1024 * 1024);
    let h = start(dir.path(), cfg);
    let pid = h.child.id();
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (base, _) = &story()[0];
    let from = "dmarc@attacker.test";
    // Warm up with one good report so the baseline includes a full parse and commit.
    let good = super::flow::mail_for(base, "google", &rcpt);
    assert_eq!(deliver(listen, &rcpt, &good).code, 250);
    let before = peak_rss_kib(pid);

    const BOMB: usize = 512 * 1024 * 1024;
    let many: Vec<(String, Vec<u8>)> = (0..5000)
        .map(|i| (format!("r{i}.xml"), b"<feedback/>".to_vec()))
        .collect();
    let hostile: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "application/gzip",
            "bomb.xml.gz",
            gzip_of_spaces(BOMB),
            "bomb",
        ),
        ("application/zip", "bomb.zip", zip_of_spaces(BOMB), "bomb"),
        ("application/zip", "many.zip", zip(&many), "max_zip_entries"),
        (
            "text/xml",
            "laughs.xml",
            BILLION_LAUGHS.as_bytes().to_vec(),
            "DTD",
        ),
        (
            "application/zip",
            "broken.zip",
            b"PK\x03\x04 not really".to_vec(),
            "zip",
        ),
    ];
    for (ctype, name, content, _) in &hostile {
        let mail = attachment_mail(base, from, &rcpt, ctype, name, content);
        assert!(
            mail.len() < 10 * 1024 * 1024,
            "{name} must fit the size limit"
        );
        let r = deliver(listen, &rcpt, &mail);
        assert_eq!(r.code, 250, "{name}: {r:?}");
        assert!(r.text.contains("1 unreadable"), "{name}: {r:?}");
    }
    let after = peak_rss_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("herald peak RSS before {before} KiB, after {after} KiB");
    assert!(
        growth_mib < 64,
        "peak memory grew by {growth_mib} MiB reading {} MiB bombs",
        BOMB / (1024 * 1024)
    );

    let (code, out, _) = herald_cmd(&h.config_path, &["dmarc", "rejected", "--json"]);
    assert_eq!(code, 0);
    let rejected: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rejected = rejected.as_array().unwrap();
    assert_eq!(rejected.len(), hostile.len(), "{rejected:#?}");
    for (_, name, _, why) in &hostile {
        let r = rejected
            .iter()
            .find(|r| r["part"].as_str().unwrap_or("").starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in {rejected:#?}"));
        assert!(
            r["error"].as_str().unwrap().contains(why),
            "{name}: expected {why:?} in {r}"
        );
    }
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["rejected"], hostile.len() as u64);
    assert_eq!(
        s["counters"]["dmarc_reports"], 1,
        "the good report is still there"
    );
    // herald is still up and answers.
    assert_eq!(deliver(listen, &rcpt, &good).code, 250);
}
