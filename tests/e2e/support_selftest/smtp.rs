//! The SMTP sink against mail-send (plain, STARTTLS, AUTH) and raw sockets (pipelining).

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;

use mail_send::smtp::message::{Message, Parameters};
use mail_send::{Credentials, SmtpClient};
use tokio_rustls::TlsConnector;

use super::WAIT;
use crate::support::ca::{self, TestCa, Validity};
use crate::support::smtp_sink::{SinkOptions, SmtpSink, same_port_listeners};

fn body(subject: &str) -> String {
    format!(
        "From: app@example.test\r\nTo: rcpt@dest.test\r\nSubject: {subject}\r\n\r\nHello\r\n.leading dot\r\n"
    )
}

#[tokio::test]
async fn sink_plain_with_scripted_replies() {
    let (_port, mut listeners) = same_port_listeners(1);
    let sink = SmtpSink::start(
        listeners.remove(0),
        SinkOptions {
            rcpt_replies: vec!["550 5.1.1 no such user".into()],
            data_replies: vec!["451 4.3.0 try again later".into()],
            ..SinkOptions::default()
        },
    );
    let mut c = SmtpClient::connect(sink.addr(), WAIT)
        .await
        .expect("connect");
    c.read().await.expect("greeting");
    let ehlo = c.ehlo("client.test").await.expect("EHLO");
    for ext in [
        smtp_proto::EXT_PIPELINING,
        smtp_proto::EXT_8BIT_MIME,
        smtp_proto::EXT_SMTP_UTF8,
        smtp_proto::EXT_SIZE,
    ] {
        assert!(ehlo.has_capability(ext), "capability {ext} offered");
    }
    assert!(!ehlo.has_capability(smtp_proto::EXT_START_TLS));
    let none = Parameters::default();

    // A refused recipient, then DATA with no valid recipients.
    c.mail_from("app@example.test", &none).await.expect("MAIL");
    let err = c.rcpt_to("gone@dest.test", &none).await.expect_err("550");
    assert!(err.to_string().contains("550"), "{err}");
    let reply = c.cmd("DATA\r\n").await.expect("DATA reply");
    assert_eq!(reply.code(), 554);
    c.rset().await.expect("RSET");

    // A scripted 451 at end-of-data, then an accepted message on the same connection.
    c.mail_from("app@example.test", &none).await.expect("MAIL");
    c.rcpt_to("rcpt@dest.test", &none).await.expect("RCPT");
    let err = c.data(body("first").as_bytes()).await.expect_err("451");
    assert!(err.to_string().contains("451"), "{err}");
    c.noop().await.expect("NOOP");
    let msg = Message::new(
        "app@example.test",
        ["a@dest.test", "b@dest.test"],
        body("second").into_bytes(),
    );
    c.send(msg).await.expect("second message accepted");
    c.quit().await.expect("QUIT");

    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "app@example.test");
    assert_eq!(m.rcpts, vec!["a@dest.test", "b@dest.test"]);
    assert!(
        m.text().contains("\r\nHello\r\n.leading dot\r\n"),
        "{:?}",
        m.text()
    );
    assert_eq!(
        (m.tls.clone(), m.connection, m.helo.as_str()),
        (None, 1, "client.test")
    );
    let rejected = sink.rejected();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].reply.starts_with("451"));
    assert_eq!(sink.connections(), 1);
}

/// Sends raw bytes and reads `n` reply lines that end a reply (`NNN ` lines).
fn raw_replies(r: &mut BufReader<std::net::TcpStream>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).expect("read reply") > 0,
            "closed: {out:?}"
        );
        if line.as_bytes().get(3) == Some(&b' ') {
            out.push(line.trim_end().to_string());
        }
    }
    out
}

