//! The optional authoritative DNS listener (`[dns_server] listen`, UDP and TCP): once the
//! operator delegates the include name (and, if they like, DKIM selector names) to herald with
//! an NS record, the include follows herald's configured addresses with no manual DNS edits.
//!
//! It is deliberately narrow: it answers only its own names, each as the apex of a tiny zone
//! (TXT, plus a synthesized SOA and NS so resolvers cache negative answers correctly), says
//! REFUSED for everything else, never recurses, rate-limits each source address and keeps
//! answers small (no additional section; UDP answers are truncated to the client's size).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::config::Config;
use crate::dns::records::{self, DEFAULT_TTL};
use crate::ratelimit::{Rate, RateLimiter};
use crate::signing::PublishedKey;

mod tcp;

/// Largest UDP answer offered to EDNS clients (the DNS flag day 2020 value).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// How long a TCP client may stay idle before it is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Most source addresses tracked by the rate limiter before idle ones are forgotten.
const MAX_TRACKED_SOURCES: usize = 10_000;
/// Most DNS-over-TCP connections open at once (TCP is the rare fallback for truncated
/// answers): a connection beyond it is closed at accept, so the listener never holds more
/// descriptors than this (counted in herald's start-up check, [`crate::inbound::fds`]).
pub(crate) const MAX_TCP_CONNECTIONS: usize = 64;

/// One name herald is authoritative for: the apex of a one-name zone.
struct OwnName {
    txt: Record,
    soa: Record,
    ns: Record,
}

/// Answers queries for herald's own names; REFUSED for anything else. Cloning shares the
/// zones and the rate limiter (the UDP server and the TCP listener answer as one).
#[derive(Clone)]
pub(crate) struct Authority {
    zones: SharedZones,
    limiter: Arc<RateLimiter<IpAddr>>,
}

/// What the listener serves; a reload swaps it whole, so a query sees either the old records
/// or the new ones, never a mix.
struct Zones {
    names: HashMap<LowerName, OwnName>,
    rate: Rate,
}

type SharedZones = Arc<RwLock<Arc<Zones>>>;

impl Authority {
    /// Builds the answers for `names` (owner name → TXT character-strings); `hostname` is the
    /// server named in the synthesized SOA and NS records.
    pub(crate) fn new(
        names: &[(String, Vec<String>)],
        hostname: &str,
        rate_limit: u32,
    ) -> anyhow::Result<Authority> {
        Ok(Authority {
            zones: Arc::new(RwLock::new(Arc::new(Zones::new(
                names, hostname, rate_limit,
            )?))),
            limiter: Arc::new(RateLimiter::new(MAX_TRACKED_SOURCES)),
        })
    }

