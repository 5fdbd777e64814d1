//! The DANE corner of the fake internet: the MTA-STS world (bank.test, its MX, HTTPS host and
//! CA) with a signed namespace and TLSA records, and herald's configuration trusting the test
//! root key.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::digest;
use herald::config::Config;
use rustls::pki_types::CertificateDer;

use crate::mta_sts::world::{DOMAIN, World};
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

pub use crate::mta_sts::world::{Relay, WAIT};

/// The MX host of bank.test in these tests.
pub const MX: &str = "mx1.bank.test";

/// The apps' domain (the envelope sender's), where bounces go.
pub const SENDER_DOMAIN: &str = "example.test";

/// The MX host of [`SENDER_DOMAIN`].
const SENDER_MX: &str = "mx.example.test";

/// The TLSA name of [`MX`] on `port`.
pub fn tlsa_name(port: u16) -> String {
    format!("_{port}._tcp.{MX}")
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo (TLSA selector 1, matching 1).
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Vec<u8> {
    let parsed = webpki::EndEntityCert::try_from(cert).expect("parse certificate");
    digest::digest(&digest::SHA256, parsed.subject_public_key_info().as_ref())
        .as_ref()
        .to_vec()
}

/// SHA-256 of the whole certificate (TLSA selector 0, matching 1).
pub fn cert_sha256(cert: &CertificateDer<'_>) -> Vec<u8> {
    digest::digest(&digest::SHA256, cert.as_ref())
        .as_ref()
        .to_vec()
}

/// A world whose DNS is signed, with herald's trust anchor written next to its config.
pub struct DaneWorld {
    /// The MTA-STS world underneath (DNS, CA, HTTPS, test directory).
    pub w: World,
    /// The trust-anchor file (`[dane] trust_anchor`).
    pub anchor: PathBuf,
}

impl DaneWorld {
    /// A signed world (DNSSEC on the test DNS server, herald validating with the test key).
    pub fn signed() -> DaneWorld {
        let w = World::new();
        let anchor_text = w.dns.enable_dnssec();
        let anchor = w.dir.path().join("trust-anchor.txt");
        std::fs::write(&anchor, anchor_text).expect("write trust anchor");
        DaneWorld { w, anchor }
    }

    /// Starts the MX `mx1.bank.test` presenting `tls` (MX and A records published).
    pub fn start_mx(&self, tls: Arc<rustls::ServerConfig>) -> SmtpSink {
        self.start_mx_offering(tls, false)
    }

    /// [`DaneWorld::start_mx`], advertising REQUIRETLS (RFC 8689) when `requiretls`.
    pub fn start_mx_offering(&self, tls: Arc<rustls::ServerConfig>, requiretls: bool) -> SmtpSink {
        let sink = SmtpSink::start(
            crate::support::listener(),
            SinkOptions {
                tls: Some(tls),
                hostname: Some(MX.to_string()),
                requiretls,
                ..SinkOptions::default()
            },
        );
        self.w.dns.add_mx(DOMAIN, 10, MX);
        self.w.dns.add_ip(MX, sink.addr().ip());
        sink
    }

    /// Starts the MX of example.test, the apps' domain where bounces arrive (plain SMTP), on
    /// `port`: herald delivers to one configured port whatever the MX.
    pub fn start_sender_mx(&self, port: u16) -> SmtpSink {
        let listener = (0..1000)
            .find_map(|_| TcpListener::bind((crate::support::free_ip(), port)).ok())
            .unwrap_or_else(|| panic!("no loopback IP with port {port} free"));
        let sink = SmtpSink::start(listener, SinkOptions::default());
        self.w.dns.add_mx(SENDER_DOMAIN, 10, SENDER_MX);
        self.w.dns.add_ip(SENDER_MX, sink.addr().ip());
        sink
    }

    /// Herald's configuration, validating DNSSEC with the test trust anchor.
    pub fn config(&self, mx_port: u16) -> Config {
        let mut cfg = self.w.config(mx_port);
        cfg.dane.trust_anchor = Some(self.anchor.clone());
        cfg.validate("test").expect("config valid");
        cfg
    }

    /// The same configuration as a file, for child processes.
    pub fn config_file(&self, mx_port: u16) -> PathBuf {
        let path = self.w.config_file(mx_port);
        let mut text = std::fs::read_to_string(&path).expect("read config");
        text.push_str(&format!(
            "\n[dane]\ntrust_anchor = \"{}\"\n",
            self.anchor.display()
        ));
        std::fs::write(&path, text).expect("write config");
        path
    }
}
