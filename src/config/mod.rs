//! Typed configuration: one TOML file read with the `config` crate, any key overridable by
//! `HERALD__SECTION__KEY`. Validation names the file, the key and the problem so that an
//! operator can fix a bad file without reading code; callers exit 2 on [`ConfigError`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

mod bounce;
mod de;
use de::{duration_list, ip_or_net_list, name_server_list};
mod history;
mod services;
mod shaping;
pub use bounce::*;
pub use history::*;
pub use services::*;
pub use shaping::*;
mod web;
pub use web::*;
mod bimi;
pub use bimi::*;

/// Default location of the configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/herald.toml";

/// Where the Debian package installs the configuration; used when [`DEFAULT_CONFIG_PATH`] does
/// not exist and no file is named.
pub const PACKAGED_CONFIG_PATH: &str = "/etc/herald/herald.toml";

/// The argon2id hash of the README's demo password (`herald-demo-password`), shipped in the
/// development config. A production config (neither `allow_dev_certs` nor `allow_dev_keys`)
/// that contains it is refused: anyone who read the README could log in.
pub const DEMO_PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    /// The file that was read (or the environment, for overrides).
    pub file: String,
    /// The dotted key at fault, e.g. `apps.demo.senders`.
    pub key: String,
    /// What is wrong, in words an operator can act on.
    pub problem: String,
}

/// The whole configuration of one herald instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity, data directory, shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// Inbound SMTP listeners and their limits.
    #[serde(default)]
    pub smtp: SmtpConfig,
    /// Certificates for the listeners and trust roots for outbound TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Where accepted mail is kept until delivered.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// The applications allowed to submit, keyed by their user name.
    #[serde(default)]
    pub apps: BTreeMap<String, AppConfig>,
    /// DKIM signing keys.
    #[serde(default)]
    pub dkim: DkimConfig,
    /// Which name servers herald asks.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Outbound delivery: ports, retries, smart host, TLS requirements.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// MTA-STS policy fetching and caching.
    #[serde(default)]
    pub mta_sts: MtaStsConfig,
    /// DANE for SMTP: DNSSEC and TLSA records.
    #[serde(default)]
    pub dane: DaneConfig,
    /// TLS-RPT reports herald sends, and the address it receives them at.
    #[serde(default)]
    pub report: ReportConfig,
    /// The SPF include herald publishes and the DNS advice it prints.
    #[serde(default)]
    pub spf: SpfConfig,
    /// The optional authoritative DNS listener for the include and selectors.
    #[serde(default)]
    pub dns_server: DnsServerConfig,
    /// The local admin HTTP endpoint (health, metrics, queue API, /dns).
    #[serde(default)]
    pub admin: AdminConfig,
    /// The feedback listener receiving DMARC aggregate and TLS-RPT reports.
    #[serde(default)]
    pub feedback: FeedbackConfig,
    /// Several nodes on one PostgreSQL; absent, herald is a single node on its own files.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// The public HTTPS listener: ACME certificates, hosted MTA-STS, one-click unsubscribe.
    #[serde(default)]
    pub web: WebConfig,
    /// The message history (events per recipient, searchable).
    #[serde(default)]
    pub history: HistoryConfig,
    /// Signed webhook POSTs of events to the apps.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Bounces, complaints, the suppression list and the per-app guard (issue 24).
    #[serde(default)]
    pub bounce: BounceConfig,
    /// BIMI records per domain (`herald dns` prints them, `herald check` checks them).
    #[serde(default)]
    pub bimi: BimiConfig,
    /// Traffic shaping per destination (issue 29).
    #[serde(default)]
    pub shaping: ShapingConfig,
}

