//! The sections for the services around delivery: MTA-STS, TLS-RPT, the SPF include, the
//! authoritative DNS listener, the admin endpoint and the DMARC/TLS report listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// MTA-STS policy fetching and caching.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsConfig {
    /// Apply MTA-STS policies at all.
    pub enabled: bool,
    /// HTTPS port of `mta-sts.<domain>` (443 on the Internet; tests use others).
    pub port: u16,
    /// Time allowed to fetch a policy.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Policy cache directory; defaults to `<data_dir>/mta-sts`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for MtaStsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 443,
            fetch_timeout: Duration::from_secs(30),
            cache_dir: None,
        }
    }
}

/// TLS-RPT: reports herald sends about its deliveries, and its own report address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Send TLS-RPT reports at all.
    pub enabled: bool,
    /// How often pending reports are sent (RFC 8460: daily).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Organization name in the reports.
    pub organization: String,
    /// Contact address in the reports and the `From:` of report mail.
    pub contact: String,
    /// Where herald's operator wants TLS-RPT reports about herald's own domains
    /// (published as `_smtp._tls` by `herald dns`), e.g. `mailto:tlsrpt@example.com`.
    pub own_rua: Option<String>,
    /// Directory for pending counts; defaults to `<data_dir>/reports`.
    pub dir: Option<PathBuf>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            organization: "herald".into(),
            contact: String::new(),
            own_rua: None,
            dir: None,
        }
    }
}

/// The SPF include herald publishes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpfConfig {
    /// The include name, e.g. `_spf.relay.example.net`.
    pub include: String,
    /// Herald's public egress addresses (IPv4/IPv6, CIDR allowed).
    #[serde(deserialize_with = "super::ip_or_net_list")]
    pub addresses: Vec<IpNet>,
    /// Final mechanism of the include record: `-all` or `~all`.
    pub qualifier: String,
    /// Address for the suggested DMARC record's `rua=`.
    pub dmarc_rua: Option<String>,
}

impl Default for SpfConfig {
    fn default() -> Self {
        Self {
            include: String::new(),
            addresses: Vec::new(),
            qualifier: "-all".into(),
            dmarc_rua: None,
        }
    }
}

/// The optional authoritative DNS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsServerConfig {
    /// UDP and TCP address to answer on; empty disables.
    pub listen: Option<SocketAddr>,
    /// Queries per second allowed from one source address.
    pub rate_limit: u32,
}

impl Default for DnsServerConfig {
    fn default() -> Self {
        Self {
            listen: None,
            rate_limit: 20,
        }
    }
}

/// The local admin HTTP endpoint.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin endpoint (keep it on loopback); empty disables.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token every endpoint but `/health` requires; defaults to
    /// `<data_dir>/admin.token`, generated (mode 0600) on first start when missing.
    pub token_file: Option<PathBuf>,
}

/// The feedback listener: an SMTP server for herald's report domain that accepts only
/// `dmarc@<domain>` and `tlsrpt@<domain>`, stores the reports and never relays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Address to receive report mail on (port 25 on the Internet); empty disables.
    pub listen: Option<SocketAddr>,
    /// The report domain whose MX points at herald, e.g. `reports.relay.example.net`; DMARC
    /// records printed by `herald dns` then say `rua=mailto:dmarc@<domain>`.
    pub domain: String,
    /// Also accept TLS-RPT reports at `tlsrpt@<domain>`.
    pub tlsrpt: bool,
    /// Largest report mail accepted, in bytes (announced in SIZE).
    pub max_message_size: usize,
    /// Largest decompressed report (one XML or JSON document), in bytes: bounds gzip/zip bombs.
    pub max_report_size: usize,
    /// Most files read from one zip attachment.
    pub max_zip_entries: usize,
    /// Most simultaneous connections in total.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Report transactions (MAIL FROM) accepted from one IP address per hour; past that,
    /// `450 4.7.1` and the sender retries later.
    pub max_mails_per_hour_per_ip: u32,
    /// DMARC report rows one sending address may add in 24 hours; reports past it are kept
    /// as unreadable with the reason (0: no bound).
    pub max_rows_per_sender_per_day: u64,
    /// Time allowed for a command.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Time allowed for the whole message after `354` (a deadline, as `[smtp] data_timeout`).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// The report database; defaults to `<data_dir>/reports.sqlite`.
    pub database: Option<PathBuf>,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            listen: None,
            domain: String::new(),
            tlsrpt: true,
            max_message_size: 10 * 1024 * 1024,
            max_report_size: 32 * 1024 * 1024,
            max_zip_entries: 16,
            max_connections: 100,
            max_connections_per_ip: 10,
            max_mails_per_hour_per_ip: 200,
            max_rows_per_sender_per_day: 100_000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            database: None,
        }
    }
}

