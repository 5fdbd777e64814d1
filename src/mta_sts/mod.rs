//! MTA-STS (RFC 8461): TXT discovery, policy fetch over HTTPS, parsing, on-disk cache and MX
//! matching. Outbound asks [`StsResolver::directive_for`] what a recipient domain demands.
//!
//! Interface used by outbound (keep it stable): [`TlsDirective`], [`Policy::matches_mx`],
//! [`StsResolver::new`], [`StsResolver::directive_for`]. How TLS went is emitted as a
//! [`TlsEvent`] into a [`TlsSink`] (the TLS-RPT reporter implements it).
//!
//! The path of one decision: [`discover`] the `_mta-sts` TXT id, compare it with the [`cache`],
//! [`fetch`] and [`policy::parse`] the policy file when needed, then turn the policy (or the
//! `[delivery] require_tls` settings) into a [`TlsDirective`].

pub mod cache;
pub mod discover;
pub mod fetch;
mod outcome;
pub mod policy;
mod resolve;
mod tlsa;

use std::sync::Arc;

pub use outcome::{NoTlsReports, TlsEvent, TlsOutcome, TlsSink};
pub use resolve::{Resolution, Source, StsResolver};
pub use tlsa::DaneTarget;

/// Policy mode (RFC 8461 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only over verified TLS to a matching MX.
    Enforce,
    /// Deliver as usual, report failures.
    Testing,
    /// No policy.
    None,
}

/// A parsed MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    /// The `id=` of the TXT record this policy was fetched for.
    pub id: String,
    /// Mode.
    pub mode: Mode,
    /// `mx:` patterns (`*.` wildcard matches exactly one leftmost label).
    pub mx: Vec<String>,
    /// `max_age` in seconds.
    pub max_age: u64,
}

impl Policy {
    /// Whether an MX host name matches one of the policy's patterns.
    pub fn matches_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => host == pattern,
            }
        })
    }
}

/// What outbound must do for one recipient domain.
#[derive(Debug, Clone)]
pub enum TlsDirective {
    /// No policy: STARTTLS when offered, any certificate (recorded as unverified).
    Opportunistic,
    /// `[delivery] require_tls`: STARTTLS with a verified certificate matching the MX name.
    Required,
    /// An MTA-STS policy: in `enforce` mode only matching MX hosts, verified TLS, no fall-back;
    /// in `testing` mode deliver as opportunistic but report failures.
    Sts {
        /// The policy domain (the recipient domain).
        domain: String,
        /// The policy.
        policy: Arc<Policy>,
    },
    /// A policy is announced in DNS but could not be fetched or parsed, and no cached policy
    /// applies: deliver opportunistically and report this failure type to TLS-RPT.
    StsFailed {
        /// The policy domain.
        domain: String,
        /// `sts-policy-fetch-error`, `sts-policy-invalid` or `sts-webpki-invalid`.
        result_type: mail_auth::report::tlsrpt::ResultType,
        /// What went wrong, for logs and the report.
        detail: String,
    },
    /// DANE (RFC 7672) for one MX host: its MX and address answers were DNSSEC-secure and it
    /// publishes TLSA records. STARTTLS is required and the chain must match a usable record
    /// (with none usable: TLS required, not authenticated). Takes precedence over MTA-STS
    /// (RFC 8461 §2).
    Dane {
        /// The host, the recipient domain and the TLSA records.
        target: Arc<DaneTarget>,
    },
}

impl TlsDirective {
    /// The name logged on each delivery line.
    pub fn label(&self) -> &'static str {
        match self {
            TlsDirective::Opportunistic | TlsDirective::StsFailed { .. } => "opportunistic",
            TlsDirective::Required => "required",
            TlsDirective::Sts { policy, .. } => match policy.mode {
                Mode::Enforce => "mta-sts enforce",
                Mode::Testing => "mta-sts testing",
                Mode::None => "opportunistic",
            },
            TlsDirective::Dane { target } if target.records.is_empty() => "dane (encrypt only)",
            TlsDirective::Dane { .. } => "dane",
        }
    }

    /// Whether the MX host and its certificate are authenticated (MTA-STS enforce or DANE): what REQUIRETLS needs
    pub fn authenticates_mx(&self) -> bool {
        // Every variant is named, so a new kind of directive has to decide (RFC 8689 §4.2.1:
        // an MX name from unauthenticated DNS, as with `require_tls`, is not authenticated).
        match self {
            TlsDirective::Sts { policy, .. } => policy.mode == Mode::Enforce,
            // DANE authenticates with usable TLSA records; with only unusable ones it demands
            // STARTTLS but checks no certificate.
            TlsDirective::Dane { target } => !target.records.is_empty(),
            TlsDirective::Opportunistic
            | TlsDirective::Required
            | TlsDirective::StsFailed { .. } => false,
        }
    }

    /// Whether a TLS failure must stop delivery (temporary failure, never plain text).
    pub fn requires_verified_tls(&self) -> bool {
        match self {
            TlsDirective::Required => true,
            TlsDirective::Sts { policy, .. } => policy.mode == Mode::Enforce,
            TlsDirective::Dane { .. } => true,
            _ => false,
        }
    }
}
