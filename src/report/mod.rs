//! TLS-RPT (RFC 8460): counting TLS successes and failures per policy domain and day, building
//! the JSON report and sending it to each `rua`.
//!
//! Interface used by outbound (keep it stable): [`TlsReporter::record`] after every delivery
//! session (or failed attempt to establish one) to a domain that has a TLS policy.
//!
//! STUB: records nothing yet; the TLS-RPT work fills it in.

use std::net::IpAddr;

use mail_auth::report::tlsrpt::ResultType;

use crate::mta_sts::TlsDirective;

/// The outcome of one attempt to set up a TLS session with an MX.
#[derive(Debug, Clone)]
pub enum TlsOutcome {
    /// TLS established as the policy demands.
    Success,
    /// TLS failed; with the RFC 8460 result type.
    Failure {
        /// e.g. `starttls-not-supported`, `certificate-host-mismatch`.
        result_type: ResultType,
        /// The MX host name tried.
        mx_host: String,
        /// The MX address tried.
        ip: Option<IpAddr>,
        /// Human-readable detail.
        detail: String,
    },
}

/// Collects TLS outcomes for TLS-RPT.
#[derive(Default)]
pub struct TlsReporter {}

impl TlsReporter {
    /// Records one outcome for the policy domain of `directive` (no-op for opportunistic).
    pub fn record(&self, _directive: &TlsDirective, _outcome: TlsOutcome) {}
}
