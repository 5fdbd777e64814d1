//! Discovery (RFC 8461 §3.1): the `_mta-sts.<domain>` TXT record announces a policy and its id.
//! Records not starting with `v=STSv1` are ignored; zero or several remaining, or one that does
//! not parse, mean the domain has no policy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_resolver::net::{DnsError, NetError};
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
    discover_until(auth, domain).await.0
}

/// [`discover`], and until when its answer holds: the record's TTL, or a negative answer's
/// (RFC 2308, from its SOA), as the resolver's own cache keeps it. `None` when it must not be
/// reused (the look-up failed, or the answer came without a TTL).
pub async fn discover_until(
    auth: &MessageAuthenticator,
    domain: &str,
) -> (Discovery, Option<Instant>) {
    let name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
    let (records, until) = match txt_records(auth, &name).await {
        Ok(found) => found,
        Err(TxtError::None(until)) => {
            return (
                Discovery::NoPolicy(format!("no TXT record at {name}")),
                until,
            );
        }
        Err(TxtError::Failed(e)) => return (Discovery::Failed(format!("TXT {name}: {e}")), None),
    };
    let candidates: Vec<&Vec<u8>> = records
        .iter()
        .filter(|r| r.trim_ascii_start().starts_with(b"v=STSv1"))
        .collect();
    let discovery = match candidates.as_slice() {
        [] => Discovery::NoPolicy(format!("no v=STSv1 record at {name}")),
        [one] => match MtaSts::parse(one) {
            Ok(record) => Discovery::Id(record.id),
            Err(_) => Discovery::NoPolicy(format!("the record at {name} is malformed")),
        },
        _ => Discovery::NoPolicy(format!(
            "{} v=STSv1 records at {name}; exactly one is allowed",
            candidates.len()
        )),
    };
    (discovery, Some(until))
}

/// Most domains whose answer [`Discovered`] keeps; past it, expired answers go, then all.
const DISCOVERED_MAX: usize = 10_000;

/// The `_mta-sts` answers of recent domains, each until its TTL runs out (see
/// [`discover_until`]): one look-up per domain per TTL instead of one per delivery.
#[derive(Default)]
pub struct Discovered {
    answers: HashMap<String, (Instant, Discovery)>,
}

impl Discovered {
    /// The answer kept for `domain`, if its TTL has not run out at `now`.
    pub fn get(&self, domain: &str, now: Instant) -> Option<Discovery> {
        self.answers
            .get(domain)
            .filter(|(until, _)| now < *until)
            .map(|(_, d)| d.clone())
    }

    /// Keeps `discovery` for `domain` until `until`; forgets the domain when the answer may
    /// not be reused (`None`, or already past).
    pub fn keep(
        &mut self,
        domain: &str,
        discovery: &Discovery,
        until: Option<Instant>,
        now: Instant,
    ) {
        let Some(until) = until.filter(|u| *u > now) else {
            self.answers.remove(domain);
            return;
        };
        if self.answers.len() >= DISCOVERED_MAX && !self.answers.contains_key(domain) {
            self.answers.retain(|_, (until, _)| *until > now);
            if self.answers.len() >= DISCOVERED_MAX {
                self.answers.clear();
            }
        }
        self.answers
            .insert(domain.to_string(), (until, discovery.clone()));
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
        Ok((records, _)) => records,
        Err(TxtError::None(_)) => return Ok(None),
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
    /// No record; until when that answer holds, if it came with a TTL.
    None(Option<Instant>),
    Failed(String),
}

/// Every TXT record at `name`, each with its strings joined, and until when they hold.
async fn txt_records(
    auth: &MessageAuthenticator,
    name: &str,
) -> Result<(Vec<Vec<u8>>, Instant), TxtError> {
    let lookup = match auth.resolver().txt_lookup(name).await {
        Ok(lookup) => lookup,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
            return Err(TxtError::None(negative_until(&e)));
        }
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
        Err(TxtError::None(Some(lookup.valid_until())))
    } else {
        Ok((records, lookup.valid_until()))
    }
}

/// Until when a negative answer holds: its TTL from the SOA (RFC 2308), when it had one.
fn negative_until(e: &NetError) -> Option<Instant> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => none
            .negative_ttl
            .map(|ttl| Instant::now() + Duration::from_secs(u64::from(ttl))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_only_until_its_ttl_runs_out() {
        let now = Instant::now();
        let mut kept = Discovered::default();
        let id = Discovery::Id("20261207".into());
        kept.keep("bank.test", &id, Some(now + Duration::from_secs(300)), now);
        assert_eq!(kept.get("bank.test", now), Some(id.clone()));
        assert_eq!(kept.get("bank.test", now + Duration::from_secs(300)), None);
        assert_eq!(kept.get("other.test", now), None);
        // TTL 0, or no TTL (a failed look-up): not reused, and the old answer is forgotten.
        kept.keep("bank.test", &id, Some(now), now);
        assert_eq!(kept.get("bank.test", now), None);
        kept.keep("bank.test", &id, Some(now + Duration::from_secs(60)), now);
        kept.keep("bank.test", &Discovery::Failed("timeout".into()), None, now);
        assert_eq!(kept.get("bank.test", now), None);
    }

    #[test]
    fn a_full_cache_drops_expired_answers_first() {
        let now = Instant::now();
        let mut kept = Discovered::default();
        let none = Discovery::NoPolicy("no TXT record".into());
        for i in 0..DISCOVERED_MAX {
            kept.keep(
                &format!("d{i}.test"),
                &none,
                Some(now + Duration::from_secs(1)),
                now,
            );
        }
        let later = now + Duration::from_secs(2);
        kept.keep(
            "new.test",
            &none,
            Some(later + Duration::from_secs(1)),
            later,
        );
        assert_eq!(kept.answers.len(), 1);
        assert_eq!(kept.get("new.test", later), Some(none));
    }
}
