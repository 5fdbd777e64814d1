//! `herald report flush`: the pending counts become one gzip JSON report per domain and day,
//! POSTed to the `https:` rua and mailed (through herald's own queue) to the `mailto:` rua.

use std::io::Read;
use std::process::Command;
use std::sync::Arc;

use herald::report::{TlsOutcome, TlsReporter};
use herald::tls_policy::{Mode, Policy, TlsDirective};
use mail_auth::report::tlsrpt::ResultType;
use mail_parser::{MessageParser, MimeHeaders};

use super::world::{DOMAIN, MxCert, Relay, WAIT, World};
use crate::support::herald::herald_bin;
use crate::support::https::{Response, header};

pub fn gunzip_json(bytes: &[u8]) -> serde_json::Value {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .expect("gzip");
    serde_json::from_slice(&json).expect("JSON report")
}

/// The counts every check below expects: 2 successes, 3 failures (2 + 1).
fn assert_report(json: &serde_json::Value) {
    assert_eq!(json["organization-name"], "Herald Tests");
    assert_eq!(json["contact-info"], "tlsrpt@example.test");
    let policy = &json["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "sts");
    assert_eq!(policy["policy"]["policy-domain"], DOMAIN);
    assert_eq!(policy["policy"]["mx-host"][0], "*.bank.test");
    assert_eq!(policy["summary"]["total-successful-session-count"], 2);
    assert_eq!(policy["summary"]["total-failure-session-count"], 3);
    let details = policy["failure-details"].as_array().expect("details");
    let expired = details
        .iter()
        .find(|d| d["result-type"] == "certificate-expired")
        .expect("certificate-expired detail");
    assert_eq!(expired["failed-session-count"], 2);
    assert_eq!(expired["receiving-mx-hostname"], "mx1.bank.test");
    assert_eq!(expired["receiving-ip"], "127.0.0.9");
    assert!(
        details
            .iter()
            .any(|d| d["result-type"] == "starttls-not-supported")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_mails_and_posts_the_gzip_json_report() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    w.dns.set_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!(
            "v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN},https://reports.{DOMAIN}:{}/tlsrpt",
            w.https_port
        ),
    );
    w.https().set_response("/tlsrpt", Response::status(200));
    let mx = w.start_mx("mx1.bank.test", MxCert::Valid);
    let cfg = w.config(mx.addr().port());
    let config = w.config_file(mx.addr().port());

    // Counts as delivery records them, saved in the report directory.
    {
        let reporter = TlsReporter::open(&cfg).expect("reporter");
        let directive = enforce_directive();
        let failure = |result_type| TlsOutcome::Failure {
            result_type,
            mx_host: "mx1.bank.test".into(),
            ip: "127.0.0.9".parse().ok(),
            detail: "test".into(),
        };
        reporter.record(&directive, TlsOutcome::Success);
        reporter.record(&directive, TlsOutcome::Success);
        reporter.record(&directive, failure(ResultType::CertificateExpired));
        reporter.record(&directive, failure(ResultType::CertificateExpired));
        reporter.record(&directive, failure(ResultType::StartTlsNotSupported));
        reporter.persist().expect("persist");
    }

    let run = |args: &[&str]| {
        let out = Command::new(herald_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run herald");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, pending) = run(&["report", "pending"]);
    assert_eq!(code, Some(0), "{pending}");
    assert!(
        pending.contains("bank.test: 2 successful, 3 failed"),
        "{pending}"
    );

    let (code, flushed) = run(&["report", "flush"]);
    assert_eq!(code, Some(0), "{flushed}");
    assert!(flushed.contains("1 report(s) built"), "{flushed}");
    assert!(flushed.contains("sent     bank.test"), "{flushed}");

    // https: one POST of application/tlsrpt+gzip.
    let posts = tokio::task::block_in_place(|| w.https().wait_for_posts(1, WAIT));
    let (path, headers, body) = &posts[0];
    assert_eq!(path, "/tlsrpt");
    assert_eq!(
        header(headers, "content-type"),
        Some("application/tlsrpt+gzip")
    );
    assert_report(&gunzip_json(body));

    // mailto: the report waits in the spool; herald's queue delivers it to bank.test's MX.
    let relay = Relay::start(cfg).await;
    let got = tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    assert_eq!(got[0].rcpts, vec![format!("tlsrpt@{DOMAIN}")]);
    assert_eq!(got[0].mail_from, "tlsrpt@example.test");
    assert!(got[0].tls.is_some(), "the report went in clear");
    let message = MessageParser::default()
        .parse(&got[0].data)
        .expect("report message parses");
    let text = got[0].text();
    assert!(text.contains("TLS-Report-Domain: bank.test"), "{text}");
    let dkim = message
        .header_raw("DKIM-Signature")
        .expect("the report is DKIM-signed");
    assert!(dkim.contains("d=example.test"), "{dkim}");
    assert!(
        text.contains("TLS-Report-Submitter: example.test"),
        "{text}"
    );
    let subject = message.subject().unwrap_or_default();
    assert!(
        subject.starts_with("Report Domain: bank.test Submitter: example.test Report-ID: <"),
        "{subject}"
    );
    let content_type = message.content_type().expect("content type");
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("report"))
    );
    assert_eq!(content_type.attribute("report-type"), Some("tlsrpt"));
    let attachment = message
        .attachments()
        .find(|a| {
            a.content_type()
                .is_some_and(|c| c.subtype() == Some("tlsrpt+gzip"))
        })
        .expect("application/tlsrpt+gzip attachment");
    assert_report(&gunzip_json(attachment.contents()));

    // The next flush reports only what happened since (the relay holds the spool, so the CLI
    // says where mail goes). The report itself is delivered outside the policy (RFC 8460 §3) and not counted; an
    // ordinary message makes the one verified session the next report covers.
    relay.send("after the report").await;
    let relay_counts = relay.wait_for_counts(|c| c.success >= 1).await;
    assert_eq!(relay_counts.failure_total(), 0);
    relay.reporter.persist().expect("persist");
    let (code, again) = run(&["report", "flush"]);
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains("admin endpoint did not answer"), "{again}");
    let posts = tokio::task::block_in_place(|| w.https().wait_for_posts(2, WAIT));
    let second = gunzip_json(&posts[1].2);
    let summary = &second["policies"][0]["summary"];
    assert_eq!(summary["total-successful-session-count"], 1, "{second}");
    assert_eq!(summary["total-failure-session-count"], 0, "{second}");
}