    fn zones(&self) -> Arc<Zones> {
        self.zones.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Zones {
    fn new(
        names: &[(String, Vec<String>)],
        hostname: &str,
        rate_limit: u32,
    ) -> anyhow::Result<Zones> {
        let host = fqdn(hostname).with_context(|| format!("server.hostname {hostname:?}"))?;
        let rname = fqdn(&format!("hostmaster.{hostname}"))
            .with_context(|| format!("server.hostname {hostname:?}"))?;
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let mut map = HashMap::new();
        for (owner, strings) in names {
            let name = fqdn(owner).with_context(|| format!("DNS name {owner:?}"))?;
            let txt = Record::from_rdata(
                name.clone(),
                DEFAULT_TTL,
                RData::TXT(TXT::new(strings.clone())),
            );
            let soa = Record::from_rdata(
                name.clone(),
                DEFAULT_TTL,
                RData::SOA(SOA::new(
                    host.clone(),
                    rname.clone(),
                    serial,
                    3600,
                    600,
                    86400,
                    300,
                )),
            );
            let ns = Record::from_rdata(name.clone(), DEFAULT_TTL, RData::NS(NS(host.clone())));
            map.insert(LowerName::new(&name), OwnName { txt, soa, ns });
        }
        Ok(Zones {
            names: map,
            rate: Rate::per_second(rate_limit),
        })
    }

    /// The response code and records for one query, or `None` to answer REFUSED.
    fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Option<Answer> {
        if let Some(own) = self.names.get(qname) {
            let answers = match qtype {
                RecordType::TXT | RecordType::ANY => vec![own.txt.clone()],
                RecordType::SOA => vec![own.soa.clone()],
                RecordType::NS => vec![own.ns.clone()],
                _ => Vec::new(),
            };
            let authorities = if answers.is_empty() {
                vec![own.soa.clone()]
            } else {
                Vec::new()
            };
            return Some(Answer {
                code: ResponseCode::NoError,
                answers,
                authorities,
            });
        }
        // A name below one of ours does not exist; we are authoritative for that too.
        let (_, apex) = self.names.iter().find(|(apex, _)| apex.zone_of(qname))?;
        Some(Answer {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities: vec![apex.soa.clone()],
        })
    }
}

impl Authority {
    async fn answer<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let src = request.src();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = false;
        let mut edns = None;
        if let Some(req) = request.edns.as_ref() {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns = Some(e);
        }
        let builder = || {
            let mut b = MessageResponseBuilder::new(&request.queries, None);
            if let Some(e) = edns.as_ref() {
                b.edns(e);
            }
            b
        };

        let refuse = |code: ResponseCode, mut metadata: Metadata| {
            metadata.response_code = code;
            metadata
        };
        let zones = self.zones();
        let (metadata, answer) = if self.limiter.take(&src.ip(), zones.rate).is_err() {
            tracing::debug!(%src, "dns: rate limit exceeded, refusing");
            (refuse(ResponseCode::Refused, metadata), None)
        } else if request.metadata.op_code != OpCode::Query {
            (refuse(ResponseCode::NotImp, metadata), None)
        } else {
            match request.request_info() {
                Err(_) => (refuse(ResponseCode::FormErr, metadata), None),
                Ok(info) if info.query.query_class() != DNSClass::IN => {
                    (refuse(ResponseCode::Refused, metadata), None)
                }
                Ok(info) => match zones.lookup(info.query.name(), info.query.query_type()) {
                    None => {
                        tracing::debug!(%src, name = %info.query.name(), "dns: foreign name, refused");
                        (refuse(ResponseCode::Refused, metadata), None)
                    }
                    Some(a) => {
                        metadata.authoritative = true;
                        metadata.response_code = a.code;
                        (metadata, Some(a))
                    }
                },
            }
        };
        let empty: [Record; 0] = [];
        let result = match &answer {
            Some(a) => {
                let response = builder().build(
                    metadata,
                    a.answers.iter(),
                    a.authorities.iter(),
                    empty.iter(),
                    empty.iter(),
                );
                handle.send_response(response).await
            }
            None => {
                let response = builder().build_no_records(metadata);
                handle.send_response(response).await
            }
        };
        match result {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(%src, error = %e, "dns: could not send the answer");
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: m,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
}

// `RequestHandler` is declared with `#[async_trait]`; this is its expanded form, written out so
// that herald needs no extra macro crate.
impl RequestHandler for Authority {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.answer(request, response_handle))
    }
}

fn fqdn(name: &str) -> anyhow::Result<Name> {
    let n = records::normalize_name(name);
    Name::from_ascii(format!("{n}."))
        .map_err(|e| anyhow::anyhow!("{name:?} is not a valid DNS name: {e}"))
}

/// Records for a reloaded configuration, ready to be served ([`DnsListener::prepare_reload`]).
pub(crate) struct NextZones(Arc<Zones>);

/// A running listener; dropping it stops answering.
pub(crate) struct DnsListener {
    /// The UDP server: held, never read (dropping it stops answering).
    _server: Server<Authority>,
    zones: SharedZones,
    /// The address it answers on (UDP and TCP).
    pub local_addr: SocketAddr,
    /// The TCP accept loop (its connections end with it).
    tcp: tokio::task::JoinHandle<()>,
}

impl Drop for DnsListener {
    fn drop(&mut self) {
        self.tcp.abort();
    }
}

impl DnsListener {
    /// Builds the records of a reloaded configuration (the SPF include, DKIM selectors, the
    /// rate limit), changing nothing yet; [`DnsListener::apply_reload`] serves them.
    pub(crate) fn prepare_reload(
        &self,
        cfg: &Config,
        keys: &[PublishedKey],
    ) -> anyhow::Result<NextZones> {
        let names = records::served_names(cfg, keys);
        let zones = Zones::new(&names, &cfg.server.hostname, cfg.dns_server.rate_limit)?;
        Ok(NextZones(Arc::new(zones)))
    }

