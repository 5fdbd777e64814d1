//! Reload without restart: SIGHUP and `herald reload` re-read the file for new sessions,
//! keep the sessions in flight, and refuse a file that does not validate (keeping the old one).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{herald_in, serve, submit_as_demo, text};
use crate::support::herald::{DEMO_PASSWORD, base_config};

/// Logs in as `user` over implicit TLS; true when herald accepted the password.
async fn login(addr: SocketAddr, user: &str, password: &str) -> bool {
    mail_send::SmtpClientBuilder::new(addr.ip().to_string(), addr.port())
        .expect("client builder")
        .implicit_tls(true)
        .allow_invalid_certs()
        .helo_host("app.test")
        .credentials((user.to_string(), password.to_string()))
        .connect()
        .await
        .is_ok()
}

/// A plain session on the STARTTLS port, left open across the reload.
fn open_session(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("220"), "{line}");
    (reader, stream)
}

fn command(session: &mut (BufReader<TcpStream>, TcpStream), cmd: &str) -> String {
    session
        .1
        .write_all(format!("{cmd}\r\n").as_bytes())
        .expect("send");
    loop {
        let mut line = String::new();
        session.0.read_line(&mut line).expect("reply");
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_keeps_sessions_applies_a_new_password_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = base_config(dir.path());
    let admin = crate::support::free_addr();
    crate::support::set(&mut cfg, "admin.listen", admin.to_string());
    let mut h = serve(dir.path(), &cfg, &[]);
    h.wait_for_event("ready", Duration::from_secs(60));
    let config = dir.path().join("herald.toml");
    let submissions: SocketAddr = cfg["smtp"]["submissions"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let submission: SocketAddr = cfg["smtp"]["submission"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    assert!(login(submissions, "demo", DEMO_PASSWORD).await);
    let mut session = open_session(submission);
    assert!(command(&mut session, "EHLO before.test").starts_with("250"));

    // A new password for demo, by SIGHUP (what systemctl reload sends).
    let new_hash = herald::commands::app::hash_password("a-new-password").expect("hash");
    crate::support::set(&mut cfg, "apps.demo.password_hash", new_hash);
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");
    h.send_signal(1);
    let line = h.wait_for_event("reloaded", Duration::from_secs(60));
    assert!(line.contains("apps (changed demo)"), "{line}");
    assert!(login(submissions, "demo", "a-new-password").await);
    assert!(!login(submissions, "demo", DEMO_PASSWORD).await);
    // The session opened before the reload is still there.
    assert!(command(&mut session, "NOOP").starts_with("250"));

    // A broken file by SIGHUP: refused, logged, herald goes on with what it had.
    std::fs::write(&config, "[smtp]\nmax_recipients = 0\n").expect("write");
    h.send_signal(1);
    let line = h.wait_for_event("reload_refused", Duration::from_secs(60));
    assert!(line.contains("smtp.max_recipients"), "{line}");
    assert!(login(submissions, "demo", "a-new-password").await);
    assert!(command(&mut session, "NOOP").starts_with("250"));

    // The same through `herald reload`: exit 1 with the reason; then a good file applies.
    let out = herald_in(dir.path(), &config, &[], &["reload"]);
    // The broken file cannot even be read by the CLI: bad configuration, exit 2.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    crate::support::set(
        &mut cfg,
        "smtp.submission",
        crate::support::free_addr().to_string(),
    );
    crate::support::set(&mut cfg, "apps.demo.rate_limit", 5);
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("write");
    let out = herald_in(dir.path(), &config, &[], &["reload"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    assert!(said.contains("apps (changed demo)"), "{said}");
    assert!(
        said.contains("kept until a restart: smtp.submission"),
        "{said}"
    );
    // Listen addresses are not re-bound: the old submission port still answers.
    assert!(command(&mut session, "NOOP").starts_with("250"));
    let _again = open_session(submission);
}

/// The TXT strings the DNS listener at `listen` serves for `name` (one UDP query).
fn txt_at(listen: SocketAddr, name: &str) -> Vec<String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::new(0x5151, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::TXT,
    ));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    socket
        .send_to(&m.to_vec().expect("encode"), listen)
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("an answer");
    let answer = Message::from_vec(&buf[..n]).expect("parses");
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_applies_delivery_settings_and_the_dns_listener_records() {
    use crate::support::smtp_sink::{SinkOptions, SmtpSink};
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = crate::support::dns::DnsServer::start();
    dns.add_mx_host(
        "receiver.example",
        10,
        "mx.receiver.example",
        [127, 0, 0, 1].into(),
    );
    // Two receiving MTAs on the same address, different ports: `[delivery] port` picks one.
    let on_loopback = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind a sink");
    let first = SmtpSink::start(on_loopback(), SinkOptions::default());
    let second = SmtpSink::start(on_loopback(), SinkOptions::default());
    let listen = crate::support::free_addr();
    let include = "_spf.herald.example.test";

    let mut cfg = base_config(dir.path());
    crate::support::set(&mut cfg, "dns.servers", dns.config_value());
    crate::support::set(&mut cfg, "delivery.port", i64::from(first.addr().port()));
    crate::support::set(&mut cfg, "spf.include", include);
    crate::support::set(&mut cfg, "spf.addresses", vec!["203.0.113.10"]);
    crate::support::set(&mut cfg, "dns_server.listen", listen.to_string());
    let mut h = serve(dir.path(), &cfg, &[]);
    h.wait_for_event("ready", Duration::from_secs(60));
    let submissions = h.smtp_addr("submissions");
    let before = txt_at(listen, &format!("{include}."));
    assert!(
        before.iter().any(|t| t.contains("ip4:203.0.113.10")),
        "{before:?}"
    );

    submit_as_demo(submissions, "user@receiver.example", "before the reload").await;
    let got = first.wait_for_messages(1, Duration::from_secs(60));
    assert!(got[0].text().contains("before the reload"));

    crate::support::set(&mut cfg, "delivery.port", i64::from(second.addr().port()));
    crate::support::set(&mut cfg, "spf.addresses", vec!["203.0.113.20"]);
    std::fs::write(
        dir.path().join("herald.toml"),
        toml::to_string(&cfg).expect("toml"),
    )
    .expect("write");
    h.send_signal(1);
    let line = h.wait_for_event("reloaded", Duration::from_secs(60));
    assert!(line.contains("delivery"), "{line}");
    assert!(!line.contains("kept until a restart"), "{line}");

    // The DNS listener serves the new include at once, on the same socket.
    let after = txt_at(listen, &format!("{include}."));
    assert!(
        after.iter().any(|t| t.contains("ip4:203.0.113.20"))
            && !after.iter().any(|t| t.contains("203.0.113.10")),
        "{after:?}"
    );
    // Delivery uses the new port for the next message; the first MTA gets nothing more.
    submit_as_demo(submissions, "user@receiver.example", "after the reload").await;
    let got = second.wait_for_messages(1, Duration::from_secs(60));
    assert!(got[0].text().contains("after the reload"));
    assert_eq!(first.messages().len(), 1);
}
