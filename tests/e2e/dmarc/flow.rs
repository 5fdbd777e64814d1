//! The whole loop: eight days of Google reports (zip), one from Microsoft and one from Yahoo
//! (gzip) arrive over SMTP; `herald dmarc summary --json` shows the counts, the class of each
//! source and the verdict; a resent report counts once; other recipients are refused.

use super::samples::{self, Report, Row};
use super::smtp::{Client, deliver};
use super::{FEEDBACK, HERALD_IP, domain, feedback_config, herald_cmd, source, start, summary};
use crate::support::dns::DnsServer;

const MS365_IP: &str = "40.107.1.5";
const ESP_IP: &str = "192.0.2.55";
const FORGER_IP: &str = "198.51.100.7";
const NEWSLETTER_IP: &str = "198.51.100.20";

fn herald_row(count: u64, domain: &'static str) -> Row {
    Row {
        ip: HERALD_IP,
        count,
        dkim_aligned: true,
        spf_aligned: true,
        header_from: domain,
        dkim: vec![(domain, "herald", "pass")],
        spf: (domain, "pass"),
    }
}

/// The reports of the story: example.com is ready for quarantine, example.org is not.
pub(super) fn story() -> Vec<(Report, &'static str)> {
    let mut out = Vec::new();
    for d in 0..8 {
        let begin = samples::day_start(8 - d);
        out.push((
            Report {
                org: "google.com",
                email: "noreply-dmarc-support@google.com",
                report_id: format!("1234567890{d}"),
                domain: "example.com",
                policy: "none",
                begin,
                end: begin + 86_399,
                rows: vec![
                    herald_row(5000, "example.com"),
                    Row {
                        ip: MS365_IP,
                        count: 1000,
                        dkim_aligned: true,
                        spf_aligned: true,
                        header_from: "example.com",
                        dkim: vec![("example.com", "selector1", "pass")],
                        spf: ("example.com", "pass"),
                    },
                ],
                namespaced: false,
            },
            "google",
        ));
    }
    let day7 = samples::day_start(1);
    out.push((
        Report {
            org: "Enterprise Outlook",
            email: "dmarcreport@microsoft.com",
            report_id: "b3a9e5c0f1d24c2f8a6e0b1d2c3e4f50".into(),
            domain: "example.com",
            policy: "none",
            begin: day7,
            end: day7 + 86_399,
            rows: vec![
                herald_row(300, "example.com"),
                Row {
                    ip: FORGER_IP,
                    count: 161,
                    dkim_aligned: false,
                    spf_aligned: false,
                    header_from: "example.com",
                    dkim: vec![],
                    spf: ("example.com", "fail"),
                },
            ],
            namespaced: true,
        },
        "microsoft",
    ));
    let day6 = samples::day_start(2);
    out.push((
        Report {
            org: "Yahoo",
            email: "dmarchelp@yahooinc.com",
            report_id: "1701388800.338471".into(),
            domain: "example.com",
            policy: "none",
            begin: day6,
            end: day6 + 86_399,
            rows: vec![
                herald_row(50, "example.com"),
                Row {
                    ip: ESP_IP,
                    count: 25,
                    dkim_aligned: true,
                    spf_aligned: false,
                    header_from: "example.com",
                    dkim: vec![("example.com", "k1", "pass")],
                    spf: ("bounce.esp.test", "pass"),
                },
            ],
            namespaced: false,
        },
        "yahoo",
    ));
    out.push((
        Report {
            org: "google.com",
            email: "noreply-dmarc-support@google.com",
            report_id: "99887766554433".into(),
            domain: "example.org",
            policy: "none",
            begin: day7,
            end: day7 + 86_399,
            rows: vec![
                herald_row(40, "example.org"),
                Row {
                    ip: NEWSLETTER_IP,
                    count: 120,
                    dkim_aligned: false,
                    spf_aligned: false,
                    header_from: "example.org",
                    dkim: vec![("newsletter-tool.test", "nl", "pass")],
                    spf: ("bounces.newsletter-tool.test", "pass"),
                },
            ],
            namespaced: false,
        },
        "google",
    ));
    out
}

