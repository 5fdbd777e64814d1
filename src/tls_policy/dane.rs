//! The DANE policy of one MX host as a plain value (RFC 7672): what outbound found in DNS and
//! hands to the TLS verifier, the TLS-RPT reporter and `herald tls show`. The look-ups and the
//! verifier live in `outbound::dane`.

use hickory_proto::rr::rdata::TLSA;

/// The DANE facts for one MX host that delivery acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneTarget {
    /// The recipient domain (TLS-RPT policy domain, and an accepted certificate name).
    pub domain: String,
    /// The MX host as the MX record names it (a certificate name DANE-TA accepts).
    pub host: String,
    /// The TLSA base domain: the MX host, or where its secure CNAME chain led when the TLSA
    /// records were found there (RFC 7672 §2.2.3); the first certificate name DANE-TA accepts.
    pub base: String,
    /// The usable TLSA records; empty when the host publishes only unusable ones (then TLS is
    /// required but not authenticated).
    pub records: Vec<TLSA>,
}

impl DaneTarget {
    /// The names a DANE-TA(2) certificate may carry (RFC 7672 §3.2.2): the TLSA base domain,
    /// the MX host name, and the recipient domain.
    pub fn reference_names(&self) -> Vec<String> {
        let mut names = vec![self.base.clone()];
        for n in [&self.host, &self.domain] {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// The records in presentation form (`3 1 1 ab12…`), for reports and `herald tls show`.
    pub fn record_lines(&self) -> Vec<String> {
        self.records.iter().map(|r| r.to_string()).collect()
    }
}