/// From a plain `#[test]`: pipelined commands, dot-stuffing and bare LF kept as sent.
#[test]
fn sink_pipelining_and_dot_unstuffing_raw() {
    let sink = SmtpSink::start_any(SinkOptions::default());
    let stream = std::net::TcpStream::connect(sink.addr()).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    raw_replies(&mut r, 1);
    w.write_all(
        b"EHLO raw.test\r\nMAIL FROM:<> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<x@dest.test>\r\n\
          RCPT TO:<y@dest.test>\r\nDATA\r\n",
    )
    .expect("pipelined");
    let replies = raw_replies(&mut r, 5);
    assert!(
        replies[0].starts_with("250 ") && replies[4].starts_with("354"),
        "{replies:?}"
    );
    // `\n.\r\n` is not an end of data: only CRLF.CRLF is.
    w.write_all(b"Subject: x\r\n\r\n..one\r\n..\r\nbare\n.\r\nlf\r\n...\r\n.\r\nQUIT\r\n")
        .expect("body");
    let end = raw_replies(&mut r, 2);
    assert!(
        end[0].starts_with("250") && end[1].starts_with("221"),
        "{end:?}"
    );
    let m = &sink.wait_for_messages(1, WAIT)[0];
    assert_eq!(
        m.data,
        b"Subject: x\r\n\r\n.one\r\n.\r\nbare\n.\r\nlf\r\n..\r\n"
    );
    assert_eq!(m.mail_from, "");
    assert_eq!(m.mail_params, vec!["BODY=8BITMIME", "SMTPUTF8"]);
    assert_eq!(m.rcpts, vec!["x@dest.test", "y@dest.test"]);
}

fn connector(config: Arc<rustls::ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

#[tokio::test]
async fn sink_starttls_and_auth() {
    let ca = TestCa::new();
    let (port, listeners) = same_port_listeners(2);
    let mut sinks = listeners.into_iter().map(|l| {
        SmtpSink::start(
            l,
            SinkOptions {
                tls: Some(ca.server_config(&["mx.dest.test"], Validity::Current)),
                require_auth: Some(("relay".into(), "secret".into())),
                ..SinkOptions::default()
            },
        )
    });
    let (sink, other) = (sinks.next().expect("sink"), sinks.next().expect("sink"));
    assert_eq!((sink.addr().port(), other.addr().port()), (port, port));
    assert_ne!(sink.addr().ip(), other.addr().ip());

    let mut c = SmtpClient::connect(sink.addr(), WAIT)
        .await
        .expect("connect");
    c.read().await.expect("greeting");
    let ehlo = c.ehlo("client.test").await.expect("EHLO");
    assert!(ehlo.has_capability(smtp_proto::EXT_START_TLS));
    assert!(
        !ehlo.has_capability(smtp_proto::EXT_AUTH),
        "no AUTH before TLS"
    );
    let mut c = c
        .start_tls(&connector(ca.client_config_trusting()), "mx.dest.test")
        .await
        .expect("STARTTLS with a certificate from the test CA");
    let ehlo = c.ehlo("client.test").await.expect("EHLO after TLS");
    assert!(ehlo.has_capability(smtp_proto::EXT_AUTH));
    assert!(!ehlo.has_capability(smtp_proto::EXT_START_TLS));
    let none = Parameters::default();
    let err = c.mail_from("a@example.test", &none).await.expect_err("530");
    assert!(err.to_string().contains("530"), "{err}");
    c.authenticate(Credentials::new("relay", "secret"), &ehlo)
        .await
        .expect("AUTH");
    c.send(Message::new(
        "a@example.test",
        ["r@dest.test"],
        body("tls").into_bytes(),
    ))
    .await
    .expect("send over TLS");
    let m = &sink.wait_for_messages(1, WAIT)[0];
    assert_eq!(m.tls.as_deref(), Some("TLSv1_3"));
    assert_eq!(m.sni.as_deref(), Some("mx.dest.test"));
    assert_eq!(m.authenticated.as_deref(), Some("relay"));
    assert_eq!(other.connections(), 0);
}

#[tokio::test]
async fn sink_bad_certificates_fail_verification() {
    let ca = TestCa::new();
    for (what, tls) in [
        (
            "expired",
            ca.server_config(&["mx.dest.test"], Validity::Expired),
        ),
        (
            "self-signed",
            ca::self_signed_server_config(&["mx.dest.test"]),
        ),
        (
            "wrong name",
            ca.server_config(&["other.test"], Validity::Current),
        ),
    ] {
        let sink = SmtpSink::start_any(SinkOptions {
            tls: Some(tls),
            ..SinkOptions::default()
        });
        let mut c = SmtpClient::connect(sink.addr(), WAIT)
            .await
            .expect("connect");
        c.read().await.expect("greeting");
        c.ehlo("client.test").await.expect("EHLO");
        let result = c
            .start_tls(&connector(ca.client_config_trusting()), "mx.dest.test")
            .await;
        assert!(
            matches!(result, Err(mail_send::Error::Tls(_))),
            "{what}: verification must fail, got {:?}",
            result.err()
        );
    }
}
