//! An authoritative DNS server for test zones, answering real DNS packets over UDP and TCP on one
//! loopback address. Herald is pointed at it with `[dns] servers = ["<addr>"]`. Records change
//! at run time, so a test can publish, replace or withdraw a record between two steps.
//!
//! Semantics: names are case-insensitive, with or without a trailing dot. A name with no records
//! at all (and none below it) answers NXDOMAIN; a name with records but none of the asked type,
//! or with records only below it, answers NOERROR with an empty answer; both carry a synthetic
//! SOA in the authority section (RFC 2308). Answers have TTL 0 unless [`DnsServer::set_ttl`].
//! UDP answers larger than the client's EDNS payload size (512 without EDNS) are truncated (TC)
//! so the client retries over TCP, as on the Internet.
//!
//! DNSSEC ([`DnsServer::enable_dnssec`]): the whole namespace becomes one zone signed at the
//! root with a key made at test time, whose DNSKEY the test hands herald as its trust anchor.
//! Queries with the DO bit get RRSIGs on every answer and, for a missing name or type, a signed
//! NSEC at the asked name proving it ("black lies", as some real signers do: NOERROR/NODATA).
//! [`DnsServer::corrupt_signatures`] makes the signatures at a name bogus. Without DO (mail-auth's
//! resolver) answers are as before. [`DnsServer::act_as_validating_resolver`] instead sets the
//! AD bit as a validating resolver would, for herald's trust-AD mode.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TLSA, TXT};
use hickory_proto::rr::{Name, RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::thread::{ServerThread, stopped};

#[path = "dns/misbehave.rs"]
mod misbehave;
#[path = "dns/signing.rs"]
mod signing;
use signing::{Dnssec, sign_response};

/// Default TTL of every answer: 0, "do not cache", because tests change records and expect the
/// next look-up to see the change. [`DnsServer::set_ttl`] changes it.
const DEFAULT_TTL: u32 = 0;

#[derive(Default)]
struct Zone {
    /// Lower-case name without trailing dot → its records.
    records: HashMap<String, Vec<RData>>,
    /// TTL of answers and of negative answers (SOA minimum).
    ttl: u32,
    /// Names answered with SERVFAIL whatever their records.
    failing: std::collections::HashSet<String>,
}

impl Zone {
    /// Whether `key` is an empty non-terminal: no records of its own, but names below it
    /// (e.g. `_domainkey.example.test` when selectors are published). Such names answer
    /// NOERROR/empty, not NXDOMAIN (RFC 8020 would make NXDOMAIN mean "nothing below").
    fn has_descendants(&self, key: &str) -> bool {
        let suffix = format!(".{key}");
        self.records.keys().any(|k| k.ends_with(&suffix))
    }
}

/// The validating-resolver mode: AD set on answers, except for names marked insecure.
#[derive(Default)]
struct AdMode {
    on: bool,
    insecure: std::collections::HashSet<String>,
}

struct Shared {
    dnssec: Mutex<Option<Dnssec>>,
    ad: Mutex<AdMode>,
    zone: Mutex<Zone>,
    queries: AtomicUsize,
    /// (lower-case name without trailing dot, type) of every question, in order.
    asked: Mutex<Vec<(String, RecordType)>>,
    /// What it does wrong on purpose ([`misbehave`]).
    misbehave: Mutex<misbehave::Misbehaviour>,
}

/// A running authoritative test DNS server; stops when dropped.
pub struct DnsServer {
    /// The address it listens on, for UDP and TCP alike.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _thread: ServerThread,
}

/// Canonical key for a name: lower case, no trailing dot; Unicode names (IDN) in their
/// ASCII (punycode) form, as they travel in DNS packets.
fn key(name: &str) -> String {
    let ascii = if name.is_ascii() {
        name.to_string()
    } else {
        Name::from_utf8(name)
            .map(|n| n.to_ascii())
            .unwrap_or_else(|_| name.to_string())
    };
    ascii.trim_end_matches('.').to_ascii_lowercase()
}

/// A fully qualified name from text (ASCII or Unicode).
fn name(text: &str) -> Name {
    let mut n = Name::from_utf8(text).expect("valid DNS name");
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
            dnssec: Mutex::new(None),
            ad: Mutex::new(AdMode::default()),
            zone: Mutex::new(Zone {
                ttl: DEFAULT_TTL,
                ..Zone::default()
            }),
            queries: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
            misbehave: Mutex::default(),
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

    /// Adds a CNAME record `name. CNAME target.` (answered for every type asked at `name`).
    pub fn add_cname(&self, name: &str, target: &str) {
        self.add(
            name,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(self::name(target))),
        );
    }

    /// Adds an A record.
    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.add(name, RData::A(A(ip)));
    }

    /// Adds an AAAA record.
    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.add(name, RData::AAAA(AAAA(ip)));
    }

    /// Adds an A or AAAA record, whichever `ip` is (e.g. a sink's `addr().ip()`).
    pub fn add_ip(&self, name: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add_a(name, v4),
            IpAddr::V6(v6) => self.add_aaaa(name, v6),
        }
    }

    /// Adds the PTR record of `ip` (at its `in-addr.arpa` / `ip6.arpa` name) pointing at `host`.
    pub fn add_ptr(&self, ip: IpAddr, host: &str) {
        let reverse = Name::from(ip).to_ascii();
        self.add(
            &reverse,
            RData::PTR(hickory_proto::rr::rdata::PTR(name(host))),
        );
    }

    /// Publishes an MX host in one step: `domain MX preference exchange` and `exchange A ip`.
    pub fn add_mx_host(&self, domain: &str, preference: u16, exchange: &str, ip: IpAddr) {
        self.add_mx(domain, preference, exchange);
        self.add_ip(exchange, ip);
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

    /// Makes every question about `name` answer SERVFAIL (a temporary DNS failure), until
    /// [`DnsServer::unfail`]. Records at the name are kept.
    pub fn fail(&self, name: &str) {
        let mut zone = self.shared.zone.lock().expect("zone lock");
        zone.failing.insert(key(name));
    }

    /// Ends [`DnsServer::fail`] for `name`.
    pub fn unfail(&self, name: &str) {
        let mut zone = self.shared.zone.lock().expect("zone lock");
        zone.failing.remove(&key(name));
    }

    /// Adds a TLSA record (`usage selector matching data`, e.g. 3 1 1 sha256-of-spki) at
    /// `name` (`_25._tcp.mx.example.test`).
    pub fn add_tlsa(&self, name: &str, usage: u8, selector: u8, matching: u8, data: Vec<u8>) {
        use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
        self.add(
            name,
            RData::TLSA(TLSA::new(
                CertUsage::from(usage),
                Selector::from(selector),
                Matching::from(matching),
                data,
            )),
        );
    }

    /// Signs the whole namespace with a fresh key (one zone at the root) and returns the
    /// trust-anchor file text for herald's `[dane] trust_anchor` (`. IN DNSKEY 257 3 13 …`).
    pub fn enable_dnssec(&self) -> String {
        let (dnssec, anchor) = Dnssec::generate();
        *self.shared.dnssec.lock().expect("dnssec") = Some(dnssec);
        // The signed zone's apex SOA (validators probe it).
        let ttl = self.shared.zone.lock().expect("zone lock").ttl;
        let soa = soa_for(&Name::root(), ttl).data;
        self.add(".", soa);
        anchor
    }

    /// Makes `apex` and everything below it an unsigned zone, delegated from the signed root
    /// without a DS (its NS is published; the root proves the DS absent with a signed NSEC):
    /// validators find its answers insecure, as for any unsigned domain on the Internet.
    pub fn add_unsigned_zone(&self, apex: &str) {
        self.add(
            apex,
            RData::NS(hickory_proto::rr::rdata::NS(name(&format!("ns.{apex}")))),
        );
        if let Some(d) = self.shared.dnssec.lock().expect("dnssec").as_mut() {
            d.unsigned.push(key(apex));
        }
    }

    /// Serves every signature at `name` corrupted, so validation finds it bogus.
    pub fn corrupt_signatures(&self, name: &str) {
        if let Some(d) = self.shared.dnssec.lock().expect("dnssec").as_mut() {
            d.corrupt.insert(key(name));
        }
    }

    /// Answers with the AD bit set (to queries asking with AD or DO), as a validating resolver
    /// does for data it validated; names passed to [`DnsServer::mark_insecure`] get no AD.
    pub fn act_as_validating_resolver(&self) {
        self.shared.ad.lock().expect("ad").on = true;
    }

    /// In validating-resolver mode, answers about `name` carry no AD bit (an unsigned zone).
    pub fn mark_insecure(&self, name: &str) {
        self.shared
            .ad
            .lock()
            .expect("ad")
            .insecure
            .insert(key(name));
    }

    /// Sets the TTL of answers from now on (default 0: never cached).
    pub fn set_ttl(&self, ttl: u32) {
        self.shared.zone.lock().expect("zone lock").ttl = ttl;
    }

    /// How many queries (UDP and TCP) the server has answered.
    pub fn queries(&self) -> usize {
        self.shared.queries.load(Ordering::SeqCst)
    }

    /// Every question asked so far, in order: (lower-case name without trailing dot, type).
    /// For assertions like "herald looked up `_mta-sts.<domain>` TXT".
    pub fn asked(&self) -> Vec<(String, RecordType)> {
        self.shared.asked.lock().expect("asked").clone()
    }

    /// Whether `name` was asked for with type `rtype` (`"MX"`, `"TXT"`, `"A"`, ...).
    pub fn was_asked(&self, name: &str, rtype: &str) -> bool {
        let k = key(name);
        self.asked()
            .iter()
            .any(|(n, t)| *n == k && t.to_string().eq_ignore_ascii_case(rtype))
    }

    /// Never answers questions about `name` (of type `rtype`, or any type): the client times
    /// out, as behind a resolver that cannot reach that zone's servers.
    pub fn time_out(&self, name: &str, rtype: Option<RecordType>) {
        self.misbehave().silence(key(name), rtype);
    }

    /// Never answers questions of type `rtype` (e.g. every DNSKEY or DS look-up).
    pub fn time_out_type(&self, rtype: RecordType) {
        self.misbehave().silence_type(rtype);
    }

    /// Strips every DNSSEC record (RRSIG, NSEC, DNSKEY, DS) from its answers, as a resolver or
    /// middlebox that does not pass them on.
    pub fn strip_dnssec(&self) {
        self.misbehave().strip_dnssec = true;
    }

    /// Answers SERVFAIL to every other question about `name`.
    pub fn flaky(&self, name: &str) {
        self.misbehave().make_flaky(key(name));
    }

    /// Truncates every UDP answer (TC=1, no records): clients must ask again over TCP.
    pub fn truncate_every_udp_answer(&self) {
        self.misbehave().truncate_udp = true;
    }

    /// Answers every question about `name` with an A record for another name, `decoy`, at
    /// `ip`: a resolver (or spoofer) answering the wrong question.
    pub fn answer_for_wrong_name(&self, name: &str, decoy: &str, ip: Ipv4Addr) {
        let decoy = self::name(decoy);
        self.misbehave().answer_for_wrong_name(key(name), decoy, ip);
    }

    /// Ends every misbehaviour switched on above.
    pub fn behave(&self) {
        *self.misbehave() = misbehave::Misbehaviour::default();
    }

    fn misbehave(&self) -> std::sync::MutexGuard<'_, misbehave::Misbehaviour> {
        self.shared.misbehave.lock().expect("misbehave lock")
    }

    /// `[dns] servers` value for herald's config.
    pub fn config_value(&self) -> toml::Value {
        toml::Value::Array(vec![toml::Value::String(self.addr.to_string())])
    }
}

