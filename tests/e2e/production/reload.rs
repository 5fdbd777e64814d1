//! Reload without restart: SIGHUP and `herald reload` re-read the file for new sessions,
//! keep the sessions in flight, and refuse a file that does not validate (keeping the old one).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{herald_in, serve, text};
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
    h.wait_for_log("herald ready", Duration::from_secs(60));
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
    let line = h.wait_for_log("configuration reloaded", Duration::from_secs(60));
    assert!(line.contains("apps (changed demo)"), "{line}");
    assert!(login(submissions, "demo", "a-new-password").await);
    assert!(!login(submissions, "demo", DEMO_PASSWORD).await);
    // The session opened before the reload is still there.
    assert!(command(&mut session, "NOOP").starts_with("250"));

    // A broken file by SIGHUP: refused, logged, herald goes on with what it had.
    std::fs::write(&config, "[smtp]\nmax_recipients = 0\n").expect("write");
    h.send_signal(1);
    let line = h.wait_for_log("reload refused", Duration::from_secs(60));
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
