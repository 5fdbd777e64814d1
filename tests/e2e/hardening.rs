//! End-to-end tests: hardening (issue 11). Each test attacks herald the way the issue's probe
//! did — concurrent AUTH guesses, descriptor floods, byte-dripping clients, cross-origin admin
//! requests, rewritten input, ambiguous `From:` headers — and asserts the attack now fails.
//! Property tests throw generated input at the SMTP reader, the DNS listener and the MTA-STS
//! policy parser with a bounded number of cases.

mod admin;
mod auth;
mod fds;
mod fuzz;
mod input;
mod memory;
mod timeouts;

use std::path::Path;
use std::sync::Arc;

use crate::submission::client::{Client, HOST};
use crate::support::ca::{TestCa, Validity};
use crate::support::herald::{Herald, base_config};

/// A message the demo app may send.
pub const BODY: &str =
    "From: App <app@example.test>\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nHello.";

/// A herald with a certificate from a test CA, and a client TLS config trusting that CA.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub herald: Herald,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Writes a test-CA certificate for herald into `dir` and returns the client TLS config.
pub fn certs(dir: &Path) -> Arc<rustls::ClientConfig> {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&[HOST], Validity::Current);
    std::fs::create_dir_all(dir.join("certs")).expect("certs dir");
    std::fs::write(dir.join("certs/herald.crt"), cert).expect("write cert");
    std::fs::write(dir.join("certs/herald.key"), key).expect("write key");
    ca.client_config_trusting()
}

/// Starts herald with the base config changed by `tweak`.
pub fn rig(tweak: impl FnOnce(&mut toml::Table)) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = certs(dir.path());
    let mut cfg = base_config(dir.path());
    tweak(&mut cfg);
    let herald = Herald::start(dir.path(), cfg);
    Rig { dir, herald, tls }
}

impl Rig {
    pub fn addr(&self, l: &str) -> std::net::SocketAddr {
        self.herald.smtp_addr(l)
    }

    /// A logged-in demo session on the submission port.
    pub async fn login(&self) -> Client {
        Client::submission_login(self.addr("submission"), self.tls.clone()).await
    }

    /// Greeting, EHLO, STARTTLS, EHLO from `ip`, ready for AUTH.
    pub async fn tls_session_from(&self, ip: std::net::Ipv4Addr) -> Client {
        let mut c = Client::plain_from(ip, self.addr("submission")).await;
        assert_eq!(c.reply().await.code, 220);
        c.expect("EHLO a.test", 250).await;
        c.starttls(self.tls.clone()).await;
        c.expect("EHLO a.test", 250).await;
        c
    }

    /// How many messages are in the spool.
    pub fn spooled(&self) -> Vec<String> {
        spooled(self.dir.path())
    }
}

/// Every spooled message as stored: its envelope line, a newline, its bytes.
pub fn spooled(data: &Path) -> Vec<String> {
    crate::support::spool::spooled(data)
        .into_iter()
        .map(|m| format!("{}\n{}", m.envelope, String::from_utf8_lossy(&m.message)))
        .collect()
}

/// Waits (at most 10 s) until herald has logged a line containing `needle`, at any time.
pub fn wait_logged(h: &Herald, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if h.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(needle))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "herald did not log {needle:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
