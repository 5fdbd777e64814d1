//! TLS outcomes as values: delivery and the policy resolver say how TLS went with each MX, and
//! whoever counts them (TLS-RPT, in `report/`) receives them through a [`TlsSink`] it owns.
//! Nothing here knows about reports.

use std::net::IpAddr;

use mail_auth::report::tlsrpt::ResultType;

use super::TlsDirective;

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

/// Something TLS-RPT counts.
#[derive(Debug, Clone)]
pub enum TlsEvent {
    /// A session (or failed attempt at one) under `directive`.
    Session {
        /// The directive the delivery was made under.
        directive: TlsDirective,
        /// How TLS went.
        outcome: TlsOutcome,
    },
    /// A delivery made without the policy `domain` announces, because it could not be fetched
    /// or parsed (`sts-policy-fetch-error`, `sts-policy-invalid`, `sts-webpki-invalid`).
    PolicyUnavailable {
        /// The policy domain.
        domain: String,
        /// The RFC 8460 result type.
        result_type: ResultType,
        /// What went wrong.
        detail: String,
    },
}

/// Where TLS events go. Implemented by the TLS-RPT reporter; must not block (it is called on
/// the delivery path).
pub trait TlsSink: Send + Sync {
    /// Takes one event.
    fn emit(&self, event: TlsEvent);
}

/// A sink that drops every event (no reporting).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTlsReports;

impl TlsSink for NoTlsReports {
    fn emit(&self, _event: TlsEvent) {}
}