/// Identity and process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Herald's public host name: EHLO, `Received:`, `Message-ID:`, DSN Reporting-MTA.
    pub hostname: String,
    /// Directory for everything herald writes (spool, keys, caches) unless set separately.
    pub data_dir: PathBuf,
    /// How long sessions in flight may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// `tracing` filter, e.g. `info` or `herald=debug`.
    pub log_level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON object per line, the
    /// same fields), for log collectors.
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("data"),
            grace_period: Duration::from_secs(30),
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// Inbound SMTP listeners and their limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Submission with STARTTLS (AUTH only after TLS); empty disables.
    pub submission: Option<SocketAddr>,
    /// Submission over implicit TLS; empty disables.
    pub submissions: Option<SocketAddr>,
    /// Listener without AUTH for allow-listed networks (printers, legacy apps); empty disables.
    pub plain: Option<SocketAddr>,
    /// Networks allowed on the plain listener.
    pub plain_networks: Vec<IpNet>,
    /// Senders allowed from the plain listener (exact addresses and `@domain`).
    pub plain_senders: Vec<String>,
    /// Largest message accepted, in bytes (announced in SIZE).
    pub max_message_size: usize,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command or text line, in bytes including CRLF.
    pub max_line_length: usize,
    /// Most simultaneous connections in total.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Protocol errors tolerated in one session before `421` and close.
    pub max_errors: usize,
    /// Time allowed for a whole command line, counted from the previous reply (RFC 5321
    /// §4.5.3.2: 5 minutes). A deadline, not an idle timer: dripping bytes does not extend it.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Time allowed for the whole message after `354` (DATA), or for each BDAT chunk after
    /// its command. A deadline for the transfer, not an idle timer between reads.
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Time allowed for a TLS handshake (port 465 at connect, or after STARTTLS).
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Failed AUTH attempts from one IP before it is refused for `auth_block`.
    pub auth_max_failures: u32,
    /// Failed AUTH attempts for one user name (from any address) before that name is refused
    /// for `auth_block`, except from addresses that logged in as it within the window.
    pub auth_max_user_failures: u32,
    /// Window over which failed AUTH attempts are counted.
    #[serde(with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// How long an IP is refused after too many failed AUTH attempts.
    #[serde(with = "humantime_serde")]
    pub auth_block: Duration,
    /// Delay added per failed AUTH attempt (grows with each failure).
    #[serde(with = "humantime_serde")]
    pub auth_failure_delay: Duration,
    /// How long a successful AUTH is remembered so the same credentials skip argon2 (0 = off).
    #[serde(with = "humantime_serde")]
    pub auth_cache_ttl: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            submission: None,
            submissions: None,
            plain: None,
            plain_networks: Vec::new(),
            plain_senders: Vec::new(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 4096,
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            tls_handshake_timeout: Duration::from_secs(10),
            auth_max_failures: 5,
            auth_max_user_failures: 20,
            auth_failure_window: Duration::from_secs(600),
            auth_block: Duration::from_secs(900),
            auth_failure_delay: Duration::from_millis(500),
            auth_cache_ttl: Duration::from_secs(15 * 60),
        }
    }
}

/// Certificates for the listeners, trust roots for outbound TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain for the submission listeners.
    pub cert: PathBuf,
    /// PEM private key for the submission listeners.
    pub key: PathBuf,
    /// Generate a self-signed pair at start-up when `cert`/`key` are missing.
    pub allow_dev_certs: bool,
    /// Extra CA certificates (PEM files) trusted for outbound SMTP and MTA-STS HTTPS.
    pub extra_roots: Vec<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: PathBuf::from("certs/herald.crt"),
            key: PathBuf::from("certs/herald.key"),
            allow_dev_certs: false,
            extra_roots: Vec::new(),
        }
    }
}

/// The spool: where accepted mail waits until delivered.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Spool directory; defaults to `<data_dir>/spool`.
    pub dir: Option<PathBuf>,
}

