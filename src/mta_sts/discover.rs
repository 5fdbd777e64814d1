//! Discovery (RFC 8461 §3.1): the `_mta-sts.<domain>` TXT record announces a policy and its id.
//! Records not starting with `v=STSv1` are ignored; zero or several remaining, or one that does
//! not parse, mean the domain has no policy.

use hickory_resolver::proto::rr::RData;
use mail_auth::MessageAuthenticator;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::{MtaSts, TlsRpt};

/// What the `_mta-sts` TXT look-up said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// Exactly one valid record: a policy exists with this id.
    Id(String),
    /// No usable record (absent, several, or malformed): the domain announces no policy.
    NoPolicy(String),
    /// The look-up itself failed (timeout, SERVFAIL): nothing is known.
    Failed(String),
}

/// Looks up `_mta-sts.<domain>`.
pub async fn discover(auth: &MessageAuthenticator, domain: &str) -> Discovery {
    let name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
    let records = match txt_records(auth, &name).await {
        Ok(records) => records,
        Err(TxtError::None) => return Discovery::NoPolicy(format!("no TXT record at {name}")),
        Err(TxtError::Failed(e)) => return Discovery::Failed(format!("TXT {name}: {e}")),
    };
    let candidates: Vec<&Vec<u8>> = records
        .iter()
        .filter(|r| r.trim_ascii_start().starts_with(b"v=STSv1"))
        .collect();
    match candidates.as_slice() {
        [] => Discovery::NoPolicy(format!("no v=STSv1 record at {name}")),
        [one] => match MtaSts::parse(one) {
            Ok(record) => Discovery::Id(record.id),
            Err(_) => Discovery::NoPolicy(format!("the record at {name} is malformed")),
        },
        _ => Discovery::NoPolicy(format!(
            "{} v=STSv1 records at {name}; exactly one is allowed",
            candidates.len()
        )),
    }
}

/// A TXT look-up that failed (time-out, SERVFAIL): nothing is known, so try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TXT {name}: {detail}")]
pub struct TxtLookupError {
    /// The name looked up.
    pub name: String,
    /// What the resolver said.
    pub detail: String,
}

/// Looks up `_smtp._tls.<domain>` (RFC 8460 §3): where TLS reports for the domain go.
/// `Ok(None)` when the domain publishes no usable record.
pub async fn tlsrpt(
    auth: &MessageAuthenticator,
    domain: &str,
) -> Result<Option<TlsRpt>, TxtLookupError> {
    let name = format!("_smtp._tls.{}.", domain.trim_end_matches('.'));
    let records = match txt_records(auth, &name).await {
        Ok(records) => records,
        Err(TxtError::None) => return Ok(None),
        Err(TxtError::Failed(detail)) => return Err(TxtLookupError { name, detail }),
    };
    let valid: Vec<TlsRpt> = records
        .iter()
        .filter(|r| r.trim_ascii_start().starts_with(b"v=TLSRPTv1"))
        .filter_map(|r| TlsRpt::parse(r).ok())
        .collect();
    // RFC 8460 §3: several records mean none is used.
    match <[TlsRpt; 1]>::try_from(valid) {
        Ok([one]) => Ok(Some(one)),
        Err(_) => Ok(None),
    }
}

enum TxtError {
    None,
    Failed(String),
}

/// Every TXT record at `name`, each with its strings joined.
async fn txt_records(auth: &MessageAuthenticator, name: &str) -> Result<Vec<Vec<u8>>, TxtError> {
    let lookup = match auth.resolver().txt_lookup(name).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Err(TxtError::None),
        Err(e) => return Err(TxtError::Failed(e.to_string())),
    };
    let records: Vec<Vec<u8>> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        Err(TxtError::None)
    } else {
        Ok(records)
    }
}
