//! What outbound must do about TLS for one recipient domain, or one MX host of it.

use std::sync::Arc;

use super::{DaneTarget, Mode, Policy};

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
    /// A domain's directive from its MTA-STS one (`None`: no policy, or mode `none`) and
    /// herald's own `[delivery] require_tls`: an `enforce` policy wins; otherwise
    /// `require_tls` makes it [`TlsDirective::Required`]; otherwise a `testing` policy or a
    /// failed fetch stays (for reporting); otherwise opportunistic.
    pub fn with_require_tls(sts: Option<TlsDirective>, require_tls: bool) -> TlsDirective {
        match sts {
            Some(d) if d.requires_verified_tls() => d,
            _ if require_tls => TlsDirective::Required,
            Some(d) => d,
            None => TlsDirective::Opportunistic,
        }
    }

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

    /// Whether the MX host and its certificate are authenticated (MTA-STS enforce or DANE):
    /// what REQUIRETLS needs.
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

#[cfg(test)]
impl TlsDirective {
    /// An MTA-STS directive for `bank.test` (MX `*.bank.test`) in `mode`, for unit tests.
    pub(crate) fn test_sts(mode: Mode) -> TlsDirective {
        TlsDirective::Sts {
            domain: "bank.test".into(),
            policy: Arc::new(Policy {
                id: "1".into(),
                mode,
                mx: vec!["*.bank.test".into()],
                max_age: 86400,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(mode: Mode) -> TlsDirective {
        TlsDirective::test_sts(mode)
    }

    #[test]
    fn enforce_outranks_require_tls_which_outranks_testing_and_failures() {
        let label = |sts, required| TlsDirective::with_require_tls(sts, required).label();
        assert_eq!(label(Some(sts(Mode::Enforce)), true), "mta-sts enforce");
        assert_eq!(label(Some(sts(Mode::Testing)), true), "required");
        assert_eq!(label(Some(sts(Mode::Testing)), false), "mta-sts testing");
        let failed = TlsDirective::StsFailed {
            domain: "bank.test".into(),
            result_type: mail_auth::report::tlsrpt::ResultType::StsPolicyFetchError,
            detail: "timed out".into(),
        };
        assert_eq!(label(Some(failed.clone()), true), "required");
        assert!(matches!(
            TlsDirective::with_require_tls(Some(failed), false),
            TlsDirective::StsFailed { .. }
        ));
        assert_eq!(label(None, true), "required");
        assert_eq!(label(None, false), "opportunistic");
    }

    #[test]
    fn only_enforce_and_dane_with_usable_records_authenticate_the_mx() {
        assert!(sts(Mode::Enforce).authenticates_mx());
        assert!(!sts(Mode::Testing).authenticates_mx());
        assert!(!TlsDirective::Required.authenticates_mx());
        assert!(TlsDirective::Required.requires_verified_tls());
        let dane = |records| TlsDirective::Dane {
            target: Arc::new(DaneTarget {
                domain: "bank.test".into(),
                host: "mx.bank.test".into(),
                base: "mx.bank.test".into(),
                records,
            }),
        };
        let encrypt_only = dane(Vec::new());
        assert!(encrypt_only.requires_verified_tls() && !encrypt_only.authenticates_mx());
        assert_eq!(encrypt_only.label(), "dane (encrypt only)");
    }
}
