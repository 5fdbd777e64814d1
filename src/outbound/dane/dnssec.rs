//! DNSSEC-aware look-ups for DANE: every answer comes back with whether it was DNSSEC-secure.
//!
//! Two ways to know, chosen by `[dane] trust_resolver_ad`:
//! - **validating** (default): hickory's validator checks the chain of signatures from the
//!   trust anchor (the built-in root keys, or `[dane] trust_anchor`) down to each answer,
//!   asking the `[dns] servers` for DNSKEY and DS records as it goes;
//! - **trust-AD**: a local validating resolver (unbound, BIND) has already validated; herald
//!   asks with the AD bit and DO set and believes the AD bit of the reply (RFC 6840 §5.7), as
//!   Postfix does. Only loopback resolvers are allowed (checked by the config).
//!
//! When the configured servers cannot serve a validated answer from the trust anchor's zone at
//! all (a resolver that strips DNSSEC records), validating mode reports every answer as
//! insecure and warns: mail keeps flowing without DANE, as with Postfix behind a
//! non-validating resolver. Once an answer has validated, a later failure is bogus, never
//! insecure (no downgrade by an attacker).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_resolver::config::ResolverOpts;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{DaneConfig, DnsConfig};

/// Records of one type at one name, and whether DNSSEC vouches for them (or for their absence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Secured {
    /// The records of the asked type (empty: the name or type does not exist).
    pub records: Vec<RData>,
    /// Whether the answer (or the denial) was DNSSEC-secure.
    pub secure: bool,
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: bool,
    /// Where a CNAME chain led, when the records are at another name (lower case, no dot).
    pub canonical: Option<String>,
}

/// The owner of the answer's `rtype` records when a CNAME led there.
fn canonical_of(records: &[&Record], rtype: RecordType) -> Option<String> {
    if !records.iter().any(|r| r.record_type() == RecordType::CNAME) {
        return None;
    }
    records
        .iter()
        .find(|r| r.record_type() == rtype)
        .map(|r| r.name.to_ascii().trim_end_matches('.').to_ascii_lowercase())
}

/// A look-up that gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecureError {
    /// The answer failed DNSSEC validation (or the resolver said SERVFAIL for a signed zone).
    Bogus(String),
    /// No answer: SERVFAIL, time-out, refused.
    Failed(String),
}

impl std::fmt::Display for SecureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecureError::Bogus(s) => write!(f, "DNSSEC validation failed: {s}"),
            SecureError::Failed(s) => write!(f, "look-up failed: {s}"),
        }
    }
}

/// How security is established (see the module documentation).
enum Mode {
    Validating {
        resolver: Box<TokioResolver>,
        /// The trust anchor's zone: its signed SOA answer shows validation works.
        anchor_zone: Name,
        /// A signed answer validated at least once (sticky).
        root_ok: AtomicBool,
        /// Unix time of the last probe that found validation impossible (re-probed at most
        /// once a minute); concurrent callers wait for a probe in flight.
        last_probe: tokio::sync::Mutex<u64>,
    },
    TrustAd {
        servers: Vec<SocketAddr>,
        timeout: Duration,
    },
}

/// The DNSSEC-aware resolver delivery and `herald tls show` use.
#[derive(Clone)]
pub(crate) struct SecureResolver {
    mode: Arc<Mode>,
}

const PROBE_INTERVAL: u64 = 60;

impl SecureResolver {
    /// Builds the resolver from `[dns]` and `[dane]`.
    pub(crate) fn new(dns: &DnsConfig, dane: &DaneConfig) -> anyhow::Result<SecureResolver> {
        let mut opts = ResolverOpts::default();
        opts.attempts = 2;
        opts.timeout = Duration::from_secs(3);
        opts.cache_size = crate::resolver::CACHE_ENTRIES;
        // Only DNS answers can be DNSSEC-secure; /etc/hosts has no say in DANE.
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let mode = if dane.trust_resolver_ad {
            Mode::TrustAd {
                servers: dns.servers.clone(),
                timeout: opts.timeout,
            }
        } else {
            let (anchors, anchor_zone) = match &dane.trust_anchor {
                Some(path) => {
                    let anchors = TrustAnchors::from_file(path).map_err(|e| {
                        anyhow::anyhow!("dane.trust_anchor: cannot read {}: {e}", path.display())
                    })?;
                    (anchors, anchor_zone(path)?)
                }
                None => (TrustAnchors::default(), Name::root()),
            };
            let builder = if dns.servers.is_empty() {
                Resolver::builder(TokioRuntimeProvider::default()).map_err(|e| {
                    anyhow::anyhow!("cannot read the system resolver configuration: {e}")
                })?
            } else {
                Resolver::builder_with_config(
                    crate::resolver::configured_servers(dns),
                    TokioRuntimeProvider::default(),
                )
                .with_options(opts)
            };
            let resolver = builder
                .with_trust_anchor(Arc::new(anchors))
                .build()
                .map_err(|e| anyhow::anyhow!("cannot build the DNSSEC resolver: {e}"))?;
            Mode::Validating {
                resolver: Box::new(resolver),
                anchor_zone,
                root_ok: AtomicBool::new(false),
                last_probe: tokio::sync::Mutex::new(0),
            }
        };
        Ok(SecureResolver {
            mode: Arc::new(mode),
        })
    }

