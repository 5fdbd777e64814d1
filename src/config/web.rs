//! `[web]`: herald's public HTTPS face — the listener, its ACME certificates, the MTA-STS
//! policies it hosts for the business's own domains, and the one-click unsubscribe pages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The public HTTPS listener and what it serves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Public HTTPS address (port 443 on the Internet); empty disables the whole section.
    pub listen: Option<SocketAddr>,
    /// Addresses the world reaches `listen` at (behind NAT: the public ones). A name gets a
    /// certificate only when its A/AAAA records point at one of them. Empty: the listen
    /// address when it is a specific one, else this host's global interface addresses.
    pub public_ips: Vec<IpAddr>,
    /// The host name in unsubscribe links (`https://<host>/u/…`); defaults to
    /// `[server] hostname`. It is on the certificate with every `mta-sts.<domain>`.
    pub host: Option<String>,
    /// ACME directory URL (RFC 8555 §7.1.1); Let's Encrypt by default.
    pub acme_directory: String,
    /// Contact for the ACME account (`mailto:…`), told of problems with the certificates.
    pub acme_contact: Option<String>,
    /// Renew once less than this much validity is left, or a third of the lifetime (whichever
    /// comes first).
    #[serde(with = "humantime_serde")]
    pub renew_before: Duration,
    /// First wait after a failed ACME order; doubles per failure up to `acme_retry_max`.
    #[serde(with = "humantime_serde")]
    pub acme_retry: Duration,
    /// Longest wait between failed ACME orders.
    #[serde(with = "humantime_serde")]
    pub acme_retry_max: Duration,
    /// Directory for the ACME account, certificate and key; defaults to `<data_dir>/web`.
    pub dir: Option<PathBuf>,
    /// Time allowed for one whole connection (TLS handshake, request, answer).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes (the unsubscribe form is tiny).
    pub max_body: usize,
    /// How long an unsubscribe link stays valid after the message was sent.
    #[serde(with = "humantime_serde")]
    pub unsubscribe_lifetime: Duration,
    /// MTA-STS policies hosted for the business's own domains, keyed by domain.
    pub mta_sts: BTreeMap<String, HostedStsConfig>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: None,
            public_ips: Vec::new(),
            host: None,
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            acme_contact: None,
            renew_before: Duration::from_secs(30 * 24 * 3600),
            acme_retry: Duration::from_secs(60),
            acme_retry_max: Duration::from_secs(6 * 3600),
            dir: None,
            request_timeout: Duration::from_secs(10),
            max_body: 4096,
            unsubscribe_lifetime: Duration::from_secs(60 * 24 * 3600),
            mta_sts: BTreeMap::new(),
        }
    }
}

/// The MTA-STS policy herald hosts for one domain (RFC 8461 §3.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedStsConfig {
    /// `testing` first (failures are only reported), then `enforce`.
    #[serde(default = "default_mode")]
    pub mode: HostedStsMode,
    /// The `mx:` patterns; empty means the domain's live MX records.
    #[serde(default)]
    pub mx: Vec<String>,
    /// How long senders may cache the policy (RFC 8461 advises weeks once enforced).
    #[serde(with = "humantime_serde", default = "default_max_age")]
    pub max_age: Duration,
}

/// The policy mode published.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostedStsMode {
    /// Senders report failures but still deliver.
    Testing,
    /// Senders deliver only over verified TLS to a listed MX.
    Enforce,
    /// Withdraws the policy (publish this before removing the records).
    None,
}

impl HostedStsMode {
    /// The word in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            HostedStsMode::Testing => "testing",
            HostedStsMode::Enforce => "enforce",
            HostedStsMode::None => "none",
        }
    }
}

fn default_mode() -> HostedStsMode {
    HostedStsMode::Testing
}

fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// Whether an app's mail gets one-click unsubscribe headers (RFC 8058).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnsubscribeMode {
    /// Herald adds nothing (the app may set its own headers).
    #[default]
    Off,
    /// Herald adds `List-Unsubscribe` (HTTPS and mailto) and `List-Unsubscribe-Post`.
    OneClick,
}

impl WebConfig {
    /// Checks the section; `Err((key, problem))`.
    pub fn validate(&self, unsubscribing_apps: &[&str]) -> Result<(), (String, String)> {
        if let Some(app) = unsubscribing_apps.first()
            && self.listen.is_none()
        {
            return Err((
                format!("apps.{app}.unsubscribe"),
                "\"one-click\" needs [web] listen: the unsubscribe links point at herald's \
                 public HTTPS listener"
                    .into(),
            ));
        }
        if self.acme_retry.is_zero() || self.acme_retry_max < self.acme_retry {
            return Err((
                "web.acme_retry".into(),
                "must be more than 0 and at most web.acme_retry_max".into(),
            ));
        }
        if self.max_body < 64 {
            return Err(("web.max_body".into(), "must be at least 64 bytes".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(("web.request_timeout".into(), "must be more than 0".into()));
        }
        for (domain, sts) in &self.mta_sts {
            if !domain.contains('.') || domain.contains(['/', ' ', ':']) {
                return Err((
                    format!("web.mta_sts.{domain}"),
                    "is not a domain name (e.g. [web.mta_sts.\"example.com\"])".into(),
                ));
            }
            if sts.max_age.as_secs() > 31_557_600 || sts.max_age.as_secs() < 60 {
                return Err((
                    format!("web.mta_sts.{domain}.max_age"),
                    "must be between 1 minute and 1 year (RFC 8461 §3.2)".into(),
                ));
            }
            if let Some(bad) = sts
                .mx
                .iter()
                .find(|m| m.trim().is_empty() || m.contains(' '))
            {
                return Err((
                    format!("web.mta_sts.{domain}.mx"),
                    format!("{bad:?} is not an MX host name or *.pattern"),
                ));
            }
        }
        Ok(())
    }
}
