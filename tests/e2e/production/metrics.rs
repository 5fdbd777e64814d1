//! `/metrics` parses as Prometheus text, every family has HELP and TYPE, and the counters move
//! when mail is accepted and attempted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::serve;
use crate::support::herald::{DEMO_PASSWORD, base_config};

fn get_metrics(admin: SocketAddr, data: &Path) -> String {
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token file");
    let mut s = TcpStream::connect(admin).expect("connect admin");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        token.trim()
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of `name` with label `key=value`, parsed as Prometheus would.
fn sample(text: &str, name: &str, key: &str, value: &str) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get(key) == Some(value))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    let admin = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    let mut h = serve(dir.path(), &cfg, &[]);
    h.wait_for_event("ready", Duration::from_secs(60));
    let before = get_metrics(admin, dir.path());
    // Labelled families appear with their first sample; the others from the start.
    for family in [
        "herald_dsn_sent",
        "herald_queue_messages",
        "herald_queue_oldest_message_age_seconds",
        "herald_submission_duration_seconds",
        "herald_delivery_duration_seconds",
    ] {
        assert!(
            before.contains(&format!("# HELP {family} ")),
            "{family}: {before}"
        );
        assert!(
            before.contains(&format!("# TYPE {family} ")),
            "{family}: {before}"
        );
    }

    let addr: SocketAddr = cfg["smtp"]["submissions"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let mut client = mail_send::SmtpClientBuilder::new(addr.ip().to_string(), addr.port())
        .expect("builder")
        .implicit_tls(true)
        .allow_invalid_certs()
        .helo_host("app.test")
        .credentials(("demo".to_string(), DEMO_PASSWORD.to_string()))
        .connect()
        .await
        .expect("login");
    let body = "From: App <app@example.test>\r\nTo: r@nowhere.test\r\nSubject: m\r\n\r\nHi.\r\n";
    client
        .send(mail_send::smtp::message::Message::new(
            "app@example.test",
            vec!["r@nowhere.test"],
            body.as_bytes(),
        ))
        .await
        .expect("accepted");

    // A sender the app may not use is refused and counted by reason.
    let refused = client
        .send(mail_send::smtp::message::Message::new(
            "someone@elsewhere.test",
            vec!["r@nowhere.test"],
            body.as_bytes(),
        ))
        .await;
    assert!(refused.is_err(), "a foreign sender must be refused");
    let text = get_metrics(admin, dir.path());
    assert_eq!(
        sample(&text, "herald_messages_refused_total", "reason", "policy"),
        Some(1.0),
        "{text}"
    );

    // Accepted at once; the attempt (DNS points at a dead port) defers for nowhere.test.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = get_metrics(admin, dir.path());
        let accepted = sample(&text, "herald_messages_accepted_total", "app", "demo");
        let deferred = sample(
            &text,
            "herald_recipients_deferred_total",
            "domain",
            "nowhere.test",
        );
        if accepted == Some(1.0) && deferred.is_some_and(|d| d >= 1.0) {
            let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
                .expect("parses");
            let depth = scrape
                .samples
                .iter()
                .find(|s| s.metric == "herald_queue_messages")
                .expect("queue depth");
            assert!(matches!(depth.value, prometheus_parse::Value::Gauge(v) if v >= 1.0));
            // Signed with the demo domain's key, answered (histogram), one connection open.
            assert_eq!(
                sample(
                    &text,
                    "herald_dkim_signatures_total",
                    "domain",
                    "example.test"
                ),
                Some(1.0),
                "{text}"
            );
            assert!(
                text.contains("herald_submission_duration_seconds_count 1"),
                "{text}"
            );
            assert_eq!(
                sample(&text, "herald_smtp_connections", "listener", "submissions"),
                Some(1.0),
                "{text}"
            );
            for family in ["herald_messages_accepted", "herald_recipients_deferred"] {
                assert!(text.contains(&format!("# HELP {family} ")), "{text}");
                assert!(text.contains(&format!("# TYPE {family} counter")), "{text}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "counters did not move:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_sessions_are_counted_for_opportunistic_delivery_too() {
    use crate::support::smtp_sink::{SinkOptions, SmtpSink};
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = crate::support::dns::DnsServer::start();
    dns.add_mx_host(
        "plain.example",
        10,
        "mx.plain.example",
        [127, 0, 0, 1].into(),
    );
    // A receiver without STARTTLS, under no MTA-STS policy: delivered in clear, and counted.
    let sink = SmtpSink::start(
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind"),
        SinkOptions::default(),
    );
    let mut cfg = base_config(dir.path());
    let admin = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    crate::support::set(&mut cfg, "dns.servers", dns.config_value());
    crate::support::set(&mut cfg, "delivery.port", i64::from(sink.addr().port()));
    let mut h = serve(dir.path(), &cfg, &[]);
    h.wait_for_event("ready", Duration::from_secs(60));
    super::submit_as_demo(h.smtp_addr("submissions"), "user@plain.example", "clear").await;
    sink.wait_for_messages(1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = get_metrics(admin, dir.path());
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("parses");
        let counted = scrape.samples.iter().any(|s| {
            s.metric == "herald_tls_sessions_total"
                && s.labels.get("policy") == Some("opportunistic")
                && s.labels.get("result") == Some("starttls-not-supported")
                && matches!(s.value, prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Untyped(v) if v >= 1.0)
        });
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no opportunistic TLS session counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
