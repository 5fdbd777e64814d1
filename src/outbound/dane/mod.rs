//! DANE for SMTP (RFC 7672): which MX hosts of a domain are DANE-protected, and the rustls
//! verifier that checks a presented chain against their TLSA records.
//!
//! Per delivery, [`Dane::plan`] looks at the domain's MX answer and, for each MX host, its
//! address and `_<port>._tcp.<host>` TLSA answers through the [`SecureResolver`]:
//! - MX answer insecure (unsigned zone) → no DANE for the domain;
//! - MX answer bogus, or a secure host's TLSA look-up bogus or failing (SERVFAIL, time-out) →
//!   that host is not used: the delivery defers (`dnssec-invalid`);
//! - host address records insecure → no DANE for that host (§2.2.2);
//! - TLSA secure with usable records (DANE-TA(2)/DANE-EE(3), selector 0/1, matching 0/1/2) →
//!   STARTTLS required and the chain must match a record ([`DaneVerifier`]);
//! - TLSA secure but none usable → STARTTLS required, certificate not checked (§2.2);
//! - TLSA securely denied or insecure → the domain's own policy (MTA-STS or opportunistic).
//!
//! DANE-EE(3) checks the end-entity certificate (or its key) only: no name, no expiry (§3.1.1).
//! DANE-TA(2) makes the matching certificate of the chain the only trust anchor and checks the
//! chain to it with WebPKI rules, including expiry, and the name: the MX host name or the
//! recipient domain (§3.2.2), wildcards only as a whole leftmost label (§3.2.3). The
//! verifier is in [`verify`].

use std::sync::Arc;

use hickory_resolver::proto::rr::rdata::TLSA;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_resolver::proto::rr::{RData, RecordType};
use mail_auth::report::tlsrpt::ResultType;

use self::dnssec::{SecureError, SecureResolver};
use super::outcome::Failure;
use crate::config::Config;
use crate::tls_policy::{TlsDirective, TlsEvent, TlsOutcome};

pub(crate) mod dnssec;
mod verify;

pub(crate) use crate::tls_policy::DaneTarget;
pub(crate) use verify::{DaneVerifier, TlsaMismatch};

/// What DANE says about one MX host.
#[derive(Debug, Clone)]
pub(crate) enum HostDane {
    /// No DANE here; the domain's own directive applies. With the reason, for `tls show`.
    NotApplicable(String),
    /// DANE applies: TLS required, chain checked against the records.
    Applies(Arc<DaneTarget>),
    /// The host must not be used now (defer): DNSSEC trouble or `dane-required` unmet.
    Unusable {
        /// `dnssec-invalid` or `dane-required`.
        result_type: ResultType,
        /// Why, for logs, the reply and the report.
        detail: String,
    },
}

/// DANE's view of one recipient domain.
#[derive(Debug, Clone, Default)]
pub(crate) struct DanePlan {
    /// Whether the MX answer (or its denial) was DNSSEC-secure.
    pub mx_secure: bool,
    /// Why DANE does not apply to the whole domain, when it does not.
    pub summary: Option<String>,
    /// Per MX host, in the order given.
    pub hosts: Vec<(String, HostDane)>,
}

impl DanePlan {
    /// What DANE says about `host` (not applicable when the host was not planned).
    pub(crate) fn host(&self, host: &str) -> HostDane {
        self.hosts
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| HostDane::NotApplicable("not looked at".into()))
    }

    /// Whether `host` is DANE-protected (then no MTA-STS `mx:` list restricts it, RFC 8461 §2).
    pub(crate) fn protects(&self, host: &str) -> bool {
        matches!(self.host(host), HostDane::Applies(_))
    }

    /// Whether DANE authenticates (usable TLSA records), or may once DNS trouble clears, at
    /// least one MX host: what a REQUIRETLS message needs when the domain has no MTA-STS
    /// `enforce` policy.
    pub(crate) fn may_authenticate_a_host(&self) -> bool {
        self.hosts.iter().any(|(_, d)| match d {
            HostDane::Applies(target) => !target.records.is_empty(),
            HostDane::Unusable { .. } => true,
            HostDane::NotApplicable(_) => false,
        })
    }
}