    /// `validating` or `trust-ad`, for `herald tls show` and logs.
    pub(crate) fn mode_name(&self) -> &'static str {
        match &*self.mode {
            Mode::Validating { .. } => {
                "validating (herald checks signatures from the trust anchor)"
            }
            Mode::TrustAd { .. } => {
                "trust-ad (the local resolver validates; herald reads its AD bit)"
            }
        }
    }

    /// Whether DNSSEC can be established at all through the configured servers. In validating
    /// mode this checks (once, then sticky) that a signed answer from the trust anchor's zone
    /// validates; a resolver that strips DNSSEC records fails this and DANE is not applied
    /// (re-checked once a minute). A probe that gets no answer at all says nothing about
    /// DNSSEC: DANE stays on and its look-ups fail closed. In trust-AD mode it is always so.
    pub(crate) async fn available(&self) -> bool {
        let Mode::Validating {
            resolver,
            anchor_zone,
            root_ok,
            last_probe,
        } = &*self.mode
        else {
            return true;
        };
        if root_ok.load(Ordering::Acquire) {
            return true;
        }
        let mut last = last_probe.lock().await;
        if root_ok.load(Ordering::Acquire) {
            return true;
        }
        let now = crate::clock::unix_now();
        if *last != 0 && now.saturating_sub(*last) < PROBE_INTERVAL {
            return false;
        }
        match validated(resolver, anchor_zone.clone(), RecordType::SOA).await {
            Ok(answer) if answer.secure => {
                root_ok.store(true, Ordering::Release);
                tracing::info!(zone = %anchor_zone, "dane: DNSSEC validation works");
                true
            }
            Err(SecureError::Failed(why)) => {
                tracing::info!("dane: DNSSEC probe got no answer ({why}); will probe again");
                true
            }
            other => {
                *last = now;
                let why = match other {
                    Ok(_) => "the answer carried no signatures".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    "dane: DNSSEC validation unavailable through [dns] servers ({why}); every \
                     answer counts as insecure, so DANE is not applied. Use resolvers that \
                     pass DNSSEC records, or a local validating resolver with \
                     [dane] trust_resolver_ad = true"
                );
                false
            }
        }
    }

    /// Whether validation has been seen to work (the trust anchor's zone validated) since
    /// start; always in trust-AD mode. Until then a failed DNSSEC look-up says nothing about
    /// the domain: DANE is not applied, as when validation is unavailable. After, it fails
    /// closed: a signed domain never falls back to unauthenticated TLS because its keys
    /// could not be fetched.
    pub(crate) fn validated_once(&self) -> bool {
        match &*self.mode {
            Mode::Validating { root_ok, .. } => root_ok.load(Ordering::Acquire),
            Mode::TrustAd { .. } => true,
        }
    }

    /// Looks up `name`/`rtype` and says whether the answer was DNSSEC-secure.
    pub(crate) async fn lookup(
        &self,
        name: &str,
        rtype: RecordType,
    ) -> Result<Secured, SecureError> {
        let mut fqdn = Name::from_ascii(name.trim_end_matches('.'))
            .map_err(|e| SecureError::Failed(format!("{name:?} is not a DNS name: {e}")))?;
        fqdn.set_fqdn(true);
        match &*self.mode {
            Mode::Validating { resolver, .. } => validated(resolver, fqdn, rtype).await,
            Mode::TrustAd { servers, timeout } => trust_ad(servers, *timeout, fqdn, rtype).await,
        }
    }
}

/// The zone of the first record in a trust-anchor file (where validation starts).
fn anchor_zone(path: &std::path::Path) -> anyhow::Result<Name> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("dane.trust_anchor: cannot read {}: {e}", path.display()))?;
    let owner = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(';'))
        .and_then(|l| l.split_whitespace().next())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "dane.trust_anchor: {} holds no DNSKEY record",
                path.display()
            )
        })?;
    Name::from_ascii(owner).map_err(|e| {
        anyhow::anyhow!(
            "dane.trust_anchor: {owner:?} in {} is not a DNS name: {e}",
            path.display()
        )
    })
}

