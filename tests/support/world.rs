//! One test's fake internet, built for what the test needs (issue 23: one builder instead of a
//! rig per area): the test directory, the DNS server herald asks, a test CA, loopback addresses
//! sharing one port for the MX hosts (herald delivers to one configured port), and optionally
//! an HTTPS host (MTA-STS policies, TLS reports) and herald's own certificate. An area's module
//! adds only what is its own: its recipient domain's records, a DNSSEC trust anchor, a client.
//!
//! ```text
//! let mut w = World::builder().addresses(2).https(&["mta-sts.bank.test"]).build();
//! let mx = w.mx("bank.test", 10, "mx1.bank.test", SinkOptions::default());
//! let mut cfg = w.config();                       // base config, [dns] servers, delivery port
//! w.trust_ca(&mut cfg);                           // [tls] extra_roots = the test CA
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use super::ca::{TestCa, Validity};
use super::dns::DnsServer;
use super::https::HttpsServer;
use super::smtp_sink::{SinkOptions, SmtpSink};

/// What to build; see [`World::builder`].
#[derive(Default)]
pub struct WorldBuilder {
    addresses: usize,
    https_names: Vec<String>,
    herald_cert: Option<String>,
}

impl WorldBuilder {
    /// `n` loopback addresses sharing one port (the delivery port), for MX hosts and hosts
    /// that are down.
    pub fn addresses(mut self, n: usize) -> WorldBuilder {
        self.addresses = n;
        self
    }

    /// An HTTPS host on its own address, with a certificate of the test CA for `names` (each
    /// published as an A record).
    pub fn https(mut self, names: &[&str]) -> WorldBuilder {
        self.https_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// herald's own certificate for `host`, issued by the test CA, at `certs/herald.crt` and
    /// `certs/herald.key` in the test directory (where the base config looks).
    pub fn herald_cert(mut self, host: &str) -> WorldBuilder {
        self.herald_cert = Some(host.to_string());
        self
    }

    /// Starts what was asked for.
    pub fn build(self) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        if let Some(host) = &self.herald_cert {
            let certs = dir.path().join("certs");
            std::fs::create_dir_all(&certs).expect("certs dir");
            ca.write_issued(
                &[host],
                Validity::Current,
                &certs.join("herald.crt"),
                &certs.join("herald.key"),
            );
        }
        let dns = DnsServer::start();
        let https = (!self.https_names.is_empty()).then(|| {
            let listener = super::listener();
            let addr = listener.local_addr().expect("addr");
            let names: Vec<&str> = self.https_names.iter().map(String::as_str).collect();
            let server = HttpsServer::start(
                listener,
                ca.server_config(&names, Validity::Current),
                Vec::new(),
            );
            for name in &names {
                dns.add_a(name, v4(addr.ip()));
            }
            (server, addr)
        });
        let (port, listeners) = if self.addresses == 0 {
            (0, Vec::new())
        } else {
            super::same_port_listeners(self.addresses)
        };
        World {
            dir,
            dns,
            ca,
            port,
            listeners,
            https_host: https,
        }
    }
}

/// The fake internet of one test (see the module's documentation).
pub struct World {
    /// The test's directory (config, data, spool, keys, certificates).
    pub dir: tempfile::TempDir,
    /// The DNS server herald asks.
    pub dns: DnsServer,
    /// Issues every certificate of the test.
    pub ca: TestCa,
    /// The port every address of [`WorldBuilder::addresses`] listens on (`[delivery] port`).
    pub port: u16,
    listeners: Vec<TcpListener>,
    https_host: Option<(HttpsServer, SocketAddr)>,
}

impl World {
    /// What to build: nothing but the directory, DNS and CA until asked.
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// Takes the next address: its listener and IP (drop the listener for a host that is down).
    pub fn take(&mut self) -> (TcpListener, Ipv4Addr) {
        assert!(
            !self.listeners.is_empty(),
            "every address is taken: ask World::builder().addresses(n) for more"
        );
        let l = self.listeners.remove(0);
        let ip = v4(l.local_addr().expect("addr").ip());
        (l, ip)
    }

    /// Starts a sink on the next address and publishes `host` A → it.
    pub fn sink(&mut self, host: &str, opts: SinkOptions) -> SmtpSink {
        let (l, ip) = self.take();
        self.dns.add_a(host, ip);
        SmtpSink::start(l, opts)
    }

    /// [`World::sink`], published as an MX of `domain` at `preference`.
    pub fn mx(&mut self, domain: &str, preference: u16, host: &str, opts: SinkOptions) -> SmtpSink {
        let sink = self.sink(host, opts);
        self.dns.add_mx(domain, preference, host);
        sink
    }

    /// A host name that resolves to an address where nothing listens (connection refused).
    pub fn down_host(&mut self, host: &str) -> Ipv4Addr {
        let (l, ip) = self.take();
        drop(l);
        self.dns.add_a(host, ip);
        ip
    }

    /// The HTTPS host of [`WorldBuilder::https`].
    pub fn https(&self) -> &HttpsServer {
        &self.https_host().0
    }

    /// The HTTPS host's address (its port is `[mta_sts] port`).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_host().1
    }

    fn https_host(&self) -> &(HttpsServer, SocketAddr) {
        self.https_host
            .as_ref()
            .expect("no HTTPS host: ask World::builder().https(names)")
    }

    /// The test directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// herald's config for this world: the base config, `[dns] servers` = this world's DNS
    /// server and, when the world has addresses, `[delivery] port` = their port.
    pub fn config(&self) -> toml::Table {
        let mut cfg = super::herald::base_config(self.dir.path());
        super::set(&mut cfg, "dns.servers", self.dns.config_value());
        if self.port != 0 {
            super::set(&mut cfg, "delivery.port", self.port as i64);
        }
        cfg
    }

    /// Makes herald trust the test CA (`[tls] extra_roots`, the root written to
    /// `test-ca.pem`).
    pub fn trust_ca(&self, cfg: &mut toml::Table) {
        super::set(
            cfg,
            "tls.extra_roots",
            vec![self.ca_root_file("test-ca.pem").display().to_string()],
        );
    }

    /// Writes the test CA's root to `name` in the test directory; returns its path.
    pub fn ca_root_file(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        self.ca.write_root(&path);
        path
    }
}

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => panic!("loopback v4 expected"),
    }
}