/// One application allowed to submit mail; its user name is the key in `[apps]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// argon2id PHC string (`herald app hash-password`).
    pub password_hash: String,
    /// Sender addresses this app may use: exact addresses and `@domain` entries.
    pub senders: Vec<String>,
    /// Largest message this app may send, in bytes; defaults to `smtp.max_message_size`.
    #[serde(default)]
    pub max_message_size: Option<usize>,
    /// Messages per minute; 0 means unlimited.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Whether this app may send `TLS-Required: No` (RFC 8689 §5) to have a message delivered
    /// despite the recipient's MTA-STS or DANE policy. Off by default: it lowers protection,
    /// and a message carrying the header from an app without it is refused.
    #[serde(default)]
    pub allow_tls_optional: bool,
    /// `"one-click"`: herald adds RFC 8058 unsubscribe headers to this app's mail.
    #[serde(default)]
    pub unsubscribe: UnsubscribeMode,
    /// Whether this app sends bulk mail (newsletters, marketing): the providers' bulk-sender
    /// rules then apply to it, and `herald check` requires one-click unsubscribe.
    #[serde(default)]
    pub bulk: bool,
    /// Where herald POSTs this app's message events (`https://…`), signed with
    /// `webhook_secret` the Standard Webhooks way.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The webhook signing secret, `whsec_<base64>` (`herald webhook secret` makes one).
    #[serde(default)]
    pub webhook_secret: Option<WebhookSecret>,
    /// herald's own return path for this app: a subdomain of its From: domain whose MX points
    /// at herald's feedback listener. Set, MAIL FROM becomes a signed VERP address there.
    #[serde(default)]
    pub return_path_domain: Option<String>,
    /// Whether a bounce received at the return path is still passed on to the app's own
    /// MAIL FROM address (as when herald had none).
    #[serde(default = "default_true")]
    pub forward_bounces: bool,
    /// Whether suppressed recipients are refused at RCPT (off for apps that must always try).
    #[serde(default = "default_true")]
    pub suppression: bool,
    /// Whether this app's bounces and complaints suppress for its whole sending domain or
    /// for the app alone.
    #[serde(default)]
    pub suppression_scope: SuppressionScope,
}

fn default_rate_limit() -> u32 {
    60
}

/// DKIM signing keys.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// Directory where `herald dkim generate` writes private keys.
    pub keys_dir: Option<PathBuf>,
    /// Generate keys listed here whose files are missing (development only).
    pub allow_dev_keys: bool,
    /// Every configured key, active or not.
    pub keys: Vec<DkimKeyConfig>,
}

/// A DKIM key: domain, selector, algorithm, file, and whether it signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The `d=` domain this key signs for.
    pub domain: String,
    /// The `s=` selector; the public key lives at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// `rsa` or `ed25519`.
    pub algorithm: DkimAlgorithm,
    /// PEM private key file (PKCS#8 or PKCS#1 for RSA).
    pub file: PathBuf,
    /// Whether this key signs; inactive keys are still published while retiring.
    #[serde(default = "default_true")]
    pub active: bool,
}

fn default_true() -> bool {
    true
}

/// DKIM signature algorithm.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// rsa-sha256, 2048 bits or more.
    Rsa,
    /// ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl DkimAlgorithm {
    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// Name servers herald asks (MX, TXT, MTA-STS, SPF checks).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// `ip` or `ip:port` of recursive resolvers (port 53 when left out); empty means the
    /// system resolver.
    #[serde(deserialize_with = "name_server_list")]
    pub servers: Vec<SocketAddr>,
}

/// Outbound delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// TCP port of recipient MX hosts (25 on the Internet; tests use others).
    pub port: u16,
    /// Smart host `host:port`; when set, everything goes through it instead of MX routing.
    pub relay_host: Option<String>,
    /// User name for AUTH at the smart host.
    pub relay_username: Option<String>,
    /// Password for AUTH at the smart host.
    pub relay_password: Option<String>,
    /// Require verified TLS for every destination.
    pub require_tls: bool,
    /// Require verified TLS for these recipient domains.
    pub require_tls_domains: Vec<String>,
    /// Waits between attempts; the last one repeats until `max_age`.
    #[serde(deserialize_with = "duration_list")]
    pub retry_schedule: Vec<Duration>,
    /// After this long, a message still undelivered is bounced.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Send a delay notice once a message has waited this long (off when absent).
    #[serde(with = "humantime_serde")]
    pub delay_notice: Option<Duration>,
    /// Most simultaneous outbound connections in total.
    pub max_connections: usize,
    /// Most simultaneous outbound connections to one host.
    pub max_connections_per_host: usize,
    /// Time allowed to connect and receive the greeting (RFC 5321: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for each command reply (RFC 5321: 5 minutes).
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Time allowed for the reply to the end of data (RFC 5321: 10 minutes).
    #[serde(with = "humantime_serde")]
    pub data_timeout: Duration,
    /// Domain whose DKIM key signs bounces; defaults to the host name's domain.
    pub dsn_domain: Option<String>,
    /// Development and staging: write each message to `<queue id>.<domain>.eml` here (signed,
    /// exactly as the MX would receive it) instead of delivering it. Nothing leaves the machine.
    pub capture_dir: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(n * 60);
        Self {
            port: 25,
            relay_host: None,
            relay_username: None,
            relay_password: None,
            require_tls: false,
            require_tls_domains: Vec::new(),
            retry_schedule: vec![m(1), m(5), m(15), m(30), m(60), m(120), m(240)],
            max_age: Duration::from_secs(5 * 24 * 3600),
            delay_notice: None,
            max_connections: 100,
            max_connections_per_host: 5,
            connect_timeout: m(5),
            command_timeout: m(5),
            data_timeout: m(10),
            dsn_domain: None,
            capture_dir: None,
        }
    }
}