async fn validated(
    resolver: &TokioResolver,
    name: Name,
    rtype: RecordType,
) -> Result<Secured, SecureError> {
    let what = format!("{name} {rtype}");
    match resolver.lookup(name, rtype).await {
        Ok(lookup) => {
            let answers: Vec<_> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .collect();
            if answers.iter().any(|r| r.proof == Proof::Bogus) {
                return Err(SecureError::Bogus(format!("{what}: bogus signature")));
            }
            // Neither proven secure nor proven insecure (a DNSKEY or DS look-up on the way
            // timed out): not "unsigned", which would switch DANE off for a signed domain.
            if answers.iter().any(|r| r.proof == Proof::Indeterminate) {
                return Err(SecureError::Failed(format!(
                    "{what}: DNSSEC status could not be established (a key look-up failed)"
                )));
            }
            Ok(Secured {
                canonical: canonical_of(&answers, rtype),
                secure: !answers.is_empty() && answers.iter().all(|r| r.proof == Proof::Secure),
                records: answers
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect(),
                nxdomain: false,
            })
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(none))) => {
            let proofs: Vec<Proof> = none
                .authorities
                .iter()
                .flat_map(|a| a.iter())
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .map(|r| r.proof)
                .collect();
            if proofs.contains(&Proof::Bogus) {
                return Err(SecureError::Bogus(format!("{what}: bogus denial")));
            }
            if proofs.contains(&Proof::Indeterminate) && !proofs.contains(&Proof::Secure) {
                return Err(SecureError::Failed(format!(
                    "{what}: DNSSEC status of the denial could not be established"
                )));
            }
            Ok(Secured {
                records: Vec::new(),
                secure: !proofs.is_empty() && proofs.contains(&Proof::Secure),
                nxdomain: none.response_code == ResponseCode::NXDomain,
                canonical: None,
            })
        }
        Err(NetError::Dns(DnsError::Nsec { proof, .. })) => match proof {
            Proof::Insecure => Ok(Secured {
                records: Vec::new(),
                secure: false,
                nxdomain: false,
                canonical: None,
            }),
            other => Err(SecureError::Bogus(format!(
                "{what}: denial of existence is {other}"
            ))),
        },
        Err(NetError::Dns(DnsError::DnssecBogus)) => {
            Err(SecureError::Bogus(format!("{what}: bogus signature")))
        }
        Err(e) => Err(SecureError::Failed(format!("{what}: {e}"))),
    }
}

/// One query to the first server that answers, with AD and DO set; TCP when truncated.
async fn trust_ad(
    servers: &[SocketAddr],
    timeout: Duration,
    name: Name,
    rtype: RecordType,
) -> Result<Secured, SecureError> {
    let what = format!("{name} {rtype}");
    let mut query = Message::query();
    query.metadata.id = rand::random();
    query.metadata.recursion_desired = true;
    query.metadata.authentic_data = true;
    query.add_query(Query::query(name, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(true);
    query.set_edns(edns);
    let packet = query
        .to_vec()
        .map_err(|e| SecureError::Failed(format!("{what}: {e}")))?;
    let mut last = SecureError::Failed(format!("{what}: no resolver configured"));
    for server in servers {
        let reply = match tokio::time::timeout(timeout, exchange(*server, &packet)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                last = SecureError::Failed(format!("{what} via {server}: {e}"));
                continue;
            }
            Err(_) => {
                last = SecureError::Failed(format!("{what} via {server}: no answer in time"));
                continue;
            }
        };
        let Ok(reply) = Message::from_vec(&reply) else {
            last = SecureError::Failed(format!("{what} via {server}: unreadable answer"));
            continue;
        };
        if reply.metadata.id != query.metadata.id
            || reply.metadata.message_type != MessageType::Response
            || reply.metadata.op_code != OpCode::Query
            || reply.queries != query.queries
        {
            last = SecureError::Failed(format!("{what} via {server}: mismatched answer"));
            continue;
        }
        let secure = reply.metadata.authentic_data;
        return match reply.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(Secured {
                canonical: canonical_of(&reply.answers.iter().collect::<Vec<_>>(), rtype),
                records: reply
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect(),
                secure,
                nxdomain: reply.metadata.response_code == ResponseCode::NXDomain,
            }),
            // A validating resolver answers SERVFAIL for bogus data; it cannot be told apart
            // from other trouble, and both mean "do not use".
            code => Err(SecureError::Failed(format!("{what} via {server}: {code}"))),
        };
    }
    Err(last)
}

async fn exchange(server: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    // TC: ask again over TCP (RFC 7766).
    if n >= 3 && buf[2] & 0x02 != 0 {
        let mut stream = tokio::net::TcpStream::connect(server).await?;
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).await?;
        return Ok(reply);
    }
    Ok(buf)
}
