//! `[history]` (the message history: where events are kept and for how long) and `[webhooks]`
//! (how herald POSTs events to each app's `webhook_url`: timeouts, retries, the outbox bound
//! and which addresses an endpoint may have).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Config, ConfigError};

/// The message history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Record events at all (search, the /messages page and webhooks need it).
    pub enabled: bool,
    /// The SQLite file; defaults to `<data_dir>/history.sqlite` (with `[cluster]`, events go
    /// to the cluster's PostgreSQL instead).
    pub database: Option<PathBuf>,
    /// How long events are kept; older ones are pruned in the background.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Events waiting for the writer before new ones are lost (and counted): seconds of the
    /// busiest traffic.
    pub queue: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            database: None,
            retention: Duration::from_secs(30 * 24 * 3600),
            queue: 65_536,
        }
    }
}

/// Webhook delivery to the apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Time allowed for one POST (connect, TLS, request and response).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait after the first failed POST; doubles after each failure up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long a batch is retried before its events are dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Events per app waiting in the outbox before new ones are refused (and counted).
    pub max_backlog: usize,
    /// Events per POST.
    pub batch_size: usize,
    /// Bytes of an endpoint's response that are read (the rest is ignored).
    pub max_response_bytes: usize,
    /// Networks an endpoint may resolve to although they are loopback, link-local or private
    /// (refused by default: server-side request forgery), e.g. `["10.1.2.0/24"]`.
    #[serde(deserialize_with = "super::ip_or_net_list")]
    pub allow_networks: Vec<IpNet>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            max_backlog: 100_000,
            batch_size: 100,
            max_response_bytes: 4096,
            allow_networks: Vec::new(),
        }
    }
}

/// An app's webhook signing secret; its `Debug` never shows it (configs get logged).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct WebhookSecret(pub String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("whsec_(redacted)")
    }
}

impl WebhookSecret {
    /// The HMAC key, when the secret is well formed ([`webhook_key`]).
    pub fn key(&self) -> Option<Vec<u8>> {
        webhook_key(&self.0)
    }
}

/// The Standard Webhooks secret prefix; the rest is the key in base64.
pub const SECRET_PREFIX: &str = "whsec_";

impl Config {
    /// Checks `[history]`, `[webhooks]` and each app's `webhook_url` / `webhook_secret`.
    pub(super) fn validate_history(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: String, problem: String| ConfigError {
            file: file.to_string(),
            key,
            problem,
        };
        if self.history.retention < Duration::from_secs(3600) {
            return Err(err(
                "history.retention".into(),
                "must be at least 1h".into(),
            ));
        }
        let w = &self.webhooks;
        if w.batch_size == 0 || w.max_backlog == 0 || w.timeout.is_zero() {
            return Err(err(
                "webhooks.batch_size".into(),
                "batch_size, max_backlog and timeout must be above zero".into(),
            ));
        }
        if w.retry_initial.is_zero() || w.retry_max < w.retry_initial {
            return Err(err(
                "webhooks.retry_initial".into(),
                "must be above zero and not above webhooks.retry_max".into(),
            ));
        }
        for (name, app) in &self.apps {
            let (Some(url), secret) = (&app.webhook_url, &app.webhook_secret) else {
                if app.webhook_secret.is_some() {
                    return Err(err(
                        format!("apps.{name}.webhook_secret"),
                        "is set but apps.{name}.webhook_url is not".replace("{name}", name),
                    ));
                }
                continue;
            };
            if !self.history.enabled {
                return Err(err(
                    format!("apps.{name}.webhook_url"),
                    "needs [history] enabled = true (webhooks are sent from the history's outbox)"
                        .into(),
                ));
            }
            if let Err(problem) = check_webhook_url(url, &w.allow_networks) {
                return Err(err(format!("apps.{name}.webhook_url"), problem.to_string()));
            }
            match secret {
                None => {
                    return Err(err(
                        format!("apps.{name}.webhook_secret"),
                        "must be set with webhook_url: whsec_ followed by at least 24 random \
                         bytes in base64 (`herald webhook secret` makes one)"
                            .into(),
                    ));
                }
                Some(s) if s.key().is_none() => {
                    return Err(err(
                        format!("apps.{name}.webhook_secret"),
                        "must be whsec_ followed by at least 24 bytes in base64 \
                         (`herald webhook secret` makes one)"
                            .into(),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The HMAC key of a `whsec_<base64>` secret (at least 24 bytes), or `None`.
pub fn webhook_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = secret.trim().strip_prefix(SECRET_PREFIX)?;
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (key.len() >= 24).then_some(key)
}

/// Whether `ip` is an address a webhook may reach without the administrator's say-so: not
/// loopback, link-local, private (RFC 1918, unique local), unspecified, multicast, shared
/// (100.64/10), documentation or otherwise reserved.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Whether a webhook may connect to `ip`: a public address, or one in `allowed`.
pub fn webhook_address_allowed(ip: std::net::IpAddr, allowed: &[IpNet]) -> bool {
    is_public(ip) || allowed.iter().any(|n| n.contains(&ip))
}

/// Why a webhook URL is refused, in words for the configuration error or the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL: {why}")]
    NotUrl {
        /// The URL as configured.
        url: String,
        /// The parser's complaint.
        why: String,
    },
    /// Not `https://`.
    #[error("{0:?} must be https:// (events carry addresses; herald only posts them encrypted)")]
    NotHttps(String),
    /// `user:password@` in the URL.
    #[error("must not carry credentials (the signature authenticates herald)")]
    Credentials,
    /// No host part.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A literal address that is not public and not allowed.
    #[error(
        "{0} is a loopback, link-local, private or reserved address: refused (server-side \
         request forgery) unless [webhooks] allow_networks includes it"
    )]
    NotPublic(std::net::IpAddr),
}

/// A webhook URL must be `https://host[:port]/path`, without credentials; a literal address
/// must be allowed ([`webhook_address_allowed`]). Names are checked again when resolved.
pub fn check_webhook_url(url: &str, allowed: &[IpNet]) -> Result<(), WebhookUrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| WebhookUrlError::NotUrl {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    if parsed.scheme() != "https" {
        return Err(WebhookUrlError::NotHttps(url.to_string()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookUrlError::Credentials);
    }
    let Some(host) = parsed.host_str() else {
        return Err(WebhookUrlError::NoHost(url.to_string()));
    };
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    if let Some(ip) = ip
        && !webhook_address_allowed(ip, allowed)
    {
        return Err(WebhookUrlError::NotPublic(ip));
    }
    Ok(())
}
