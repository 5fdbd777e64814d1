//! One test's fake internet for REQUIRETLS: DNS, a test CA (herald's own certificate, the MX
//! certificates, the MTA-STS policy host), MX sinks sharing the delivery port, and a herald
//! config pointed at all of it.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::submission::client::{Client, HOST, SmtpReply};
use crate::support::ca::{TestCa, Validity};
use crate::support::dns::DnsServer;
use crate::support::herald::{DEMO_HASH, DEMO_PASSWORD, Herald, base_config, point_at};
use crate::support::https::{HttpsServer, Response};
use crate::support::smtp_sink::{SinkOptions, SmtpSink, same_port_listeners};

/// The recipient domain.
pub const DOMAIN: &str = "bank.test";
/// Upper bound of any wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(30);
/// The body line of every test message: it must never come back in a bounce.
pub const SECRET: &str = "Salary of Alice: 5000";

/// What certificate an MX presents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    /// Issued by the test CA for the MX host name.
    Valid,
    /// Issued by the test CA for the MX host name, expired.
    Expired,
}

/// The fake internet of one test.
pub struct Rig {
    /// Config, data and spool.
    pub dir: tempfile::TempDir,
    /// DNS for bank.test and example.test.
    pub dns: DnsServer,
    /// Issues every certificate; herald trusts it through `[tls] extra_roots`.
    pub ca: TestCa,
    /// `mta-sts.bank.test`.
    pub https: HttpsServer,
    https_port: u16,
    /// The delivery port every MX shares.
    pub port: u16,
    listeners: Vec<TcpListener>,
}

impl Rig {
    /// DNS, CA, the policy host (nothing published yet) and `n` addresses for MX hosts.
    pub fn new(n: usize) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&[HOST], Validity::Current);
        std::fs::create_dir_all(dir.path().join("certs")).expect("certs dir");
        std::fs::write(dir.path().join("certs/herald.crt"), cert).expect("write cert");
        std::fs::write(dir.path().join("certs/herald.key"), key).expect("write key");
        let dns = DnsServer::start();
        let listener = crate::support::listener();
        let https_addr = listener.local_addr().expect("addr");
        let https = HttpsServer::start(
            listener,
            ca.server_config(&[&format!("mta-sts.{DOMAIN}")], Validity::Current),
            Vec::new(),
        );
        dns.add_a(&format!("mta-sts.{DOMAIN}"), v4(https_addr.ip()));
        let (port, listeners) = same_port_listeners(n);
        Rig {
            dir,
            dns,
            ca,
            https,
            https_port: https_addr.port(),
            port,
            listeners,
        }
    }

    /// Publishes an MTA-STS policy for bank.test in `mode`, allowing `*.bank.test`.
    pub fn policy(&self, mode: &str) {
        self.dns
            .set_txt(&format!("_mta-sts.{DOMAIN}"), "v=STSv1; id=rt1");
        self.https.set_response(
            "/.well-known/mta-sts.txt",
            Response::mta_sts_policy(mode, &[&format!("*.{DOMAIN}")], 86400),
        );
    }

    /// An MX of bank.test at `preference`, presenting `cert`, advertising REQUIRETLS or not.
    pub fn mx(&mut self, host: &str, preference: u16, cert: Cert, requiretls: bool) -> SmtpSink {
        let validity = match cert {
            Cert::Valid => Validity::Current,
            Cert::Expired => Validity::Expired,
        };
        let sink = self.host(
            host,
            SinkOptions {
                tls: Some(self.ca.server_config(&[host], validity)),
                hostname: Some(host.to_string()),
                requiretls,
                ..SinkOptions::default()
            },
        );
        self.dns.add_mx(DOMAIN, preference, host);
        sink
    }

    /// The MX of example.test, where bounces to the apps arrive (plain SMTP).
    pub fn sender_mx(&mut self) -> SmtpSink {
        let sink = self.host("mx.example.test", SinkOptions::default());
        self.dns.add_mx("example.test", 10, "mx.example.test");
        sink
    }

    /// A sink on the next address, with `host` A → it.
    pub fn host(&mut self, host: &str, opts: SinkOptions) -> SmtpSink {
        let listener = self.listeners.remove(0);
        let ip = v4(listener.local_addr().expect("addr").ip());
        self.dns.add_a(host, ip);
        SmtpSink::start(listener, opts)
    }

    /// herald's config: base, DNS and CA of this rig, the delivery and policy ports, and a
    /// second app `lax` (same password as `demo`) allowed to send `TLS-Required: No`.
    pub fn config(&self) -> toml::Table {
        let mut cfg = base_config(self.dir.path());
        point_at(&mut cfg, self.dir.path(), &self.dns, &self.ca);
        crate::support::set(&mut cfg, "delivery.port", self.port as i64);
        crate::support::set(&mut cfg, "delivery.connect_timeout", "5s");
        crate::support::set(&mut cfg, "mta_sts.port", self.https_port as i64);
        crate::support::set(&mut cfg, "mta_sts.fetch_timeout", "5s");
        crate::support::set(&mut cfg, "apps.lax.password_hash", DEMO_HASH);
        crate::support::set(&mut cfg, "apps.lax.senders", vec!["@example.test"]);
        crate::support::set(&mut cfg, "apps.lax.rate_limit", 0i64);
        crate::support::set(&mut cfg, "apps.lax.allow_tls_optional", true);
        cfg
    }

    /// Starts herald with `cfg`.
    pub fn start(&self, cfg: toml::Table) -> Herald {
        Herald::start(self.dir.path(), cfg)
    }

    /// The path of the config herald was started with (for `herald queue`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("herald.toml")
    }

    /// A client config trusting the test CA (herald's certificate).
    pub fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config_trusting()
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => panic!("loopback v4 expected"),
    }
}

/// Logs in on the submission port as `app` (STARTTLS, then AUTH PLAIN).
pub async fn login(h: &Herald, tls: Arc<rustls::ClientConfig>, app: &str) -> Client {
    let mut c = Client::plain(h.smtp_addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO app.test", 250).await;
    c.starttls(tls).await;
    c.expect("EHLO app.test", 250).await;
    c.auth_plain(app, DEMO_PASSWORD, 235).await;
    c
}

/// A message from app@example.test to `to`, with `extra` header lines (each ending CRLF).
pub fn message(to: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: Payroll <app@example.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.test>\r\n{extra}\r\n{SECRET}\r\n"
    )
}

/// MAIL FROM with `params`, one RCPT, DATA with `body`: the reply to MAIL when it is not 250,
/// else the reply to the end of data.
pub async fn submit(c: &mut Client, params: &str, to: &str, body: &str) -> SmtpReply {
    let mail = c
        .cmd(&format!("MAIL FROM:<app@example.test>{params}"))
        .await;
    if mail.code != 250 {
        return mail;
    }
    c.expect(&format!("RCPT TO:<{to}>"), 250).await;
    c.expect("DATA", 354).await;
    c.send(format!("{body}\r\n.\r\n")).await;
    c.reply().await
}

/// The queue id in a `250 2.0.0 queued as ID` reply.
pub fn queue_id(reply: &SmtpReply) -> String {
    assert_eq!(reply.code, 250, "{reply:?}");
    reply.text.rsplit(' ').next().expect("queue id").to_string()
}
