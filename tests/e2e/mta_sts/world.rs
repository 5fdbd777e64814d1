//! One recipient domain's corner of the fake internet (on the shared test world): DNS (MX, A,
//! `_mta-sts`, `_smtp._tls`), an HTTPS host for its policy and reports (test CA), a receiving MX
//! with a chosen certificate, and herald's configuration pointing at all of it.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::config::Config;
use herald::mta_sts::StsResolver;
use herald::queue::manager::QueueManager;
use herald::report::TlsReporter;
use herald::report::store::DayCounts;
use herald::signing::Signer;
use herald::spool::{Envelope, RecipientStatus, Spool};

use crate::support::ca::Validity;
use crate::support::https::Response;
use crate::support::smtp_sink::{SinkOptions, SmtpSink};

/// The recipient domain in every test (each test has its own DNS server).
pub const DOMAIN: &str = "bank.test";
/// Path of the policy on the policy host.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";
/// Upper bound of any wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(20);

/// What certificate (if any) the receiving MX presents after STARTTLS.
#[derive(Clone, Copy, Debug)]
pub enum MxCert {
    /// Issued by the test CA for the MX host name.
    Valid,
    /// Issued by the test CA for another name.
    WrongName,
    /// Issued by the test CA, expired.
    Expired,
    /// Self-signed (chains to nothing).
    SelfSigned,
    /// No STARTTLS offered at all.
    NoStarttls,
}

/// The fake internet of one test, on the shared [`crate::support::world::World`] (DNS, CA,
/// test directory, and the HTTPS host `mta-sts.bank.test` / `reports.bank.test`); this area
/// adds its MX shapes, its policy and herald's config for it.
pub struct World {
    w: crate::support::world::World,
    /// The IP the HTTPS host listens on.
    pub https_ip: Ipv4Addr,
    /// Its port (`[mta_sts] port`).
    pub https_port: u16,
}

impl std::ops::Deref for World {
    type Target = crate::support::world::World;
    fn deref(&self) -> &Self::Target {
        &self.w
    }
}

impl World {
    /// DNS, CA and HTTPS host, with nothing published yet.
    pub fn new() -> World {
        let w = crate::support::world::World::builder()
            .https(&[&format!("mta-sts.{DOMAIN}"), &format!("reports.{DOMAIN}")])
            .build();
        w.ca_root_file("ca.pem");
        let addr = w.https_addr();
        let IpAddr::V4(https_ip) = addr.ip() else {
            panic!("loopback v4 expected");
        };
        World {
            w,
            https_ip,
            https_port: addr.port(),
        }
    }

    /// Publishes `_mta-sts.bank.test` with `id` and serves `policy`.
    pub fn publish_policy(&self, id: &str, policy: Response) {
        self.dns
            .set_txt(&format!("_mta-sts.{DOMAIN}"), &format!("v=STSv1; id={id}"));
        self.https().set_response(POLICY_PATH, policy);
    }

    /// An `enforce` policy allowing `*.bank.test`.
    pub fn enforce() -> Response {
        Response::mta_sts_policy("enforce", &[&format!("*.{DOMAIN}")], 86400)
    }

    /// Starts a receiving MX named `host` (an MX of bank.test) presenting `cert`; returns it.
    pub fn start_mx(&self, host: &str, cert: MxCert) -> SmtpSink {
        self.start_mx_on(crate::support::listener(), host, cert)
    }

    /// Like [`World::start_mx`] on a given listener (MX hosts of one test share a port).
    pub fn start_mx_on(&self, listener: TcpListener, host: &str, cert: MxCert) -> SmtpSink {
        let tls = match cert {
            MxCert::Valid => Some(self.ca.server_config(&[host], Validity::Current)),
            MxCert::WrongName => Some(self.ca.server_config(&["other.test"], Validity::Current)),
            MxCert::Expired => Some(self.ca.server_config(&[host], Validity::Expired)),
            MxCert::SelfSigned => Some(crate::support::ca::self_signed_server_config(&[host])),
            MxCert::NoStarttls => None,
        };
        let sink = SmtpSink::start(
            listener,
            SinkOptions {
                tls,
                hostname: Some(host.to_string()),
                ..SinkOptions::default()
            },
        );
        let IpAddr::V4(ip) = sink.addr().ip() else {
            panic!("loopback v4 expected");
        };
        self.dns.add_mx(DOMAIN, 10, host);
        self.dns.add_a(host, ip);
        sink
    }

    /// Herald's configuration for this world; `mx_port` is the receiving MX's port.
    pub fn config(&self, mx_port: u16) -> Config {
        let cfg: Config = toml::from_str(&self.config_text(mx_port)).expect("config parses");
        cfg.validate("test").expect("config valid");
        cfg
    }

