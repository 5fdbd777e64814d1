//! The DANE policy of one MX host as a plain value (RFC 7672): what outbound found in DNS and
//! hands to the TLS verifier, the TLS-RPT reporter and `herald tls show`. The look-ups and the
//! verifier live in `outbound::dane`.

use hickory_proto::rr::rdata::TLSA;

/// The DANE facts for one MX host that delivery acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneTarget {
    /// The recipient domain (TLS-RPT policy domain, and an accepted certificate name).
    pub domain: String,
    /// The MX host (TLSA base domain and the main certificate name).
    pub host: String,
    /// The usable TLSA records; empty when the host publishes only unusable ones (then TLS is
    /// required but not authenticated).
    pub records: Vec<TLSA>,
}

impl DaneTarget {
    /// The records in presentation form (`3 1 1 ab12…`), for reports and `herald tls show`.
    pub fn record_lines(&self) -> Vec<String> {
        self.records.iter().map(|r| r.to_string()).collect()
    }
}
