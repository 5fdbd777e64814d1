//! The whole path: an app submits over STARTTLS + AUTH, herald signs, spools and delivers to
//! the recipient's MX over verified TLS; the signature verifies at the other end.

use mail_auth::{AuthenticatedMessage, DkimResult};
use mail_send::smtp::message::Message;
use mail_send::{Credentials, SmtpClient};
use tokio_rustls::TlsConnector;

use super::common::{WAIT, World, set, start, wait_lines};
use crate::support::ca::{TestCa, Validity};
use crate::support::herald::DEMO_PASSWORD;
use crate::support::smtp_sink::SinkOptions;

const HOST: &str = "herald.example.test";

#[test]
fn submitted_mail_arrives_at_the_mx_over_tls_signed() {
    let ca = TestCa::new();
    let mut w = World::new(1);
    let root = w.dir.path().join("test-root.pem");
    ca.write_root(&root);
    let (cert, key) = ca.issue(&[HOST], Validity::Current);
    std::fs::create_dir_all(w.dir.path().join("certs")).expect("certs dir");
    std::fs::write(w.dir.path().join("certs/herald.crt"), cert).expect("cert");
    std::fs::write(w.dir.path().join("certs/herald.key"), key).expect("key");
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let sink = w.sink(
        "mx.example.org",
        SinkOptions {
            tls: Some(ca.server_config(&["mx.example.org"], Validity::Current)),
            ..SinkOptions::default()
        },
    );
    let mut cfg = w.config();
    set(
        &mut cfg,
        "tls",
        "extra_roots",
        toml::Value::Array(vec![root.display().to_string().into()]),
    );
    let mut h = start(&w, cfg);
    let submission = h.smtp_addr("submission");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = SmtpClient::connect(submission, WAIT).await.expect("connect");
        c.read().await.expect("greeting");
        c.ehlo("app.test").await.expect("EHLO");
        let mut c = c
            .start_tls(&TlsConnector::from(ca.client_config_trusting()), HOST)
            .await
            .expect("STARTTLS");
        let ehlo = c.ehlo("app.test").await.expect("EHLO after TLS");
        c.authenticate(Credentials::new("demo", DEMO_PASSWORD), &ehlo)
            .await
            .expect("AUTH");
        let body = "From: App <app@example.test>\r\nTo: <bob@example.org>\r\n\
                    Subject: end to end\r\nMessage-ID: <e2e@example.test>\r\n\r\nInvoice attached.\r\n";
        c.send(Message::new("app@example.test", ["bob@example.org"], body.as_bytes()))
            .await
            .expect("submission accepted");
        let _ = c.quit().await;
    });

    let got = sink.wait_for_messages(1, WAIT);
    let m = &got[0];
    assert!(m.tls.is_some(), "delivered over TLS");
    assert_eq!(m.rcpts, vec!["bob@example.org"]);
    assert!(m.text().contains("DKIM-Signature:"), "{}", m.text());
    let attempt = wait_lines(&mut h, "delivery attempt", 1).remove(0);
    assert!(attempt.contains("cert_verified=true"), "{attempt}");

    let herald_cfg = herald::config::Config::load(&h.config_path).expect("config");
    for k in herald::signing::Signer::load(&herald_cfg)
        .expect("keys")
        .published_keys()
    {
        w.dns.add_txt(&k.record_name(), &k.txt);
    }
    let auth = herald::resolver::authenticator(&herald::config::DnsConfig {
        servers: vec![w.dns.addr],
    })
    .expect("resolver");
    let msg = AuthenticatedMessage::parse(&m.data).expect("parse");
    let results = rt.block_on(auth.verify_dkim(&msg));
    assert!(!results.is_empty());
    assert!(results.iter().all(|r| *r.result() == DkimResult::Pass));
}