    /// Writes the same configuration to `herald.toml` for child processes; returns its path.
    pub fn config_file(&self, mx_port: u16) -> PathBuf {
        let path = self.dir.path().join("herald.toml");
        std::fs::write(&path, self.config_text(mx_port)).expect("write config");
        path
    }

    fn config_text(&self, mx_port: u16) -> String {
        let data = self.dir.path().join("data");
        format!(
            r#"
[server]
hostname = "herald.example.test"
data_dir = "{data}"
log_level = "info,herald=debug"

[tls]
extra_roots = ["{root}"]

[dns]
servers = ["{dns}"]

[dkim]
allow_dev_keys = true

[[dkim.keys]]
domain = "example.test"
selector = "dev"
algorithm = "ed25519"
file = "{data}/keys/example.test.dev.ed25519.pem"

[delivery]
port = {mx_port}
retry_schedule = ["1s"]
connect_timeout = "5s"
command_timeout = "5s"
data_timeout = "5s"

[mta_sts]
port = {https_port}
fetch_timeout = "5s"

[report]
organization = "Herald Tests"
contact = "tlsrpt@example.test"
"#,
            data = data.display(),
            root = self.dir.path().join("ca.pem").display(),
            dns = self.dns.addr,
            https_port = self.https_port,
        )
    }
}

/// Herald's delivery side running in this process: spool, queue manager, resolver, reporter.
pub struct Relay {
    /// The queue, kept alive: it delivers while the test runs.
    _queue: QueueManager,
    /// The spool it delivers from.
    pub spool: Spool,
    /// The TLS-RPT reporter delivery records into.
    pub reporter: Arc<TlsReporter>,
}

impl Relay {
    /// Starts delivery with `cfg`, as `herald serve` wires it.
    pub async fn start(cfg: Config) -> Relay {
        let cfg = Arc::new(cfg);
        let (spool, arrivals) = Spool::open_dir(&cfg.spool_dir()).expect("spool");
        let reporter = Arc::new(TlsReporter::open(&cfg).expect("reporter"));
        let sts = Arc::new(
            StsResolver::new(&cfg)
                .expect("resolver")
                .with_reporter(reporter.clone()),
        );
        let signer = Arc::new(Signer::load(&cfg).expect("signer"));
        let queue =
            QueueManager::start(cfg, spool.clone(), arrivals, signer, sts, reporter.clone())
                .await
                .expect("queue starts");
        Relay {
            _queue: queue,
            spool,
            reporter,
        }
    }

    /// Queues a message from app@example.test to user@bank.test.
    pub async fn send(&self, subject: &str) -> String {
        self.send_asking(subject, herald::spool::TlsRequest::Policy)
            .await
    }

    /// [`Relay::send`], the submitter asking `tls_request` of TLS (e.g. REQUIRETLS).
    pub async fn send_asking(
        &self,
        subject: &str,
        tls_request: herald::spool::TlsRequest,
    ) -> String {
        let envelope = Envelope {
            app: Some("demo".into()),
            mail_from: "app@example.test".into(),
            mail_from_params: Vec::new(),
            recipients: vec![format!("user@{DOMAIN}")],
            received_at: herald::clock::unix_now(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: "app.example.test".into(),
            tls: None,
            tls_report: false,
            tls_request,
            return_path_domain: None,
        };
        let data = format!(
            "From: app@example.test\r\nTo: user@{DOMAIN}\r\nSubject: {subject}\r\n\r\nPayroll.\r\n"
        );
        self.spool
            .store(envelope, data.into_bytes())
            .await
            .expect("spooled")
    }

    /// Waits until the reporter's counts for bank.test satisfy `done`; returns them.
    pub async fn wait_for_counts(&self, done: impl Fn(&DayCounts) -> bool) -> DayCounts {
        let deadline = Instant::now() + WAIT;
        loop {
            let counts = self
                .reporter
                .pending()
                .into_iter()
                .find(|c| c.domain == DOMAIN);
            match counts {
                Some(c) if done(&c) => return c,
                _ if Instant::now() > deadline => {
                    panic!("TLS-RPT counts never got there: {counts:#?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until message `id` has had a (failed) attempt, then asserts that it is still
    /// queued with its recipient pending.
    pub async fn assert_still_queued(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            // The spool on disk is the truth: the state is written after each attempt.
            let msg = self
                .spool
                .load(id)
                .await
                .expect("message still in the spool");
            let rcpt = &msg.state.recipients[0];
            if rcpt.attempts >= 1 {
                assert_eq!(rcpt.status, RecipientStatus::Pending, "{msg:?}");
                return;
            }
            assert!(Instant::now() < deadline, "no attempt was made: {msg:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
