//! DNS look-ups for `herald check`, with the three outcomes the checks must tell apart: records
//! found, an authoritative "nothing here" (NXDOMAIN or no data), and a failure to get an answer
//! at all (timeout, refused, SERVFAIL) — which is never treated as a pass.

use std::net::IpAddr;

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mail_auth::MessageAuthenticator;

/// What an authoritative answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<T> {
    /// Records of the type asked for.
    Found(T),
    /// The name exists but has no record of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

impl<T> Answer<T> {
    /// True for NXDOMAIN and no-data: an RFC 7208 "void" look-up.
    pub(crate) fn is_void(&self) -> bool {
        !matches!(self, Answer::Found(_))
    }
}

/// No usable answer: the resolver did not answer, refused, or failed.
#[derive(Debug, Clone)]
pub(crate) struct LookupFailure {
    /// The name and type asked for, e.g. `TXT example.com`.
    pub query: String,
    /// What went wrong, from the resolver.
    pub detail: String,
}

impl std::fmt::Display for LookupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer for {}: {}", self.query, self.detail)
    }
}

/// The resolver `herald check` asks, with typed outcomes.
pub(crate) struct Dns<'a> {
    auth: &'a MessageAuthenticator,
}

impl<'a> Dns<'a> {
    /// Wraps the configured resolver.
    pub(crate) fn new(auth: &'a MessageAuthenticator) -> Dns<'a> {
        Dns { auth }
    }

    /// Every TXT record at `name`, each record's strings concatenated (RFC 7208 §3.3).
    pub(crate) async fn txt(&self, name: &str) -> Result<Answer<Vec<String>>, LookupFailure> {
        let query = format!("TXT {name}");
        let fqdn = to_name(name, &query)?;
        match self.auth.resolver().txt_lookup(fqdn).await {
            Ok(lookup) => {
                let records: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                if records.is_empty() {
                    Ok(Answer::NoData)
                } else {
                    Ok(Answer::Found(records))
                }
            }
            Err(e) => classify(e, query),
        }
    }

    /// How many records of `rtype` exist at `name`.
    pub(crate) async fn count(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<Answer<usize>, LookupFailure> {
        let query = format!("{rtype} {name}");
        let fqdn = to_name(name, &query)?;
        match self.auth.resolver().lookup(fqdn, rtype).await {
            Ok(lookup) => {
                let n = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .count();
                Ok(if n == 0 {
                    Answer::NoData
                } else {
                    Answer::Found(n)
                })
            }
            Err(e) => classify(e, query),
        }
    }

    /// The host names the PTR records of `ip` give (lower case, no trailing dot).
    pub(crate) async fn ptr(&self, ip: IpAddr) -> Result<Answer<Vec<String>>, LookupFailure> {
        let fqdn = Name::from(ip);
        let query = format!("PTR {fqdn}");
        match self.auth.resolver().lookup(fqdn, RecordType::PTR).await {
            Ok(lookup) => {
                let names: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::PTR(ptr) => {
                            Some(ptr.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect();
                Ok(if names.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Found(names)
                })
            }
            Err(e) => classify(e, query),
        }
    }

    /// The addresses (A and AAAA) of `name`; void when it has neither.
    pub(crate) async fn addresses(&self, name: &str) -> Result<Answer<Vec<IpAddr>>, LookupFailure> {
        let mut found = Vec::new();
        let mut nxdomain = false;
        for rtype in [RecordType::A, RecordType::AAAA] {
            let query = format!("{rtype} {name}");
            let fqdn = to_name(name, &query)?;
            match self.auth.resolver().lookup(fqdn, rtype).await {
                Ok(lookup) => found.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => nxdomain |= classify::<()>(e, query)? == Answer::NxDomain,
            }
        }
        Ok(if !found.is_empty() {
            Answer::Found(found)
        } else if nxdomain {
            Answer::NxDomain
        } else {
            Answer::NoData
        })
    }

    /// Whether `name` has an address record (A or AAAA); void when it has neither.
    pub(crate) async fn has_address(&self, name: &str) -> Result<Answer<usize>, LookupFailure> {
        match self.count(name, RecordType::A).await? {
            Answer::NxDomain => Ok(Answer::NxDomain),
            Answer::Found(n) => Ok(Answer::Found(n)),
            Answer::NoData => self.count(name, RecordType::AAAA).await,
        }
    }
}

fn to_name(name: &str, query: &str) -> Result<Name, LookupFailure> {
    let trimmed = name.trim_end_matches('.');
    Name::from_ascii(format!("{trimmed}.")).map_err(|e| LookupFailure {
        query: query.to_string(),
        detail: format!("{name:?} is not a valid DNS name: {e}"),
    })
}

fn classify<T>(e: NetError, query: String) -> Result<Answer<T>, LookupFailure> {
    match &e {
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NXDomain =>
        {
            Ok(Answer::NxDomain)
        }
        NetError::Dns(DnsError::NoRecordsFound(nr))
            if nr.response_code == ResponseCode::NoError =>
        {
            Ok(Answer::NoData)
        }
        NetError::Dns(DnsError::ResponseCode(code)) => Err(LookupFailure {
            query,
            detail: format!("the resolver answered {code}"),
        }),
        _ => Err(LookupFailure {
            query,
            detail: e.to_string(),
        }),
    }
}