impl Config {
    /// Reads `path` (TOML) and `HERALD__SECTION__KEY` overrides, then validates. Relative
    /// paths resolve against the file's directory. An error caused by an override names the
    /// variable instead of the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        if !path.exists() {
            return Err(ConfigError {
                file,
                key: "(file)".into(),
                problem: "file not found; pass --config PATH (or set HERALD_CONFIG), or run from \
                          the directory holding config/herald.toml; without either, herald reads \
                          /etc/herald/herald.toml (the package's)"
                    .into(),
            });
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(ConfigError {
                file,
                key: "(file)".into(),
                problem: paths::unreadable(path, &e),
            });
        }
        let overrides = env::overrides();
        let lists = env::list_keys(&overrides);
        let mut environment = config::Environment::with_prefix("HERALD")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(env::source_map(&overrides, &lists)));
        for key in &lists {
            environment = environment.with_list_parse_key(key);
        }
        let blame = |e: ConfigError| env::blame(&overrides, e);
        if let Some(e) = env::app_without_file_block(&overrides, path, &file) {
            return Err(e);
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(|e| blame(from_config_error(&file, e)))?;
        let mut cfg: Config = raw
            .try_deserialize()
            .map_err(|e| blame(from_config_error(&file, e)))?;
        cfg.resolve_paths(&paths::base_dir(path));
        cfg.validate(&file).map_err(blame)?;
        Ok(cfg)
    }

    /// The domain herald's own mail (bounces, delay notices) comes from: `[delivery]
    /// dsn_domain`, else the organizational domain of `[server] hostname`. That mail is
    /// DKIM-signed only if this domain (or its organizational domain) has an active key.
    pub fn dsn_domain(&self) -> String {
        if let Some(d) = &self.delivery.dsn_domain {
            return d.trim_end_matches('.').to_ascii_lowercase();
        }
        let host = self
            .server
            .hostname
            .trim_end_matches('.')
            .to_ascii_lowercase();
        psl::domain_str(&host).map(str::to_string).unwrap_or(host)
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("spool"))
    }

    /// The DKIM keys directory.
    pub fn keys_dir(&self) -> PathBuf {
        self.dkim
            .keys_dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("keys"))
    }

    /// The MTA-STS policy cache directory.
    pub fn mta_sts_cache_dir(&self) -> PathBuf {
        self.mta_sts
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("mta-sts"))
    }

    /// The admin endpoint's token file.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin
            .token_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("admin.token"))
    }

    /// The `[web]` directory: ACME account, certificate, unsubscribe secret and records.
    pub fn web_dir(&self) -> PathBuf {
        self.web
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("web"))
    }

    /// The TLS-RPT pending-report directory.
    pub fn report_dir(&self) -> PathBuf {
        self.report
            .dir
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("reports"))
    }
}

pub mod env;
mod errors;
pub mod paths;
mod validate;
use errors::from_config_error;

/// Why `s` cannot be a `senders` entry (a wildcard, or neither an address nor `@domain`), for
/// commands that print config blocks.
pub fn sender_pattern_problem(s: &str) -> Option<String> {
    validate::validate_sender_pattern(s)
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests;
