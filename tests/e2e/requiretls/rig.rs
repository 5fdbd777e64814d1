//! One test's fake internet for REQUIRETLS, on the shared [`World`]: DNS, a test CA (herald's
//! own certificate, the MX certificates, the MTA-STS policy host), MX sinks sharing the
//! delivery port, and a herald config pointed at all of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::submission::client::{Client, HOST, SmtpReply};
use crate::support::ca::Validity;
use crate::support::herald::{DEMO_HASH, DEMO_PASSWORD, Herald};
use crate::support::https::Response;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};
use crate::support::world::World;

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

/// The fake internet of one test ([`World`]): DNS, the test CA (herald's certificate too),
/// `mta-sts.bank.test`, and addresses for MX hosts; this area adds its MX shapes and config.
pub struct Rig(World);

impl std::ops::Deref for Rig {
    type Target = World;
    fn deref(&self) -> &World {
        &self.0
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut World {
        &mut self.0
    }
}

impl Rig {
    /// DNS, CA, the policy host (nothing published yet) and `n` addresses for MX hosts.
    pub fn new(n: usize) -> Rig {
        Rig(World::builder()
            .addresses(n)
            .https(&[&format!("mta-sts.{DOMAIN}")])
            .herald_cert(HOST)
            .build())
    }

    /// Publishes an MTA-STS policy for bank.test in `mode`, allowing `*.bank.test`.
    pub fn policy(&self, mode: &str) {
        self.dns
            .set_txt(&format!("_mta-sts.{DOMAIN}"), "v=STSv1; id=rt1");
        self.https().set_response(
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
        let tls = Some(self.ca.server_config(&[host], validity));
        self.0.mx(
            DOMAIN,
            preference,
            host,
            SinkOptions {
                tls,
                hostname: Some(host.to_string()),
                requiretls,
                ..SinkOptions::default()
            },
        )
    }

    /// The MX of example.test, where bounces to the apps arrive (plain SMTP).
    pub fn sender_mx(&mut self) -> SmtpSink {
        self.0.mx(
            "example.test",
            10,
            "mx.example.test",
            SinkOptions::default(),
        )
    }

    /// A sink on the next address, with `host` A → it.
    pub fn host(&mut self, host: &str, opts: SinkOptions) -> SmtpSink {
        self.0.sink(host, opts)
    }

    /// herald's config: base, DNS and CA of this rig, the delivery and policy ports, and a
    /// second app `lax` (same password as `demo`) allowed to send `TLS-Required: No`.
    pub fn config(&self) -> toml::Table {
        let mut cfg = self.0.config();
        self.trust_ca(&mut cfg);
        crate::support::set(&mut cfg, "delivery.connect_timeout", "5s");
        crate::support::set(&mut cfg, "mta_sts.port", self.https_addr().port() as i64);
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
