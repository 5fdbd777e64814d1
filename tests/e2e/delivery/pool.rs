//! Pooled outbound sessions: when the receiving server restarts while herald holds idle
//! sessions to it, the next message goes at once over a fresh connection — no deferral, no
//! attempt counted for the dead sessions.

use mail_send::smtp::message::Message;
use mail_send::{Credentials, SmtpClient};
use tokio_rustls::TlsConnector;

use super::common::{WAIT, World, logged, set, start, store_many, wait_lines};
use crate::support::ca::{TestCa, Validity};
use crate::support::herald::DEMO_PASSWORD;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

const HOST: &str = "herald.example.test";

#[test]
fn a_restarted_server_gets_the_next_message_on_a_fresh_connection_at_once() {
    let ca = TestCa::new();
    let mut w = World::new(1);
    let (cert, key) = ca.issue(&[HOST], Validity::Current);
    std::fs::create_dir_all(w.dir.path().join("certs")).expect("certs dir");
    std::fs::write(w.dir.path().join("certs/herald.crt"), cert).expect("cert");
    std::fs::write(w.dir.path().join("certs/herald.key"), key).expect("key");
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let (listener, ip) = w.take();
    let addr = listener.local_addr().expect("addr");
    w.dns.add_a("mx.example.org", ip);
    let first = SmtpSink::start(listener, SinkOptions::default());
    // Three deliveries held at the same time: herald opens three sessions, all pooled after.
    first.pause_data();
    let subjects: Vec<String> = (0..3).map(|i| format!("before-restart-{i}")).collect();
    store_many(
        &w.dir.path().join("spool"),
        "app@example.test",
        &["bob@example.org"],
        &subjects,
    );
    let mut cfg = w.config();
    // Long retry delays: a deferral would show as a missing delivery, not as slowness.
    set(
        &mut cfg,
        "delivery",
        "retry_schedule",
        toml::Value::Array(vec!["1h".into()]),
    );
    let mut h = start(&w, cfg);
    first.wait_for_held(3, WAIT);
    first.resume_data();
    first.wait_for_messages(3, WAIT);
    wait_lines(&mut h, "delivery attempt", 3);
    assert_eq!(first.connections(), 3, "three sessions to pool");

    // The server restarts on the same address; herald's three idle sessions are now dead.
    drop(first);
    let again = std::net::TcpListener::bind(addr).expect("rebind the same address");
    let second = SmtpSink::start(again, SinkOptions::default());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = SmtpClient::connect(h.smtp_addr("submission"), WAIT)
            .await
            .expect("connect");
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
                    Subject: after restart\r\nMessage-ID: <after@example.test>\r\n\r\nHello.\r\n";
        c.send(Message::new(
            "app@example.test",
            ["bob@example.org"],
            body.as_bytes(),
        ))
        .await
        .expect("submission accepted");
        let _ = c.quit().await;
    });

    // With a one-hour retry delay, arriving at all means arriving on the first attempt.
    let got = second.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("Subject: after restart"));
    let attempts = wait_lines(&mut h, "delivery attempt", 4);
    assert_eq!(
        attempts.len(),
        4,
        "one attempt for the new message: {attempts:#?}"
    );
    assert!(
        attempts.iter().all(|l| l.contains("reply=250")),
        "no failed attempt logged: {attempts:#?}"
    );
    // Finished (delivered and removed from the spool), not deferred to a later attempt.
    wait_lines(&mut h, "finished: every recipient delivered", 4);
    assert_eq!(
        logged(&h, "pooled connection").len(),
        1,
        "one dead session tried, the others discarded unused"
    );
}