/// DANE look-ups for delivery and `herald tls show`.
#[derive(Clone)]
pub(crate) struct Dane {
    enabled: bool,
    port: u16,
    required: Vec<String>,
    resolver: SecureResolver,
}

impl Dane {
    /// From `[dane]`, `[dns]` and the delivery port (TLSA names are `_<port>._tcp.<host>`).
    pub(crate) fn new(cfg: &Config) -> anyhow::Result<Dane> {
        Ok(Dane {
            enabled: cfg.dane.enabled,
            port: cfg.delivery.port,
            required: cfg
                .dane
                .required_domains
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            resolver: SecureResolver::new(&cfg.dns, &cfg.dane)?,
        })
    }

    /// The DNSSEC-aware resolver underneath.
    pub(crate) fn resolver(&self) -> &SecureResolver {
        &self.resolver
    }

    /// Whether DANE is switched on in the configuration.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The TLSA name for `host` on the delivery port.
    pub(crate) fn tlsa_name(&self, host: &str) -> String {
        format!("_{}._tcp.{}", self.port, host.trim_end_matches('.'))
    }

    /// DANE's view of `domain`, whose MX hosts (best first) are `hosts`.
    pub(crate) async fn plan(&self, domain: &str, hosts: &[String]) -> DanePlan {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let required = self.required.contains(&domain);
        let not_applicable = |why: String| -> DanePlan {
            let each = if required {
                HostDane::Unusable {
                    result_type: ResultType::DaneRequired,
                    detail: format!(
                        "DANE is required for {domain} by [dane] required_domains, but {why}"
                    ),
                }
            } else {
                HostDane::NotApplicable(why.clone())
            };
            DanePlan {
                mx_secure: false,
                summary: Some(why),
                hosts: hosts.iter().map(|h| (h.clone(), each.clone())).collect(),
            }
        };
        if !self.enabled {
            return not_applicable("DANE is switched off ([dane] enabled = false)".into());
        }
        if domain.starts_with('[') {
            return not_applicable("an address literal has no TLSA records".into());
        }
        if !self.resolver.available().await {
            return not_applicable("DNSSEC validation is unavailable through [dns] servers".into());
        }
        let mx_secure = match self.resolver.lookup(&domain, RecordType::MX).await {
            Ok(answer) => answer.secure,
            Err(e) if !self.resolver.validated_once() => {
                return not_applicable(format!(
                    "DNSSEC validation has not worked yet through [dns] servers ({e})"
                ));
            }
            Err(e) => {
                let detail = format!("MX of {domain}: {e}");
                return DanePlan {
                    mx_secure: false,
                    summary: Some(detail.clone()),
                    hosts: hosts
                        .iter()
                        .map(|h| {
                            let d = HostDane::Unusable {
                                result_type: ResultType::DnssecInvalid,
                                detail: detail.clone(),
                            };
                            (h.clone(), d)
                        })
                        .collect(),
                };
            }
        };
        if !mx_secure {
            let mut plan =
                not_applicable(format!("the MX answer of {domain} is not DNSSEC-signed"));
            plan.mx_secure = false;
            return plan;
        }
        let mut planned = Vec::with_capacity(hosts.len());
        for host in hosts {
            let mut verdict = self.host(&domain, host).await;
            if required && let HostDane::NotApplicable(why) = &verdict {
                verdict = HostDane::Unusable {
                    result_type: ResultType::DaneRequired,
                    detail: format!(
                        "DANE is required for {domain} by [dane] required_domains, but {why}"
                    ),
                };
            }
            planned.push((host.clone(), verdict));
        }
        DanePlan {
            mx_secure: true,
            summary: None,
            hosts: planned,
        }
    }