/// Builds the answer to one query packet; `None` for packets that are not parseable queries.
fn answer(shared: &Shared, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
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
    let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    let qname = query.name().clone();
    let k = key(&qname.to_ascii());
    shared
        .asked
        .lock()
        .expect("asked")
        .push((k.clone(), query.query_type()));
    let flaky = {
        let mut m = shared.misbehave.lock().expect("misbehave");
        if m.is_silent(&k, query.query_type()) {
            return None;
        }
        m.flaky_now(&k)
    };
    let zone = shared.zone.lock().expect("zone lock");
    let ttl = zone.ttl;
    let mut present: Vec<RecordType> = zone
        .records
        .get(&k)
        .map(|rs| rs.iter().map(|r| r.record_type()).collect())
        .unwrap_or_default();
    present.sort();
    present.dedup();
    match zone.records.get(&k) {
        _ if zone.failing.contains(&k) || flaky => {
            response.metadata.response_code = ResponseCode::ServFail;
        }
        None if zone.has_descendants(&k) => {
            response.add_authority(soa_for(&qname, ttl));
        }
        None => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa_for(&qname, ttl));
        }
        Some(records) => {
            let mut matching: Vec<Record> = records
                .iter()
                .filter(|r| {
                    query.query_type() == RecordType::ANY || r.record_type() == query.query_type()
                })
                .map(|r| Record::from_rdata(qname.clone(), ttl, r.clone()))
                .collect();
            // A CNAME answers for every type (one hop, as far as this server's zone goes).
            if matching.is_empty()
                && let Some(RData::CNAME(target)) = records
                    .iter()
                    .find(|r| r.record_type() == RecordType::CNAME)
            {
                matching.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(target.clone()),
                ));
                let target_name = target.0.clone();
                if let Some(at_target) = zone.records.get(&key(&target_name.to_ascii())) {
                    matching.extend(
                        at_target
                            .iter()
                            .filter(|r| r.record_type() == query.query_type())
                            .map(|r| Record::from_rdata(target_name.clone(), ttl, r.clone())),
                    );
                }
            }
            if matching.is_empty() {
                response.add_authority(soa_for(&qname, ttl));
            }
            response.add_answers(matching);
        }
    }
    drop(zone);
    {
        let ad = shared.ad.lock().expect("ad");
        if ad.on
            && (request.metadata.authentic_data || dnssec_ok)
            && response.metadata.response_code != ResponseCode::ServFail
            && !ad.insecure.contains(&k)
        {
            response.metadata.authentic_data = true;
        }
    }
    if dnssec_ok && response.metadata.response_code != ResponseCode::ServFail {
        let dnssec = shared.dnssec.lock().expect("dnssec");
        if let Some(d) = dnssec.as_ref() {
            let qtype = query.query_type();
            match d.unsigned_zone_of(&k) {
                // The root's signed proof that the delegation has no DS.
                Some(apex) if apex == k && qtype == RecordType::DS => {
                    sign_response(d, &mut response, &qname, qtype, &k, &present, ttl)
                }
                Some(_) => {}
                None => sign_response(d, &mut response, &qname, qtype, &k, &present, ttl),
            }
        }
    }
    let truncate = {
        let m = shared.misbehave.lock().expect("misbehave");
        m.spoil(&k, &mut response);
        m.truncate_udp
    };
    let bytes = response.to_vec().ok()?;
    if udp && (bytes.len() > payload || truncate) {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// A synthetic SOA for the negative answers (zone apex = the parent of the asked name).
pub(super) fn soa_for(qname: &Name, ttl: u32) -> Record {
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
        ttl,
    );
    Record::from_rdata(apex, ttl, RData::SOA(soa))
}

async fn serve_udp(socket: tokio::net::UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&shared, &buf[..n], true) {
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
                let Some(reply) = answer(&shared, &packet, false) else {
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