impl FeedbackConfig {
    /// `dmarc@<domain>`, the DMARC aggregate report address, when a report domain is set.
    pub fn dmarc_address(&self) -> Option<String> {
        let d = self.domain.trim().trim_end_matches('.');
        (!d.is_empty()).then(|| format!("dmarc@{}", d.to_ascii_lowercase()))
    }

    /// `tlsrpt@<domain>`, when a report domain is set and TLS reports are accepted.
    pub fn tlsrpt_address(&self) -> Option<String> {
        let d = self.domain.trim().trim_end_matches('.');
        (self.tlsrpt && !d.is_empty()).then(|| format!("tlsrpt@{}", d.to_ascii_lowercase()))
    }
}

/// `[cluster]`: several herald nodes sharing one PostgreSQL database (the spool and the queue).
/// Absent, herald keeps everything in `data_dir` as a single node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The database, as a libpq URL (`postgresql://herald@db.example.net:5432/herald`) or
    /// key=value string (`host=/run/postgresql user=herald dbname=herald`); without a password.
    pub database_url: String,
    /// File holding the database password (one line; mode 0600). When absent, the
    /// `PGPASSWORD` environment variable is used if set.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS to the database: `disable`, `prefer` (TLS when the server offers it) or
    /// `require`. Certificates are always verified (web PKI roots plus `tls_ca_file`).
    #[serde(default)]
    pub tls: ClusterTls,
    /// Extra CA certificate(s) (PEM) trusted for the database server's certificate.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// This node's name in the cluster (lease owner, `herald queue` output); defaults to the
    /// machine's host name. Must be unique per node.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Most database connections this node opens.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Time allowed to connect to the database (and to wait for a pooled connection).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a node's claim on a queued message lasts without renewal. A dead node's mail
    /// is taken over by the others once its leases expire; renewal runs every quarter of it.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
}

/// TLS to the database server.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClusterTls {
    /// Never TLS (a Unix socket, or a private network the operator trusts).
    Disable,
    /// TLS when the server offers it, verified; plain otherwise.
    #[default]
    Prefer,
    /// TLS always, verified; refuse to connect without it.
    Require,
}

fn default_pool_size() -> usize {
    16
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_lease() -> Duration {
    Duration::from_secs(60)
}

impl ClusterConfig {
    /// This node's id: `node_id`, else the machine's host name.
    pub fn node_id(&self) -> String {
        if let Some(id) = self
            .node_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return id.to_string();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "herald".into())
    }
}

/// DANE for SMTP (RFC 7672): TLSA records in DNSSEC-signed zones authenticate the MX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaneConfig {
    /// Apply DANE at all (MX answer and MX host DNSSEC-secure with usable TLSA records:
    /// STARTTLS required and the certificate chain must match a record).
    pub enabled: bool,
    /// Trust the AD bit of the `[dns] servers` instead of validating DNSSEC in herald. Only
    /// allowed when every server is on loopback (a local validating resolver such as unbound):
    /// the AD bit of a resolver across a network can be forged on the way.
    pub trust_resolver_ad: bool,
    /// A file of DNSKEY records (zone-file format) to trust instead of the built-in root
    /// keys, when herald validates itself. For test and private DNS hierarchies.
    pub trust_anchor: Option<PathBuf>,
    /// Recipient domains that must be reached over DANE (Postfix's `dane-only`): an MX host
    /// without usable TLSA records is not used and counted as `dane-required`.
    pub required_domains: Vec<String>,
}

impl Default for DaneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trust_resolver_ad: false,
            trust_anchor: None,
            required_domains: Vec::new(),
        }
    }
}
