//! Self-tests of the fake internet (`tests/support`): each server driven by a real, independent
//! client (hickory-resolver and `dig` for DNS, mail-send and raw sockets for SMTP, reqwest for
//! HTTPS), so other tests can trust what these servers say.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use mail_send::smtp::message::{Message, Parameters};
use mail_send::{Credentials, SmtpClient};
use tokio_rustls::TlsConnector;

use crate::support::ca::{self, TestCa, Validity};
use crate::support::dns::DnsServer;
use crate::support::https::{HttpsServer, Response, header};
use crate::support::smtp_sink::{SinkOptions, SmtpSink, same_port_listeners};

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- DNS

/// A resolver asking only `server`, over UDP or TCP only.
fn resolver(server: SocketAddr, tcp: bool) -> hickory_resolver::TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = server.port();
    let ns = NameServerConfig::new(server.ip(), true, vec![conn]);
    let mut opts = ResolverOpts::default();
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    opts.cache_size = 0;
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("build resolver")
}

fn no_records(err: NetError) -> (ResponseCode, bool) {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => (nr.response_code, nr.soa.is_some()),
        other => panic!("expected a negative answer, got {other:?}"),
    }
}

const LONG_TXT: &str = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\
    cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\
    dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\
    eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\
    IDAQAB";

fn zone() -> DnsServer {
    let dns = DnsServer::start();
    dns.add_mx("example.test", 20, "mx2.example.test");
    dns.add_mx("Example.Test.", 10, "mx1.example.test.");
    dns.add_a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 10));
    dns.add_aaaa("mx1.example.test", "::1".parse().expect("ipv6"));
    dns.add_txt("dkim._domainkey.example.test", LONG_TXT);
    dns.add_txt("_mta-sts.example.test", "v=STSv1; id=1");
    dns.add_null_mx("nomail.test");
    dns
}

#[tokio::test]
async fn dns_answers_hickory_over_udp_and_tcp() {
    let dns = zone();
    for tcp in [false, true] {
        let r = resolver(dns.addr, tcp);
        let mx = r.mx_lookup("example.test.").await.expect("MX");
        let mut mx: Vec<(u16, String)> = mx
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        mx.sort();
        assert_eq!(
            mx,
            vec![
                (10, "mx1.example.test.".to_string()),
                (20, "mx2.example.test.".to_string())
            ],
            "tcp={tcp}"
        );
        let a = r.ipv4_lookup("MX1.example.TEST.").await.expect("A");
        assert!(
            a.answers()
                .iter()
                .any(|rec| rec.data == RData::A(Ipv4Addr::new(127, 0, 0, 10).into())),
            "tcp={tcp}: {a:?}"
        );
        let txt = r
            .txt_lookup("dkim._domainkey.example.test.")
            .await
            .expect("TXT");
        let joined: Vec<String> = txt
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(joined, vec![LONG_TXT.to_string()], "tcp={tcp}");
        let null = r.mx_lookup("nomail.test.").await.expect("null MX");
        assert!(
            matches!(&null.answers()[0].data, RData::MX(m) if m.preference == 0 && m.exchange.is_root())
        );

        let nx = r
            .mx_lookup("nowhere.example.test.")
            .await
            .expect_err("NXDOMAIN");
        assert_eq!(no_records(nx), (ResponseCode::NXDomain, true), "tcp={tcp}");
        let empty = r.txt_lookup("mx1.example.test.").await.expect_err("no TXT");
        assert_eq!(
            no_records(empty),
            (ResponseCode::NoError, true),
            "tcp={tcp}"
        );
    }
    assert!(dns.queries() >= 12, "queries counted: {}", dns.queries());
}

#[tokio::test]
async fn dns_records_change_at_run_time() {
    let dns = zone();
    dns.set_txt("_mta-sts.example.test", "v=STSv1; id=2");
    let txt = resolver(dns.addr, false)
        .txt_lookup("_mta-sts.example.test.")
        .await
        .expect("TXT");
    assert_eq!(txt.answers().len(), 1);
    assert!(matches!(&txt.answers()[0].data, RData::TXT(t) if &*t.txt_data[0] == b"v=STSv1; id=2"));
    dns.remove("_mta-sts.example.test.");
    let gone = resolver(dns.addr, false)
        .txt_lookup("_mta-sts.example.test.")
        .await
        .expect_err("removed");
    assert_eq!(no_records(gone).0, ResponseCode::NXDomain);
}

