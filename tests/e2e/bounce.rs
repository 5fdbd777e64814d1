//! End-to-end tests of issue 24 (bounces, complaints, suppression, the per-app guard): herald
//! delivers to test MX sinks that refuse or accept, bounces and ARF reports are mailed to its
//! feedback listener over SMTP, and apps submit over authenticated SMTP.

mod cluster;
mod complaints;
mod delivery_time;
mod dns;
mod guard;
mod return_path;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::delivery::common::World;
use crate::submission::client::{Client, SmtpReply};
use crate::support::herald::{DEMO_HASH, DEMO_PASSWORD, Herald};
use crate::support::{self};

/// The return-path domain of the demo app.
pub const RETURN_PATH: &str = "bounces.example.test";
/// The feedback domain (complaints go to `fbl@` it).
pub const FEEDBACK_DOMAIN: &str = "reports.example.test";

/// A running herald with its feedback listener, TLS for its submission port, and the world it
/// delivers into.
pub struct Rig {
    pub herald: Herald,
    pub tls: Arc<rustls::ClientConfig>,
    pub feedback: SocketAddr,
}

/// The config of a rig in `world`: the demo app with herald's return path, a second app
/// `other` (same password), the feedback listener and admin endpoint, fast refreshes.
pub fn config(world: &World) -> toml::Table {
    let mut cfg = world.config();
    support::set(
        &mut cfg,
        "feedback.listen",
        support::free_addr().to_string(),
    );
    support::set(&mut cfg, "feedback.domain", FEEDBACK_DOMAIN);
    support::set(&mut cfg, "admin.listen", support::free_addr().to_string());
    support::set(&mut cfg, "apps.demo.return_path_domain", RETURN_PATH);
    support::set(&mut cfg, "apps.other.password_hash", DEMO_HASH);
    support::set(&mut cfg, "apps.other.senders", vec!["@example.test"]);
    support::set(&mut cfg, "apps.other.rate_limit", 0);
    support::set(&mut cfg, "bounce.refresh_interval", "200ms");
    cfg
}

/// Starts herald in `world` with `cfg` (from [`config`]).
pub fn start(world: &World, cfg: toml::Table) -> Rig {
    let tls = crate::hardening::certs(world.dir.path());
    let feedback = cfg["feedback"]["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("feedback.listen");
    let herald = Herald::start(world.dir.path(), cfg);
    Rig {
        herald,
        tls,
        feedback,
    }
}

impl Rig {
    /// A submission session logged in as `app` (both apps have the demo password).
    pub async fn login(&self, app: &str) -> Client {
        let mut c = Client::plain(self.herald.smtp_addr("submission")).await;
        assert_eq!(c.reply().await.code, 220);
        c.expect("EHLO app.test", 250).await;
        c.starttls(self.tls.clone()).await;
        c.expect("EHLO app.test", 250).await;
        c.auth_plain(app, DEMO_PASSWORD, 235).await;
        c
    }

    /// A plain SMTP session with the feedback listener, after EHLO.
    pub async fn feedback_session(&self) -> Client {
        let mut c = Client::plain(self.feedback).await;
        assert_eq!(c.reply().await.code, 220);
        c.expect("EHLO mx.remote.test", 250).await;
        c
    }
}

/// A small message from `from` to `to`.
pub fn body(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello."
    )
}

/// Submits one message and returns the reply to the RCPT (and, when it was 250, to the data).
pub async fn try_submit(c: &mut Client, from: &str, to: &str, subject: &str) -> SmtpReply {
    c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    if r.code != 250 {
        c.expect("RSET", 250).await;
        return r;
    }
    c.expect("DATA", 354).await;
    c.send(format!("{}\r\n.\r\n", body(from, to, subject)))
        .await;
    c.reply().await
}

/// Sends `data` (CRLF lines, no final dot) to the feedback listener from `<>` to `rcpt`;
/// returns the reply to RCPT, and when that was 250 the reply to the data.
pub async fn mail_feedback(rig: &Rig, rcpt: &str, data: &str) -> SmtpReply {
    let mut c = rig.feedback_session().await;
    c.expect("MAIL FROM:<>", 250).await;
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
    if r.code != 250 {
        return r;
    }
    c.expect("DATA", 354).await;
    let stuffed = data.replace("\r\n.", "\r\n..");
    c.send(format!("{stuffed}\r\n.\r\n")).await;
    c.reply().await
}

/// `herald app stats --json` of the running rig, as JSON.
pub fn app_stats(rig: &Rig) -> serde_json::Value {
    let out = herald_cli(rig, &["app", "stats", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("app stats JSON: {e}: {out}"))
}

/// Runs `herald ARGS` with the rig's config; asserts success; returns stdout.
pub fn herald_cli(rig: &Rig, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&rig.herald.config_path)
        .args(args)
        .output()
        .expect("run herald");
    assert!(
        out.status.success(),
        "herald {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A GET on the rig's admin endpoint with the token herald generated; the whole response.
pub fn admin_get(rig: &Rig, data: &std::path::Path, path: &str) -> String {
    use std::io::{Read, Write};
    let addr: SocketAddr = rig.herald.config["admin"]["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("admin.listen");
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token file");
    let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    text
}
