//! Routing: which hosts receive mail for a domain (RFC 5321 §5.1, RFC 7505).
//!
//! MX hosts come in preference order, shuffled among equal preferences; a domain without MX
//! records is its own (implicit) MX; a null MX or a domain that does not exist fails
//! permanently at once; any other DNS trouble is temporary.

use std::net::IpAddr;

use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnsError, MessageAuthenticator};
use rand::seq::SliceRandom;

use super::dns_cache::DnsCache;

/// Why a domain or host could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx {
        /// The domain.
        domain: String,
    },
    /// The name does not exist (NXDOMAIN).
    NoSuchDomain {
        /// The domain or host name.
        name: String,
    },
    /// An address literal (`[192.0.2.1]`) that is not an address.
    BadLiteral {
        /// The literal as given.
        literal: String,
    },
    /// The host exists but has no A or AAAA record.
    NoAddress {
        /// The host name.
        host: String,
    },
    /// DNS trouble that may pass (time-out, SERVFAIL).
    Temporary(String),
}

impl ResolveError {
    /// Whether the answer is final (everything but [`ResolveError::Temporary`]).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ResolveError::Temporary(_))
    }
}

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResolveError::NullMx { domain } => {
                write!(
                    f,
                    "{domain} publishes a null MX (RFC 7505): it accepts no mail"
                )
            }
            ResolveError::NoSuchDomain { name } => write!(f, "{name} does not exist (NXDOMAIN)"),
            ResolveError::BadLiteral { literal } => {
                write!(f, "{literal} is not a valid address literal")
            }
            ResolveError::NoAddress { host } => write!(f, "{host} has no A or AAAA record"),
            ResolveError::Temporary(s) => f.write_str(s),
        }
    }
}

/// The hosts to try for `domain`, best first (host names, or an address literal).
pub(crate) async fn mx_hosts(
    resolver: &MessageAuthenticator,
    domain: &str,
) -> Result<Vec<String>, ResolveError> {
    mx_hosts_kept(resolver, None, domain).await
}

/// [`mx_hosts`], the MX records taken from `cache` while their TTL runs (kept there when
/// looked up).
pub(crate) async fn mx_hosts_kept(
    resolver: &MessageAuthenticator,
    cache: Option<&DnsCache>,
    domain: &str,
) -> Result<Vec<String>, ResolveError> {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return match ip.parse::<IpAddr>() {
            Ok(_) => Ok(vec![ip.to_string()]),
            Err(_) => Err(ResolveError::BadLiteral {
                literal: domain.to_string(),
            }),
        };
    }
    match resolver.mx_lookup(domain, cache.map(|c| &c.mx)).await {
        Ok(set) => {
            let mut hosts = Vec::new();
            for mx in set.rrset.iter() {
                let mut group: Vec<String> = mx
                    .exchanges
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect();
                group.shuffle(&mut rand::thread_rng());
                hosts.extend(group);
            }
            // RFC 7505: a single MX with an empty exchange ("." ) says "no mail here".
            if hosts.iter().any(|h| h.is_empty()) {
                return Err(ResolveError::NullMx {
                    domain: domain.to_string(),
                });
            }
            if hosts.is_empty() {
                return Ok(vec![domain.to_ascii_lowercase()]);
            }
            Ok(hosts)
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))) => {
            Err(ResolveError::NoSuchDomain {
                name: domain.to_string(),
            })
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => {
            // No MX records: the domain itself is the implicit MX (RFC 5321 §5.1).
            Ok(vec![domain.to_ascii_lowercase()])
        }
        Err(e) => Err(ResolveError::Temporary(format!(
            "MX look-up for {domain} failed: {e}"
        ))),
    }
}

/// The IPv4 and IPv6 addresses of `host` (IPv4 first); an address literal is itself.
pub(crate) async fn addresses(
    resolver: &MessageAuthenticator,
    host: &str,
) -> Result<Vec<IpAddr>, ResolveError> {
    addresses_kept(resolver, None, host).await
}

/// [`addresses`], the records taken from `cache` while their TTL runs (kept there when
/// looked up).
pub(crate) async fn addresses_kept(
    resolver: &MessageAuthenticator,
    cache: Option<&DnsCache>,
    host: &str,
) -> Result<Vec<IpAddr>, ResolveError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let (v4, v6) = tokio::join!(
        resolver.ipv4_lookup(host, cache.map(|c| &c.v4)),
        resolver.ipv6_lookup(host, cache.map(|c| &c.v6))
    );
    let mut out: Vec<IpAddr> = Vec::new();
    let mut nxdomain = false;
    let mut trouble = None;
    match v4 {
        Ok(set) => out.extend(set.rrset.iter().copied().map(IpAddr::from)),
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(code))) => {
            nxdomain |= code == ResponseCode::NXDomain
        }
        Err(e) => trouble = Some(e.to_string()),
    }
    match v6 {
        Ok(set) => out.extend(set.rrset.iter().copied().map(IpAddr::from)),
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(code))) => {
            nxdomain |= code == ResponseCode::NXDomain
        }
        Err(e) => trouble = Some(e.to_string()),
    }
    if !out.is_empty() {
        return Ok(out);
    }
    match trouble {
        Some(e) => Err(ResolveError::Temporary(format!(
            "address look-up for {host} failed: {e}"
        ))),
        None if nxdomain => Err(ResolveError::NoSuchDomain {
            name: host.to_string(),
        }),
        None => Err(ResolveError::NoAddress {
            host: host.to_string(),
        }),
    }
}
