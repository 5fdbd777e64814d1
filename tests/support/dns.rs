//! An authoritative DNS server for test zones, answering real DNS packets over UDP and TCP on one
//! loopback address. Herald is pointed at it with `[dns] servers = ["<addr>"]`. Records change
//! at run time, so a test can publish, replace or withdraw a record between two steps.
//!
//! Semantics: names are case-insensitive, with or without a trailing dot. A name with no records
//! at all answers NXDOMAIN; a name with records but none of the asked type answers NOERROR with
//! an empty answer and a synthetic SOA in the authority section (negative caching per RFC 2308).
//! UDP answers larger than the client's EDNS payload size (512 without EDNS) are truncated (TC)
//! so the client retries over TCP, as on the Internet.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::thread::{ServerThread, stopped};

/// TTL of every answer (short: tests change records).
const TTL: u32 = 1;

#[derive(Default)]
struct Zone {
    /// Lower-case name without trailing dot → its records.
    records: HashMap<String, Vec<RData>>,
}

struct Shared {
    zone: Mutex<Zone>,
    queries: AtomicUsize,
}

/// A running authoritative test DNS server; stops when dropped.
pub struct DnsServer {
    /// The address it listens on, for UDP and TCP alike.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _thread: ServerThread,
}

/// Canonical key for a name: lower case, no trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(text: &str) -> Name {
    let mut n = Name::from_ascii(text).expect("valid DNS name");
    n.set_fqdn(true);
    n
}

impl DnsServer {
    /// Starts a server on a random 127.x.y.z with one port free for both UDP and TCP.
    pub fn start() -> DnsServer {
        let (tcp, udp) = loop {
            let addr = super::free_addr();
            let Ok(tcp) = std::net::TcpListener::bind(addr) else {
                continue;
            };
            if let Ok(udp) = std::net::UdpSocket::bind(addr) {
                break (tcp, udp);
            }
        };
        let addr = tcp.local_addr().expect("local addr");
        tcp.set_nonblocking(true).expect("nonblocking");
        udp.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone::default()),
            queries: AtomicUsize::new(0),
        });
        let shared2 = shared.clone();
        let thread = ServerThread::spawn("test-dns", move |stop| {
            let tcp = tokio::net::TcpListener::from_std(tcp).expect("tokio tcp");
            let udp = tokio::net::UdpSocket::from_std(udp).expect("tokio udp");
            async move {
                tokio::select! {
                    _ = serve_udp(udp, shared2.clone()) => {}
                    _ = serve_tcp(tcp, shared2) => {}
                    _ = stopped(stop) => {}
                }
            }
        });
        DnsServer {
            addr,
            shared,
            _thread: thread,
        }
    }

    fn add(&self, name: &str, rdata: RData) {
        let mut zone = self.shared.zone.lock().expect("zone lock");
        zone.records.entry(key(name)).or_default().push(rdata);
    }

    /// Adds an MX record `domain. MX preference exchange.`.
    pub fn add_mx(&self, domain: &str, preference: u16, exchange: &str) {
        self.add(domain, RData::MX(MX::new(preference, name(exchange))));
    }

    /// Adds the RFC 7505 null MX `domain. MX 0 .` ("this domain accepts no mail").
    pub fn add_null_mx(&self, domain: &str) {
        self.add(domain, RData::MX(MX::new(0, Name::root())));
    }

    /// Adds an A record.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.add(name, RData::AAAA(AAAA(ip)));
    }

    /// Adds a TXT record; `text` is split into 255-byte character-strings (as DKIM keys must
    /// be), which resolvers join back.
    pub fn add_txt(&self, name: &str, text: &str) {
        let chunks: Vec<&[u8]> = if text.is_empty() {
            vec![b""]
        } else {
            text.as_bytes().chunks(255).collect()
        };
        self.add(name, RData::TXT(TXT::from_bytes(chunks)));
    }

    /// Replaces every TXT record at `name` with one holding `text`.
    pub fn set_txt(&self, name: &str, text: &str) {
        {
            let mut zone = self.shared.zone.lock().expect("zone lock");
            if let Some(records) = zone.records.get_mut(&key(name)) {
                records.retain(|r| r.record_type() != RecordType::TXT);
            }
        }
        self.add_txt(name, text);
    }

    /// Removes every record at `name` (it then answers NXDOMAIN).
    pub fn remove(&self, name: &str) {
        let mut zone = self.shared.zone.lock().expect("zone lock");
        zone.records.remove(&key(name));
    }

    /// Removes the records of one type at `name` (the name keeps its other records).
    pub fn remove_type(&self, name: &str, rtype: RecordType) {
        let mut zone = self.shared.zone.lock().expect("zone lock");
        if let Some(records) = zone.records.get_mut(&key(name)) {
            records.retain(|r| r.record_type() != rtype);
            if records.is_empty() {
                zone.records.remove(&key(name));
            }
        }
    }

    /// How many queries (UDP and TCP) the server has answered.
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// `[dns] servers` value for herald's config.
    pub fn config_value(&self) -> toml::Value {
        toml::Value::Array(vec![toml::Value::String(self.addr.to_string())])
    }
}

/// Builds the answer to one query packet; `None` for packets that are not parseable queries.
fn answer(shared: &Shared, packet: &[u8], max_len: Option<usize>) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    shared.queries.fetch_add(1, Ordering::SeqCst);
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_queries(request.queries.iter().cloned());
    let mut payload = 512usize;
    if let Some(edns) = &request.edns {
        let mut e = Edns::new();
        e.set_max_payload(edns.max_payload().max(512));
        payload = edns.max_payload().max(512) as usize;
        response.set_edns(e);
    }
    if request.metadata.op_code != OpCode::Query || request.queries.len() != 1 {
        response.metadata.response_code = ResponseCode::NotImp;
        return response.to_vec().ok();
    }
    let query = &request.queries[0];
    let qname = query.name().clone();
    let k = key(&qname.to_ascii());
    let zone = shared.zone.lock().expect("zone lock");
    match zone.records.get(&k) {
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa_for(&qname));
        }
        Some(records) => {
            let matching: Vec<Record> = records
                .iter()
                .filter(|r| {
                    query.query_type() == RecordType::ANY || r.record_type() == query.query_type()
                })
                .map(|r| Record::from_rdata(qname.clone(), TTL, r.clone()))
                .collect();
            if matching.is_empty() {
                response.add_authority(soa_for(&qname));
            }
            response.add_answers(matching);
        }
    }
    drop(zone);
    let bytes = response.to_vec().ok()?;
    match max_len {
        Some(_) if bytes.len() > payload => response.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}

/// A synthetic SOA for the negative answers (zone apex = the parent of the asked name).
fn soa_for(qname: &Name) -> Record {
    let apex = if qname.num_labels() > 1 {
        qname.base_name()
    } else {
        qname.clone()
    };
    let soa = SOA::new(
        name("ns.test"),
        name("hostmaster.test"),
        1,
        3600,
        600,
        86400,
        TTL,
    );
    Record::from_rdata(apex, TTL, RData::SOA(soa))
}

async fn serve_udp(socket: tokio::net::UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&shared, &buf[..n], Some(512)) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            // RFC 7766: several length-prefixed queries may share one connection.
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
                if stream.read_exact(&mut packet).await.is_err() {
                    return;
                }
                let Some(reply) = answer(&shared, &packet, None) else {
                    return;
                };
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}