/// The mail a receiver sends for a report.
pub(super) fn mail_for(r: &Report, sender: &str, to: &str) -> Vec<u8> {
    let mail = match sender {
        "google" => samples::google_mail(r, to),
        "microsoft" => samples::multipart_gzip_mail(r, "dmarcreport@microsoft.com", to),
        _ => samples::multipart_gzip_mail(r, "noreply@dmarc.yahoo.com", to),
    };
    // Signed by the reporting organization, as the large reporters sign theirs.
    samples::dkim_signed(mail, r.reporter_domain())
}

/// The test DNS: SPF of example.com lists herald and Microsoft 365's range; example.org lists
/// herald and its newsletter tool.
pub(super) fn publish_spf(dns: &DnsServer) {
    dns.add_txt(
        "example.com",
        "v=spf1 ip4:203.0.113.10 ip4:40.107.0.0/16 -all",
    );
    dns.add_txt(
        "example.org",
        "v=spf1 ip4:203.0.113.10 ip4:198.51.100.20 -all",
    );
    dns.add_ptr(MS365_IP.parse().unwrap(), MS365_PTR);
}

const MS365_PTR: &str = "mail-eopbgr1.outbound.protection.outlook.com";

#[test]
fn reports_from_google_microsoft_and_yahoo_give_counts_classes_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    publish_spf(&dns);
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let reports = story();
    for (r, sender) in &reports {
        let reply = deliver(listen, &rcpt, &mail_for(r, sender, &rcpt));
        assert_eq!(reply.code, 250, "{sender} report refused: {reply:?}");
        assert!(reply.text.contains("1 stored"), "{reply:?}");
    }
    // A receiver that retries sends the same report again: counted once.
    let (again, sender) = &reports[3];
    let reply = deliver(listen, &rcpt, &mail_for(again, sender, &rcpt));
    assert_eq!(reply.code, 250);
    assert!(reply.text.contains("1 duplicate"), "{reply:?}");

    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["mails"], reports.len() as u64 + 1);
    assert_eq!(s["counters"]["dmarc_reports"], reports.len() as u64);
    assert_eq!(s["counters"]["duplicates"], 1);

    let com_rows: Vec<&Row> = reports
        .iter()
        .filter(|(r, _)| r.domain == "example.com")
        .flat_map(|(r, _)| r.rows.iter())
        .collect();
    let total: u64 = com_rows.iter().map(|r| r.count).sum();
    let pass: u64 = com_rows
        .iter()
        .filter(|r| r.passes())
        .map(|r| r.count)
        .sum();
    let com = domain(&s, "example.com");
    assert_eq!(com["messages"], total);
    assert_eq!(com["pass"], pass);
    assert_eq!(com["reports"], 10);
    assert_eq!(com["policy"], "none");
    assert_eq!(com["signed_by_herald"], true);
    let reporters: Vec<&str> = com["reporters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(reporters, ["Enterprise Outlook", "Yahoo", "google.com"]);
    assert_eq!(source(com, HERALD_IP)["class"], "herald");
    assert_eq!(source(com, MS365_IP)["class"], "authorized");
    assert_eq!(source(com, MS365_IP)["ptr"], MS365_PTR);
    assert!(source(com, FORGER_IP)["ptr"].is_null());
    assert!(
        source(com, MS365_IP)["why"]
            .as_str()
            .unwrap()
            .contains("SPF")
    );
    assert_eq!(source(com, ESP_IP)["class"], "authorized");
    assert!(
        source(com, ESP_IP)["why"]
            .as_str()
            .unwrap()
            .contains("DKIM")
    );
    assert_eq!(source(com, FORGER_IP)["class"], "unknown");
    assert_eq!(source(com, FORGER_IP)["messages"], 161);
    assert_eq!(source(com, FORGER_IP)["pass"], 0);
    assert_eq!(com["daily"].as_array().unwrap().len(), 8);
    let v = &com["verdict"];
    assert_eq!(v["next"], "quarantine", "{v:#}");
    assert_eq!(v["safe"], true);
    let hurt = v["hurt"].as_array().unwrap();
    assert_eq!(hurt.len(), 1, "{v:#}");
    assert_eq!(hurt[0]["ip"], FORGER_IP);
    assert_eq!(hurt[0]["failing"], 161);
    assert!(v["text"].as_str().unwrap().contains("p=quarantine"));

    let org = domain(&s, "example.org");
    assert_eq!(source(org, NEWSLETTER_IP)["class"], "authorized");
    let v = &org["verdict"];
    assert_eq!(v["next"], "fix", "{v:#}");
    assert_eq!(v["safe"], false);
    assert!(v["text"].as_str().unwrap().contains(NEWSLETTER_IP), "{v:#}");

    // The terminal table says the same in words.
    let (code, text, _) = herald_cmd(&h.config_path, &["dmarc", "summary"]);
    assert_eq!(code, 0);
    assert!(text.contains("example.com: "), "{text}");
    assert!(text.contains("verdict: quarantine"), "{text}");
    assert!(text.contains("verdict: fix"), "{text}");
    let (code, text, _) = herald_cmd(&h.config_path, &["dmarc", "sources", "example.com"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(FORGER_IP) && text.contains("unknown"),
        "{text}"
    );
}

#[test]
fn only_the_report_addresses_are_accepted_and_nothing_relays() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let _h = start(dir.path(), cfg);
    let (mut c, greeting) = Client::connect(listen);
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO receiver.test");
    assert_eq!(ehlo.code, 250);
    assert_eq!(c.cmd("AUTH PLAIN AGVtbwBwYXNz").code, 502);
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    for other in [
        format!("postmaster@{FEEDBACK}"),
        "someone@example.com".into(),
        format!("dmarc@other.{FEEDBACK}"),
    ] {
        let r = c.cmd(&format!("RCPT TO:<{other}>"));
        assert_eq!(r.code, 550, "{other}: {r:?}");
        assert!(r.text.starts_with("5.1.1"), "{r:?}");
    }
    // With no accepted recipient there is no DATA.
    assert_eq!(c.cmd("DATA").code, 503);
    assert_eq!(c.cmd(&format!("RCPT TO:<TLSRPT@{FEEDBACK}>")).code, 250);
    let r = c.cmd(&format!("MAIL FROM:<x@y.test> SIZE={}", 50 * 1024 * 1024));
    assert_eq!(r.code, 503, "a second MAIL in a transaction: {r:?}");
    assert_eq!(c.cmd("RSET").code, 250);
    let r = c.cmd(&format!("MAIL FROM:<x@y.test> SIZE={}", 50 * 1024 * 1024));
    assert_eq!(r.code, 552, "{r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn starttls_is_offered_and_reports_arrive_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let (mut c, _) = Client::connect(listen);
    let ehlo = c.cmd("EHLO receiver.test");
    assert_eq!(ehlo.code, 250);
    let _ = c.cmd("QUIT");
    // A real client (mail-send) upgrades with STARTTLS before sending, as receivers do.
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (r, _) = &story()[0];
    let body = samples::google_mail(r, &rcpt);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(async {
        let mut client = mail_send::SmtpClientBuilder::new(listen.ip().to_string(), listen.port())
            .unwrap()
            .implicit_tls(false)
            .allow_invalid_certs()
            .connect()
            .await
            .expect("STARTTLS session");
        client
            .send(
                mail_send::smtp::message::Message::empty()
                    .from("")
                    .to(rcpt.as_str())
                    .body(body),
            )
            .await
    });
    assert!(sent.is_ok(), "{sent:?}");
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["dmarc_reports"], 1);
}