    /// Serves `next` from the next query on.
    pub(crate) fn apply_reload(&self, next: NextZones) {
        *self.zones.write().unwrap_or_else(|p| p.into_inner()) = next.0;
    }
}

/// The DNS listen sockets (UDP and TCP on one port), bound but not yet answering.
pub(crate) struct DnsSockets {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    local_addr: SocketAddr,
}

/// Binds `[dns_server] listen` when set, before anything else starts (a busy port fails
/// start-up fast); [`start`] answers on the sockets.
pub(crate) async fn bind(cfg: &Config) -> anyhow::Result<Option<DnsSockets>> {
    let Some(addr) = cfg.dns_server.listen else {
        return Ok(None);
    };
    bind_addr(addr).await.map(Some)
}

/// Starts answering on `sockets` (from [`bind`]; `None` when not configured), serving the
/// include and the DKIM selectors of `keys`. Keep the returned value alive for as long as it
/// should answer.
pub(crate) async fn start(
    cfg: &Config,
    keys: &[PublishedKey],
    sockets: Option<DnsSockets>,
) -> anyhow::Result<Option<DnsListener>> {
    let Some(sockets) = sockets else {
        return Ok(None);
    };
    let names = records::served_names(cfg, keys);
    if names.is_empty() {
        tracing::warn!(
            "[dns_server] listen is set but there is nothing to serve: set [spf] include"
        );
    }
    let authority = Authority::new(&names, &cfg.server.hostname, cfg.dns_server.rate_limit)?;
    let listener = serve(sockets, authority);
    tracing::info!(
        addr = %listener.local_addr,
        names = %names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" "),
        "dns: authoritative listener answering over UDP and TCP"
    );
    Ok(Some(listener))
}

/// Binds UDP and TCP on `addr` (the same port for both, even when `addr` asks for port 0).
async fn bind_addr(addr: SocketAddr) -> anyhow::Result<DnsSockets> {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("[dns_server] listen: cannot bind UDP {addr}"))?;
    let local_addr = udp
        .local_addr()
        .with_context(|| format!("[dns_server] listen: UDP {addr}"))?;
    let tcp = tokio::net::TcpListener::bind(local_addr)
        .await
        .with_context(|| format!("[dns_server] listen: cannot bind TCP {local_addr}"))?;
    Ok(DnsSockets {
        udp,
        tcp,
        local_addr,
    })
}

/// Answers for `authority` on the bound sockets: UDP through hickory's server, TCP through
/// herald's own accept loop ([`tcp::serve`]), which caps the connections.
fn serve(sockets: DnsSockets, authority: Authority) -> DnsListener {
    let zones = authority.zones.clone();
    let tcp = tokio::spawn(tcp::serve(sockets.tcp, authority.clone()));
    let mut server = Server::new(authority);
    server.register_socket(sockets.udp);
    DnsListener {
        _server: server,
        zones,
        local_addr: sockets.local_addr,
        tcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_refuses() {
        let l: RateLimiter<IpAddr> = RateLimiter::new(MAX_TRACKED_SOURCES);
        let allow = |ip: IpAddr, n| l.take(&ip, Rate::per_second(n)).is_ok();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| allow(ip, 3)));
        assert!(!allow(ip, 3));
        assert!(allow("192.0.2.2".parse().unwrap(), 3));
        assert!(allow(ip, 0));
    }

    #[test]
    fn answers_only_own_names() {
        let a = Authority::new(
            &[("_spf.relay.example.net".into(), vec!["v=spf1 -all".into()])],
            "herald.example.net",
            0,
        )
        .unwrap();
        let own = LowerName::new(&Name::from_ascii("_SPF.relay.example.net.").unwrap());
        let got = a.zones().lookup(&own, RecordType::TXT).unwrap();
        assert_eq!((got.code, got.answers.len()), (ResponseCode::NoError, 1));
        let got = a.zones().lookup(&own, RecordType::A).unwrap();
        assert_eq!((got.answers.len(), got.authorities.len()), (0, 1));
        let below = LowerName::new(&Name::from_ascii("x._spf.relay.example.net.").unwrap());
        assert_eq!(
            a.zones().lookup(&below, RecordType::TXT).unwrap().code,
            ResponseCode::NXDomain
        );
        let foreign = LowerName::new(&Name::from_ascii("relay.example.net.").unwrap());
        assert!(a.zones().lookup(&foreign, RecordType::TXT).is_none());
    }
}
