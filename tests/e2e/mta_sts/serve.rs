//! `herald serve` as a child process: mail submitted over SMTP is delivered under the policy;
//! after a restart with the policy host down, the cached policy still refuses an MX with a bad
//! certificate, and `herald report flush` goes through the admin endpoint with the counts from
//! before and after the restart.

use std::process::Command;

use hickory_proto::rr::RecordType;
use mail_send::SmtpClient;
use mail_send::smtp::message::Parameters;

use super::world::{DOMAIN, MxCert, WAIT, World};
use crate::support::herald::{Herald, base_config, herald_bin};
use crate::support::https::Response;
use crate::support::smtp_sink::same_port_listeners;

/// herald's config for `w`: the base test config plus the fake internet, a plain listener for
/// the app, and the admin endpoint.
fn config(w: &World, mx_port: u16) -> toml::Table {
    let mut cfg = base_config(w.dir.path());
    let root = w.dir.path().join("ca.pem").display().to_string();
    let extra = |table: &str, text: &str| -> toml::Table {
        let mut t: toml::Table = cfg
            .get(table)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default();
        let add: toml::Table = toml::from_str(text).expect("fragment parses");
        t.extend(add);
        t
    };
    let tls = extra("tls", &format!("extra_roots = [{root:?}]"));
    let smtp = extra(
        "smtp",
        &format!(
            "plain = \"{}\"\nplain_networks = [\"127.0.0.0/8\"]\nplain_senders = [\"@example.test\"]",
            crate::support::free_addr()
        ),
    );
    let delivery = extra("delivery", &format!("port = {mx_port}"));
    cfg.insert("tls".into(), tls.into());
    cfg.insert("smtp".into(), smtp.into());
    cfg.insert("delivery".into(), delivery.into());
    let rest: toml::Table = toml::from_str(&format!(
        "[dns]\nservers = [\"{dns}\"]\n\n[mta_sts]\nport = {port}\nfetch_timeout = \"5s\"\n\n\
         [report]\norganization = \"Herald Tests\"\ncontact = \"tlsrpt@example.test\"\n\n\
         [admin]\nlisten = \"{admin}\"\n",
        dns = w.dns.addr,
        port = w.https_port,
        admin = crate::support::free_addr(),
    ))
    .expect("config parses");
    cfg.extend(rest);
    cfg
}

/// Submits one message from app@example.test to user@bank.test on the plain listener.
async fn submit(herald: &Herald, subject: &str) {
    let mut c = SmtpClient::connect(herald.smtp_addr("plain"), WAIT)
        .await
        .expect("connect to herald");
    c.read().await.expect("greeting");
    c.ehlo("app.example.test").await.expect("EHLO");
    let none = Parameters::default();
    c.mail_from("app@example.test", &none).await.expect("MAIL");
    c.rcpt_to(&format!("user@{DOMAIN}"), &none)
        .await
        .expect("RCPT");
    let body = format!(
        "From: app@example.test\r\nTo: user@{DOMAIN}\r\nSubject: {subject}\r\n\r\nPayroll.\r\n"
    );
    c.data(body.as_bytes()).await.expect("DATA accepted");
}

/// Waits for the delivery log line about `mx`; returns it without terminal colours.
fn attempt_line(herald: &mut Herald, mx: &str) -> String {
    loop {
        let line = herald.wait_for_log(mx, WAIT);
        if line.contains("delivery attempt") {
            return strip_ansi(&line);
        }
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_enforces_a_cached_policy_after_a_restart_and_flushes_through_admin() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    w.dns.set_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!(
            "v=TLSRPTv1; rua=https://reports.{DOMAIN}:{}/tlsrpt",
            w.https_port
        ),
    );
    w.https().set_response("/tlsrpt", Response::status(200));
    let (port, mut listeners) = same_port_listeners(2);
    let mx1 = w.start_mx_on(listeners.remove(0), "mx1.bank.test", MxCert::Valid);
    let cfg = config(&w, port);

    let mut herald = Herald::start(w.dir.path(), cfg.clone());
    submit(&herald, "before restart").await;
    let got = tokio::task::block_in_place(|| mx1.wait_for_messages(1, WAIT));
    assert!(got[0].tls.is_some(), "delivered in clear");
    let line = attempt_line(&mut herald, "mx1.bank.test");
    assert!(line.contains("mta-sts enforce"), "{line}");
    assert!(line.contains("cert_verified=true"), "{line}");
    assert!(herald.terminate().success());

    // The policy host goes down and the only MX now presents an expired certificate.
    w.https().set_down(true);
    w.dns.remove_type(DOMAIN, RecordType::MX);
    let mx2 = w.start_mx_on(listeners.remove(0), "mx2.bank.test", MxCert::Expired);
    let mut herald = Herald::start(w.dir.path(), cfg);
    submit(&herald, "after restart").await;
    let line = attempt_line(&mut herald, "mx2.bank.test");
    assert!(line.contains("mta-sts enforce"), "{line}");
    assert!(line.contains("cert_verified=false"), "{line}");
    assert!(
        mx2.messages().is_empty(),
        "delivered despite the cached policy"
    );

    // Flush through the running herald: one report with the counts of both runs.
    w.https().set_down(false);
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(&herald.config_path)
        .args(["report", "flush"])
        .output()
        .expect("run herald report flush");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sent     bank.test: https://reports.bank.test"),
        "{stdout}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("admin endpoint did not answer"),
        "the flush did not go through the admin endpoint"
    );
    let posts = tokio::task::block_in_place(|| w.https().wait_for_posts(1, WAIT));
    let report = super::report::gunzip_json(&posts[0].2);
    let policy = &report["policies"][0];
    assert_eq!(
        policy["summary"]["total-successful-session-count"], 1,
        "{report}"
    );
    let details = policy["failure-details"].as_array().expect("details");
    assert_eq!(details[0]["result-type"], "certificate-expired", "{report}");
    assert_eq!(
        details[0]["receiving-mx-hostname"], "mx2.bank.test",
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_pending_reports_every_interval() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    w.dns.set_txt(
        &format!("_smtp._tls.{DOMAIN}"),
        &format!(
            "v=TLSRPTv1; rua=https://reports.{DOMAIN}:{}/tlsrpt",
            w.https_port
        ),
    );
    w.https().set_response("/tlsrpt", Response::status(200));
    let (port, mut listeners) = same_port_listeners(1);
    let mx = w.start_mx_on(listeners.remove(0), "mx1.bank.test", MxCert::Valid);
    let mut cfg = config(&w, port);
    let report: toml::Table = toml::from_str(
        "organization = \"Herald Tests\"\ncontact = \"tlsrpt@example.test\"\ninterval = \"1s\"",
    )
    .expect("fragment parses");
    cfg.insert("report".into(), report.into());
    let herald = Herald::start(w.dir.path(), cfg);
    submit(&herald, "periodic").await;
    tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    // No flush command: the periodic task sends the report on its own.
    let posts = tokio::task::block_in_place(|| w.https().wait_for_posts(1, WAIT));
    let report = super::report::gunzip_json(&posts[0].2);
    let summary = &report["policies"][0]["summary"];
    assert_eq!(summary["total-successful-session-count"], 1, "{report}");
    assert_eq!(summary["total-failure-session-count"], 0, "{report}");
}