#[test]
fn tls_reports_arrive_at_tlsrpt() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let h = start(dir.path(), cfg);
    let json = r#"{
  "organization-name": "Company-X",
  "date-range": {"start-datetime": "2026-11-30T00:00:00Z", "end-datetime": "2026-11-30T23:59:59Z"},
  "contact-info": "sts-reporting@company-x.example",
  "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
  "policies": [{
    "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"], "policy-domain": "example.com", "mx-host": ["mx.example.com"]},
    "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
    "failure-details": [{"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1", "receiving-mx-hostname": "mx.example.com", "failed-session-count": 100}]
  }]
}"#;
    let (r, _) = &story()[0];
    let rcpt = format!("tlsrpt@{FEEDBACK}");
    let mail = samples::attachment_mail(
        r,
        "tlsrpt@company-x.example",
        &rcpt,
        "application/tlsrpt+gzip",
        "company-x.example!example.com!1764460800!1764547199.json.gz",
        &samples::gzip(json.as_bytes()),
    );
    let reply = deliver(listen, &rcpt, &mail);
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.text.contains("1 stored"), "{reply:?}");
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["tls_reports"], 1);
    assert_eq!(s["counters"]["dmarc_reports"], 0);
    let t = &s["tls_reports"][0];
    assert_eq!(t["org"], "Company-X");
    assert_eq!(t["successful"], 5326);
    assert_eq!(t["failed"], 303);
    assert_eq!(t["domains"][0], "example.com");
}