fn dig(dns: &DnsServer, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.addr.ip()))
        .arg("-p")
        .arg(dns.addr.port().to_string())
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dns_answers_dig() {
    let dns = zone();
    if dig(&dns, &["+short", "A", "mx1.example.test"]).is_none() {
        eprintln!("dig is not installed: skipping the dig cross-check");
        return;
    }
    for transport in ["+notcp", "+tcp"] {
        let mx = dig(&dns, &[transport, "+short", "MX", "example.test"]).expect("dig");
        let mut lines: Vec<&str> = mx.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec!["10 mx1.example.test.", "20 mx2.example.test."],
            "{transport}"
        );
        let nx = dig(&dns, &[transport, "MX", "nowhere.example.test"]).expect("dig");
        assert!(nx.contains("status: NXDOMAIN"), "{transport}: {nx}");
        let empty = dig(&dns, &[transport, "TXT", "mx1.example.test"]).expect("dig");
        assert!(
            empty.contains("status: NOERROR") && empty.contains("ANSWER: 0"),
            "{transport}: {empty}"
        );
        assert!(
            empty.contains("SOA"),
            "{transport}: negative answer carries an SOA: {empty}"
        );
        let null = dig(&dns, &[transport, "+short", "MX", "nomail.test"]).expect("dig");
        assert_eq!(null.trim(), "0 .", "{transport}");
    }
    // A TXT too big for a 512-byte UDP answer: truncated over UDP, dig retries over TCP.
    let big = "x".repeat(1500);
    dns.add_txt("big.example.test", &big);
    let udp = dig(&dns, &["+noedns", "+ignore", "TXT", "big.example.test"]).expect("dig");
    assert!(udp.contains(" tc"), "UDP answer is truncated: {udp}");
    let txt = dig(&dns, &["+noedns", "+short", "TXT", "big.example.test"]).expect("dig");
    let joined: String = txt
        .trim()
        .split("\" \"")
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(joined, big, "TCP retry gives the whole record");
}

// ---------------------------------------------------------------- SMTP

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

// ---------------------------------------------------------------- HTTPS

fn https_client(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::Client {
    // reqwest is built without a provider: install aws-lc-rs as herald does (idempotent).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).expect("root PEM"),
        )
        .tls_built_in_root_certs(false)
        .resolve(host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}

#[tokio::test]
async fn https_serves_policies_and_records_posts() {
    let ca = TestCa::new();
    let host = "mta-sts.example.test";
    let listener = std::net::TcpListener::bind(crate::support::free_addr()).expect("bind");
    let policy = "/.well-known/mta-sts.txt";
    let server = HttpsServer::start(
        listener,
        ca.server_config(&[host], Validity::Current),
        vec![(
            policy,
            Response::mta_sts_policy("enforce", &["mx.example.test"], 86400),
        )],
    );
    let client = https_client(&ca, host, server.addr());
    let url = format!("https://{host}:{}{policy}", server.addr().port());
    let got = client.get(&url).send().await.expect("GET policy");
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(
        got.text().await.expect("body"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
    );
    assert_eq!(server.hits(policy), 1);

    let missing = format!("https://{host}:{}/nothing", server.addr().port());
    assert_eq!(
        client.get(&missing).send().await.expect("GET").status(),
        404
    );

    server.set_response(policy, Response::redirect("https://elsewhere.test/p"));
    let got = client.get(&url).send().await.expect("GET redirect");
    assert_eq!(got.status(), 302);
    assert_eq!(got.headers()["location"], "https://elsewhere.test/p");

    server.set_down(true);
    assert!(client.get(&url).send().await.is_err(), "server is down");
    server.set_down(false);
    assert_eq!(server.hits(policy), 2, "a refused connection is not a hit");

    let report = vec![0x1f, 0x8b, 1, 2, 3];
    let post = format!("https://{host}:{}/tlsrpt", server.addr().port());
    let got = client
        .post(&post)
        .header("content-type", "application/tlsrpt+gzip")
        .body(report.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        got.status(),
        404,
        "no route set: the POST is still recorded"
    );
    let posts = server.wait_for_posts(1, WAIT);
    assert_eq!(posts[0].0, "/tlsrpt");
    assert_eq!(
        header(&posts[0].1, "Content-Type"),
        Some("application/tlsrpt+gzip")
    );
    assert_eq!(posts[0].2, report);
}

#[tokio::test]
async fn https_expired_certificate_is_refused() {
    let ca = TestCa::new();
    let host = "mta-sts.expired.test";
    let listener = std::net::TcpListener::bind(crate::support::free_addr()).expect("bind");
    let server = HttpsServer::start(
        listener,
        ca.server_config(&[host], Validity::Expired),
        vec![("/", Response::text("x"))],
    );
    let client = https_client(&ca, host, server.addr());
    let err = client
        .get(format!("https://{host}:{}/", server.addr().port()))
        .send()
        .await
        .expect_err("expired certificate");
    assert!(
        format!("{err:?}").to_lowercase().contains("expired"),
        "{err:?}"
    );
    assert_eq!(server.hits("/"), 0);
}

#[test]
fn ca_issues_pem_that_rustls_loads() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.pem");
    ca.write_root(&root);
    let roots = rustls_pemfile::certs(&mut std::fs::read(&root).expect("read").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("root PEM parses");
    assert_eq!(roots.len(), 1);
    let (chain, key) = ca.issue(&["mx.dest.test", "127.0.0.1"], Validity::Current);
    let certs = rustls_pemfile::certs(&mut chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain parses");
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .expect("key parses")
        .expect("one key");
    rustls::ServerConfig::builder_with_provider(ca::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("issued chain and key match");
}