    /// DANE for one MX host of a domain whose MX answer was secure.
    async fn host(&self, domain: &str, host: &str) -> HostDane {
        if host.parse::<std::net::IpAddr>().is_ok() {
            return HostDane::NotApplicable("an address literal has no TLSA records".into());
        }
        let unusable = |e: SecureError| HostDane::Unusable {
            result_type: ResultType::DnssecInvalid,
            detail: e.to_string(),
        };
        let mut address = match self.resolver.lookup(host, RecordType::A).await {
            Ok(a) => a,
            Err(e) => return unusable(e),
        };
        if address.records.is_empty() && !address.nxdomain {
            address = match self.resolver.lookup(host, RecordType::AAAA).await {
                Ok(a) => a,
                Err(e) => return unusable(e),
            };
        }
        if !address.secure {
            return HostDane::NotApplicable(format!(
                "the address records of {host} are not DNSSEC-signed"
            ));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // RFC 7672 §2.2.3: when the host is a secure CNAME, the TLSA records at the end of the
        // chain come first; the MX host's own name is the fall-back.
        let mut bases = Vec::new();
        if let Some(canonical) = address.canonical.filter(|c| *c != host) {
            bases.push(canonical);
        }
        bases.push(host.clone());
        let mut why = String::new();
        for base in bases {
            let name = self.tlsa_name(&base);
            let tlsa = match self.resolver.lookup(&name, RecordType::TLSA).await {
                Ok(t) => t,
                Err(e) => return unusable(e),
            };
            if !tlsa.secure {
                why = format!("the TLSA answer for {name} is not signed");
                continue;
            }
            if tlsa.records.is_empty() {
                why = format!("{name} has no TLSA records (securely denied)");
                continue;
            }
            let records = tlsa
                .records
                .iter()
                .filter_map(|r| match r {
                    RData::TLSA(t) if usable(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            return HostDane::Applies(Arc::new(DaneTarget {
                domain: domain.to_string(),
                host,
                base,
                records,
            }));
        }
        HostDane::NotApplicable(why)
    }
}

/// Whether a TLSA record is usable for SMTP (RFC 7672 §3.1): DANE-TA(2) or DANE-EE(3),
/// selector Cert(0) or SPKI(1), matching Full(0), SHA2-256(1) or SHA2-512(2) with a digest of
/// the right length. PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP (§3.1.3).
pub(crate) fn usable(record: &TLSA) -> bool {
    let usage = matches!(record.cert_usage, CertUsage::DaneTa | CertUsage::DaneEe);
    let selector = matches!(record.selector, Selector::Full | Selector::Spki);
    let matching = match record.matching {
        Matching::Raw => !record.cert_data.is_empty(),
        Matching::Sha256 => record.cert_data.len() == 32,
        Matching::Sha512 => record.cert_data.len() == 64,
        _ => false,
    };
    usage && selector && matching
}

/// What a host DANE forbids using now (DNSSEC trouble, `dane-required`) becomes: the TLS-RPT
/// event (policy type `tlsa`) and the failure the delivery defers with if no other host takes
/// the message.
pub(crate) fn refusal(
    domain: &str,
    host: &str,
    result_type: ResultType,
    detail: String,
) -> (TlsEvent, Failure) {
    let target = DaneTarget {
        domain: domain.to_ascii_lowercase(),
        host: host.to_string(),
        base: host.to_string(),
        records: Vec::new(),
    };
    let event = TlsEvent::Session {
        directive: TlsDirective::Dane {
            target: Arc::new(target),
        },
        outcome: TlsOutcome::Failure {
            result_type,
            mx_host: host.to_string(),
            ip: None,
            detail: detail.clone(),
        },
    };
    let failure = Failure::TlsRequired {
        detail: format!("DANE: {detail}"),
    };
    (event, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TLSA {
        TLSA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data,
        )
    }

    #[test]
    fn only_dane_usages_with_known_selectors_and_digest_lengths_are_usable() {
        assert!(usable(&tlsa(3, 1, 1, vec![0; 32])));
        assert!(usable(&tlsa(2, 0, 2, vec![0; 64])));
        assert!(usable(&tlsa(3, 0, 0, vec![1, 2, 3])));
        assert!(
            !usable(&tlsa(1, 1, 1, vec![0; 32])),
            "PKIX-EE is unusable for SMTP"
        );
        assert!(
            !usable(&tlsa(0, 1, 1, vec![0; 32])),
            "PKIX-TA is unusable for SMTP"
        );
        assert!(!usable(&tlsa(3, 1, 1, vec![0; 31])), "short SHA-256");
        assert!(!usable(&tlsa(3, 2, 1, vec![0; 32])), "unknown selector");
        assert!(
            !usable(&tlsa(3, 1, 3, vec![0; 32])),
            "unknown matching type"
        );
    }
}
