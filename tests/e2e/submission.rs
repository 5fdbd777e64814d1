//! End-to-end tests: submission. herald runs as a child process; apps are mail-send (normal
//! submissions) or a raw client (protocol-level cases), each on its own loopback IP.

pub(crate) mod client;
mod lifecycle;
mod reconnect;

use std::path::Path;
use std::sync::Arc;

use client::{Client, HOST};

use crate::support::ca::{TestCa, Validity};
use crate::support::herald::{DEMO_PASSWORD, Herald, base_config};

const BODY: &str = "From: App <app@example.test>\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nHello.";

/// A herald with a certificate from a test CA, and a client TLS config trusting that CA.
struct Rig {
    dir: tempfile::TempDir,
    herald: Herald,
    tls: Arc<rustls::ClientConfig>,
}

fn rig(tweak: impl FnOnce(&mut toml::Table)) -> Rig {
    rig_and_ca(tweak).0
}

/// [`rig`], and the test CA that issued herald's certificate (for clients built by the test).
fn rig_and_ca(tweak: impl FnOnce(&mut toml::Table)) -> (Rig, TestCa) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&[HOST], Validity::Current);
    std::fs::create_dir_all(dir.path().join("certs")).expect("certs dir");
    std::fs::write(dir.path().join("certs/herald.crt"), cert).expect("write cert");
    std::fs::write(dir.path().join("certs/herald.key"), key).expect("write key");
    let mut cfg = base_config(dir.path());
    tweak(&mut cfg);
    let herald = Herald::start(dir.path(), cfg);
    let tls = ca.client_config_trusting();
    (Rig { dir, herald, tls }, ca)
}

fn set(cfg: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    cfg.entry(section)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("section is a table")
        .insert(key.to_string(), value.into());
}

/// Every spooled message: its envelope (JSON) and its bytes.
fn spooled(data: &Path) -> Vec<(serde_json::Value, String)> {
    crate::support::spool::spooled(data)
        .into_iter()
        .map(|m| {
            (
                serde_json::from_str(&m.envelope).expect("envelope JSON"),
                String::from_utf8(m.message).expect("UTF-8 message"),
            )
        })
        .collect()
}

impl Rig {
    fn addr(&self, l: &str) -> std::net::SocketAddr {
        self.herald.smtp_addr(l)
    }
    async fn login(&self) -> Client {
        Client::submission_login(self.addr("submission"), self.tls.clone()).await
    }
}

async fn send_with_mail_send(rig: &Rig, implicit: bool) -> mail_send::Result<()> {
    let listener = if implicit {
        "submissions"
    } else {
        "submission"
    };
    let addr = rig.addr(listener);
    let mut client = mail_send::SmtpClientBuilder::new(addr.ip().to_string(), addr.port())
        .expect("mail-send client builder")
        .implicit_tls(implicit)
        .allow_invalid_certs()
        .local_ip(std::net::IpAddr::V4(crate::support::free_ip()))
        .helo_host("app.test")
        .credentials(("demo".to_string(), DEMO_PASSWORD.to_string()))
        .connect()
        .await?;
    let message = mail_send::smtp::message::Message::new(
        "app@example.test",
        vec!["r@example.org", "s@example.net"],
        BODY.as_bytes(),
    );
    client.send(message).await
}

#[tokio::test]
async fn starttls_and_implicit_tls_submissions_are_spooled_with_trace_headers() {
    let rig = rig(|_| {});
    send_with_mail_send(&rig, false)
        .await
        .expect("STARTTLS submission");
    send_with_mail_send(&rig, true)
        .await
        .expect("implicit TLS submission");
    let all = spooled(rig.dir.path());
    assert_eq!(all.len(), 2);
    for (env, msg) in all {
        assert_eq!(env["app"], "demo");
        assert_eq!(env["mail_from"], "app@example.test");
        assert_eq!(env["recipients"][1], "s@example.net");
        assert_eq!(env["helo"], "app.test");
        assert!(
            env["tls"].as_str().unwrap_or("").starts_with("TLSv1."),
            "{env}"
        );
        // Signed at acceptance: the DKIM signatures precede herald's own trace header.
        assert!(msg.starts_with("DKIM-Signature: "), "{msg}");
        assert!(msg.contains("\r\nReceived: from app.test (["), "{msg}");
        assert!(msg.contains("by herald.example.test (herald) with ESMTPSA"));
        assert!(msg.contains("(version=TLSv1.3 cipher=TLS13_"), "{msg}");
        assert!(msg.contains("(app=demo)"));
        assert!(msg.contains("\r\nDate: "), "Date added");
        assert!(msg.contains("\r\nMessage-ID: <"), "Message-ID added");
        assert!(msg.ends_with("\r\n\r\nHello.\r\n"));
    }
}