#[test]
fn a_flood_from_one_address_is_deferred_and_reset_transactions_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    crate::support::set(&mut cfg, "feedback.max_mails_per_hour_per_ip", 2);
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (mut c, _) = Client::connect(listen);
    assert_eq!(c.cmd("EHLO receiver.test").code, 250);
    for _ in 0..5 {
        assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
        assert_eq!(c.cmd("RSET").code, 250);
    }
    for (r, sender) in &story()[..2] {
        assert_eq!(
            deliver(listen, &rcpt, &mail_for(r, sender, &rcpt)).code,
            250,
            "both reports of the allowance are taken"
        );
    }
    let r = c.cmd("MAIL FROM:<>");
    assert_eq!(r.code, 450, "then the allowance is used up: {r:?}");
    assert!(r.text.starts_with("4.7.1"), "{r:?}");
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["dmarc_reports"], 2);
}

#[test]
fn at_shutdown_a_report_in_its_data_is_stored_and_waiting_senders_are_told_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let mut h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (report, sender) = &story()[0];
    let mail = mail_for(report, sender, &rcpt);
    assert!(
        !mail
            .split(|&b| b == b'\n')
            .any(|line| line.starts_with(b".")),
        "the report needs no dot-stuffing"
    );
    let (head, tail) = mail.split_at(mail.len() / 2);
    // One sender in the middle of its DATA ...
    let (mut busy, _) = Client::connect(listen);
    assert_eq!(busy.cmd("EHLO mail-sender.report.test").code, 250);
    assert_eq!(busy.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(busy.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(busy.cmd("DATA").code, 354);
    busy.send_raw(head);
    // ... and one between commands.
    let (mut waiting, _) = Client::connect(listen);
    assert_eq!(waiting.cmd("EHLO other-sender.report.test").code, 250);

    h.send_sigterm();
    let bye = waiting.read();
    assert_eq!(bye.code, 421, "{bye:?}");
    assert!(bye.text.starts_with("4.3.2"), "{bye:?}");
    busy.send_raw(tail);
    if !tail.ends_with(b"\r\n") {
        busy.send_raw(b"\r\n");
    }
    busy.send_raw(b".\r\n");
    let stored = busy.read();
    assert_eq!(
        stored.code, 250,
        "the report in flight is taken: {stored:?}"
    );
    assert_eq!(busy.read().code, 421, "then the session is closed");
    let status = h.wait_exit(std::time::Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let s = summary(&h.config_path);
    assert_eq!(s["counters"]["dmarc_reports"], 1);
}
