//! An MTA-STS policy (RFC 8461) as a value: what `mta_sts` parses and caches, and what a
//! [`super::TlsDirective::Sts`] carries to delivery and the TLS-RPT reporter.

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