#[tokio::test]
async fn ehlo_auth_before_tls_plain_login_and_wrong_password() {
    let rig = rig(|_| {});
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    for kw in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
        "HELP",
    ] {
        assert!(ehlo.lines().any(|l| l == kw), "{kw} missing in {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "AUTH offered before TLS: {ehlo}");
    let r = c.auth_plain("demo", DEMO_PASSWORD, 538).await;
    assert!(r.text.starts_with("5.7.11"), "{r:?}");
    let r = c.expect("MAIL FROM:<app@example.test>", 530).await;
    assert!(r.text.starts_with("5.7.0"), "{r:?}");
    c.expect("VRFY someone", 252).await;
    c.expect("HELP", 214).await;
    c.expect("NOOP", 250).await;
    c.starttls(rig.tls.clone()).await;
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    assert!(ehlo.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"));
    let r = c.auth_plain("demo", "wrong", 535).await;
    assert!(r.text.starts_with("5.7.8"), "{r:?}");
    c.auth_plain("nobody", DEMO_PASSWORD, 535).await;
    // AUTH LOGIN: user name and password after 334 prompts.
    c.expect("AUTH LOGIN", 334).await;
    c.expect("ZGVtbw==", 334).await; // "demo"
    use base64::Engine;
    let pw = base64::engine::general_purpose::STANDARD.encode(DEMO_PASSWORD);
    c.expect(&pw, 235).await;
    let r = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.starts_with("2.0.0 queued as "), "{r:?}");
    c.expect("QUIT", 221).await;
    assert_eq!(spooled(rig.dir.path()).len(), 1);
}

#[tokio::test]
async fn unauthenticated_relay_is_refused_on_implicit_tls() {
    let rig = rig(|_| {});
    let mut c = Client::tls_from(
        crate::support::free_ip(),
        rig.addr("submissions"),
        rig.tls.clone(),
    )
    .await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO relay.test", 250).await;
    let r = c.expect("MAIL FROM:<app@example.test>", 530).await;
    assert!(r.text.starts_with("5.7.0"));
    c.expect("RCPT TO:<victim@example.org>", 503).await;
    c.expect("DATA", 503).await;
    assert!(spooled(rig.dir.path()).is_empty());
}

#[tokio::test]
async fn senders_not_allowed_in_envelope_or_header_are_refused() {
    let rig = rig(|_| {});
    let mut c = rig.login().await;
    let r = c.expect("MAIL FROM:<ceo@other.test>", 550).await;
    assert!(r.text.starts_with("5.7.1"), "{r:?}");
    assert!(
        r.text.contains("<ceo@other.test>") && r.text.contains("app demo"),
        "{r:?}"
    );
    let body = "From: CEO <ceo@other.test>\r\nSubject: x\r\n\r\npay this";
    let r = c.submit("app@example.test", &["r@example.org"], body).await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(
        r.text.contains("<ceo@other.test>") && r.text.contains("app demo"),
        "{r:?}"
    );
    let r = c
        .submit(
            "app@example.test",
            &["r@example.org"],
            "Subject: no from\r\n\r\nx",
        )
        .await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(spooled(rig.dir.path()).is_empty());
}

#[tokio::test]
async fn oversize_messages_are_refused_while_streaming_and_the_session_goes_on() {
    let rig = rig(|cfg| set(cfg, "smtp", "max_message_size", 4096));
    let mut c = rig.login().await;
    let r = c
        .expect("MAIL FROM:<app@example.test> SIZE=100000", 552)
        .await;
    assert!(r.text.starts_with("5.3.4"));
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send(format!("{BODY}\r\n")).await;
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..2000 {
        c.send(&line).await; // 2 MB, far beyond the limit: herald must keep reading, not buffer
    }
    c.send(".\r\n").await;
    let r = c.reply().await;
    assert_eq!(r.code, 552, "{r:?}");
    assert!(r.text.starts_with("5.3.4"));
    c.expect("NOOP", 250).await;
    assert!(spooled(rig.dir.path()).is_empty());
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let rig = rig(|cfg| set(cfg, "smtp", "max_recipients", 2));
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<a@example.org>", 250).await;
    c.expect("RCPT TO:<b@example.org>", 250).await;
    let r = c.expect("RCPT TO:<c@example.org>", 452).await;
    assert!(r.text.starts_with("4.5.3"));
    c.expect("DATA", 354).await;
    c.send(format!("{BODY}\r\n.\r\n")).await;
    assert_eq!(c.reply().await.code, 250);
    let all = spooled(rig.dir.path());
    assert_eq!(all[0].0["recipients"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn garbage_and_overlong_lines_get_500_then_too_many_errors_421() {
    let rig = rig(|cfg| set(cfg, "smtp", "max_errors", 4));
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    c.send(b"\x00\xff\xfe garbage \x01\r\n").await;
    assert_eq!(c.reply().await.code, 500);
    c.send(format!("NOOP {}\r\n", "a".repeat(10_000))).await;
    let r = c.reply().await;
    assert_eq!(r.code, 500, "{r:?}");
    assert!(r.text.contains("too long"));
    c.expect("NOOP", 250).await;
    c.expect("MAIL FROM:<bad address", 501).await;
    c.expect("FROB", 500).await;
    let r = c.reply().await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let rig = rig(|_| {});
    let mut c = rig.login().await;
    c.send(
        "MAIL FROM:<app@example.test>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<bad\r\n\
         RCPT TO:<b@example.org>\r\nNOOP\r\nDATA\r\n",
    )
    .await;
    let codes = [250, 250, 501, 250, 250, 354];
    for want in codes {
        let r = c.reply().await;
        assert_eq!(r.code, want, "{r:?}");
    }
    c.send(format!(
        "{BODY}\r\n.\r\nRSET\r\nMAIL FROM:<x@other.test>\r\nQUIT\r\n"
    ))
    .await;
    for want in [250, 250, 550, 221] {
        let r = c.reply().await;
        assert_eq!(r.code, want, "{r:?}");
    }
    assert_eq!(spooled(rig.dir.path()).len(), 1);
}

#[tokio::test]
async fn a_stalled_client_is_timed_out() {
    let rig = rig(|cfg| set(cfg, "smtp", "command_timeout", "1s"));
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO staller.test", 250).await;
    // Say nothing more: herald must give up on us.
    let r = c.reply().await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.starts_with("4.4.2"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn smuggling_sequences_never_yield_a_second_message() {
    let rig = rig(|_| {});
    let smuggled = "MAIL FROM:<app@example.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n\
                    From: app@example.test\r\nSubject: smuggled\r\n\r\nsmuggled";
    for seq in ["\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\n"] {
        let mut c = rig.login().await;
        c.expect("MAIL FROM:<app@example.test>", 250).await;
        c.expect("RCPT TO:<r@example.org>", 250).await;
        c.expect("DATA", 354).await;
        c.send(format!("{BODY}{seq}{smuggled}\r\n.\r\n")).await;
        let r = c.reply().await;
        assert_eq!(r.code, 550, "{seq:?}: {r:?}");
        assert!(r.text.starts_with("5.6.0"), "{r:?}");
        // The connection is in a clean state: the next command is a command.
        c.expect("NOOP", 250).await;
    }
    assert!(
        spooled(rig.dir.path()).is_empty(),
        "nothing accepted, smuggled or not"
    );
}

#[tokio::test]
async fn bdat_chunks_are_accepted_and_checked() {
    let rig = rig(|cfg| set(cfg, "smtp", "max_message_size", 4096));
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    let (a, b) = BODY.split_at(20);
    c.send(format!("BDAT {}\r\n{a}", a.len())).await;
    assert_eq!(c.reply().await.code, 250);
    let b = format!("{b}\r\n");
    c.send(format!("BDAT {} LAST\r\n{b}", b.len())).await;
    let r = c.reply().await;
    assert_eq!(r.code, 250, "{r:?}");
    // Bare LF inside a chunk.
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    let bad = format!("{BODY}\n.\r\nQUIT\r\n");
    c.send(format!("BDAT {} LAST\r\n{bad}", bad.len())).await;
    let r = c.reply().await;
    assert_eq!(r.code, 550, "{r:?}");
    // Too big: the chunk is still read whole, then refused.
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    let big = "y".repeat(10_000);
    c.send(format!("BDAT {} LAST\r\n{big}", big.len())).await;
    assert_eq!(c.reply().await.code, 552);
    // BDAT without a transaction: the chunk is consumed, the session stays in sync.
    c.send("BDAT 5 LAST\r\nNOOP\r").await;
    assert_eq!(c.reply().await.code, 503);
    c.expect("NOOP", 250).await;
    let all = spooled(rig.dir.path());
    assert_eq!(all.len(), 1);
    assert!(all[0].1.ends_with(&format!("{BODY}\r\n")));
}

#[tokio::test]
async fn failed_auth_is_throttled_per_ip_without_blocking_others() {
    let rig = rig(|cfg| {
        set(cfg, "smtp", "auth_max_failures", 2);
        set(cfg, "smtp", "auth_failure_delay", "10ms");
        set(cfg, "smtp", "auth_block", "1h");
    });
    let mut c = rig.login().await; // a successful login from another IP first
    let attacker = crate::support::free_ip();
    let mut a = Client::plain_from(attacker, rig.addr("submission")).await;
    assert_eq!(a.reply().await.code, 220);
    a.expect("EHLO a.test", 250).await;
    a.starttls(rig.tls.clone()).await;
    a.expect("EHLO a.test", 250).await;
    a.auth_plain("demo", "guess1", 535).await;
    a.auth_plain("demo", "guess2", 535).await;
    // Now refused even with the right password, on this and new connections.
    let r = a.auth_plain("demo", DEMO_PASSWORD, 421).await;
    assert!(
        r.text.starts_with("4.7.0") && r.text.contains("try again"),
        "{r:?}"
    );
    let mut a2 = Client::plain_from(attacker, rig.addr("submission")).await;
    assert_eq!(a2.reply().await.code, 220);
    a2.expect("EHLO a.test", 250).await;
    a2.starttls(rig.tls.clone()).await;
    a2.expect("EHLO a.test", 250).await;
    a2.auth_plain("demo", DEMO_PASSWORD, 421).await;
    // Other clients are unaffected.
    let r = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(r.code, 250);
    rig.login().await;
}

#[tokio::test]
async fn app_rate_limit_gives_450() {
    let rig = rig(|cfg| {
        cfg["apps"]["demo"]
            .as_table_mut()
            .expect("demo app")
            .insert("rate_limit".into(), 2.into());
    });
    let mut c = rig.login().await;
    for _ in 0..2 {
        assert_eq!(
            c.submit("app@example.test", &["r@example.org"], BODY)
                .await
                .code,
            250
        );
    }
    let r = c.expect("MAIL FROM:<app@example.test>", 450).await;
    assert!(
        r.text.starts_with("4.7.1") && r.text.contains("demo"),
        "{r:?}"
    );
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_421() {
    let rig = rig(|cfg| set(cfg, "smtp", "max_connections_per_ip", 1));
    let ip = crate::support::free_ip();
    let mut first = Client::plain_from(ip, rig.addr("submission")).await;
    assert_eq!(first.reply().await.code, 220);
    let mut second = Client::plain_from(ip, rig.addr("submission")).await;
    let r = second.reply().await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.starts_with("4.7.0"));
    first.expect("NOOP", 250).await;
}

#[tokio::test]
async fn plain_listener_takes_allowed_networks_without_auth_and_refuses_others() {
    let allowed = crate::support::free_ip();
    let plain = crate::support::free_addr();
    let rig = rig(|cfg| {
        set(cfg, "smtp", "plain", plain.to_string());
        set(cfg, "smtp", "plain_networks", vec![format!("{allowed}/32")]);
        set(cfg, "smtp", "plain_senders", vec!["printer@example.test"]);
    });
    let mut other = Client::plain(plain).await;
    let r = other.reply().await;
    assert_eq!(r.code, 554, "{r:?}");
    assert!(other.closed().await);
    let mut c = Client::plain_from(allowed, plain).await;
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.expect("EHLO printer.test", 250).await.text;
    assert!(!ehlo.contains("AUTH"));
    c.auth_plain("demo", DEMO_PASSWORD, 502).await;
    c.expect("MAIL FROM:<someone@example.test>", 550).await;
    let body = "From: printer@example.test\r\nSubject: scan\r\n\r\nscan";
    let r = c
        .submit("printer@example.test", &["r@example.org"], body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let all = spooled(rig.dir.path());
    assert_eq!(all.len(), 1);
    assert!(all[0].0["app"].is_null());
    assert_eq!(all[0].0["client_ip"], allowed.to_string());
}

#[tokio::test]
async fn commands_pipelined_after_starttls_are_discarded() {
    let rig = rig(|_| {});
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO app.test", 250).await;
    // A man in the middle appends a command in the clear; it must not run inside TLS.
    c.send("STARTTLS\r\nFROB injected\r\n").await;
    c.starttls_after_sent(rig.tls.clone()).await;
    let r = c.cmd("EHLO app.test").await;
    assert_eq!(r.code, 250, "the injected command was answered: {r:?}");
}

#[tokio::test]
async fn a_client_stalling_inside_data_is_timed_out_and_nothing_is_kept() {
    let rig = rig(|cfg| set(cfg, "smtp", "data_timeout", "1s"));
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send("From: app@example.test\r\n\r\nand then nothing")
        .await;
    let r = c.reply().await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.starts_with("4.4.2"));
    assert!(c.closed().await);
    assert!(spooled(rig.dir.path()).is_empty());
}