/// RFC 8460 §3: the report reaches the domain even though its MX fails the very policy the
/// report is about (an expired certificate under `enforce`), while ordinary mail waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_delivered_despite_the_policy_it_reports_on() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    w.dns.set_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!("v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"),
    );
    let mx = w.start_mx("mx1.bank.test", MxCert::Expired);
    let cfg = w.config(mx.addr().port());
    let config = w.config_file(mx.addr().port());
    {
        let reporter = TlsReporter::open(&cfg).expect("reporter");
        let directive = enforce_directive();
        reporter.record(
            &directive,
            TlsOutcome::Failure {
                result_type: ResultType::CertificateExpired,
                mx_host: "mx1.bank.test".into(),
                ip: "127.0.0.9".parse().ok(),
                detail: "test".into(),
            },
        );
        reporter.persist().expect("persist");
    }
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(&config)
        .args(["report", "flush"])
        .output()
        .expect("run herald");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let relay = Relay::start(cfg).await;
    let payroll = relay.send("payroll").await;
    let got = tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    assert_eq!(got[0].rcpts, vec![format!("tlsrpt@{DOMAIN}")]);
    assert!(got[0].tls.is_some(), "the report still went over TLS");
    // Ordinary mail to the same MX stays held to the policy.
    relay.wait_for_counts(|c| c.failure_total() >= 1).await;
    relay.assert_still_queued(&payroll).await;
    assert_eq!(mx.messages().len(), 1, "{:?}", mx.messages());
}

/// The directive delivery uses for bank.test under its `enforce` policy (id 1, `*.bank.test`).
fn enforce_directive() -> TlsDirective {
    TlsDirective::Sts {
        domain: DOMAIN.into(),
        policy: Arc::new(Policy {
            id: "1".into(),
            mode: Mode::Enforce,
            mx: vec!["*.bank.test".into()],
            max_age: 86400,
        }),
    }
}
