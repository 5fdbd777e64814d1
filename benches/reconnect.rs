//! Connection-per-message benchmark (not a test): the way most apps send — PHP mailers,
//! Django's `send_mail`, ActionMailer, monitoring tools — a new connection for every message:
//! connect, TLS (STARTTLS on the submission port, or implicit TLS), EHLO, AUTH PLAIN, one 2 KB
//! message, QUIT. `BENCH_CLIENTS` (50) clients do this concurrently.
//!
//! End to end: herald signs, spools and delivers each message to a loopback MX found through
//! a loopback DNS server (the sink of `benches/delivery.rs`). For each scenario it starts a
//! fresh herald (release build), warms up with one connection per client (untimed, and
//! delivered before the clock starts: it fills the AUTH cache and the clients' TLS session
//! stores), then prints messages per second from the first connection to the last delivery,
//! p50/p99 from connect to the `250` after DATA, herald's CPU time per message over the same
//! span (utime + stime from /proc/<pid>/stat, before and after) and the benchmark's own CPU
//! per message (clients and MX, to show they are not the limit).
//!
//! `cargo bench --bench reconnect` runs every scenario:
//! - `before`: STARTTLS, `smtp.auth_cache_ttl = "0s"`, clients without a TLS session store
//!   (every connection pays argon2 and a full handshake);
//! - `starttls`, `starttls-resume`: the AUTH cache on (the default), clients without / with a
//!   session store (as an OpenSSL-based client that keeps a session cache does);
//! - `implicit`, `implicit-resume`: the same on the implicit-TLS port.
//!
//! Knobs: BENCH_SCENARIOS (comma-separated names), BENCH_CLIENTS (50), BENCH_MESSAGES (2000
//! per scenario), BENCH_BEFORE_MESSAGES (300, for `before`), BENCH_CERT (`ecdsa` P-256, or
//! `rsa` 2048 like a Let's Encrypt RSA certificate), BENCH_KEY (DKIM: `rsa` 2048, or
//! `ed25519`), BENCH_KX (client key exchange: `default` = X25519MLKEM768 first, or `x25519`).

mod common;
#[allow(dead_code)]
#[path = "../tests/support/dns.rs"]
mod dns;
#[allow(dead_code)]
#[path = "../tests/support/thread.rs"]
mod thread;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{HandshakeKind, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use common::sink::{Times, start_mx};
use common::{HOST, cpu_time, env_num, ms, percentile, read_reply};

/// Used by the included DNS server to pick its address.
fn free_addr() -> SocketAddr {
    common::free_addr()
}
const SIZE: usize = 2048;

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    implicit: bool,
    auth_cache: bool,
    resume: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "before",
        implicit: false,
        auth_cache: false,
        resume: false,
    },
    Scenario {
        name: "starttls",
        implicit: false,
        auth_cache: true,
        resume: false,
    },
    Scenario {
        name: "starttls-resume",
        implicit: false,
        auth_cache: true,
        resume: true,
    },
    Scenario {
        name: "implicit",
        implicit: true,
        auth_cache: true,
        resume: false,
    },
    Scenario {
        name: "implicit-resume",
        implicit: true,
        auth_cache: true,
        resume: true,
    },
];

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The server certificate (self-signed, trusted directly by the clients) and its key, PEM.
fn certificate(kind: &str) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let key = match kind {
        "rsa" => rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
        _ => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
    }
    .expect("generate certificate key");
    let params = rcgen::CertificateParams::new(vec![HOST.to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("self-sign");
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A running herald and the port this scenario's clients use.
struct Herald {
    process: common::Herald,
    addr: SocketAddr,
}

/// The loopback DNS and MX that deliveries of one scenario go to.
struct Destination {
    dns: dns::DnsServer,
    mx: SocketAddr,
    times: Arc<Times>,
}

impl Destination {
    fn new(total: usize) -> Destination {
        let dns = dns::DnsServer::start();
        // Real MX records live minutes to hours; herald's resolver caches them as it would.
        dns.set_ttl(300);
        dns.add_mx("example.org", 10, "mx.example.org");
        dns.add_a("mx.example.org", Ipv4Addr::new(127, 0, 0, 1));
        let times = Times::new(total);
        let mx = start_mx(times.clone());
        Destination { dns, mx, times }
    }

    /// herald's `[dns]` and `[delivery]` sections pointing at it.
    fn config(&self) -> String {
        format!(
            "[dns]\nservers = [\"{}\"]\n[delivery]\nport = {}\n",
            self.dns.addr,
            self.mx.port()
        )
    }

    /// Waits until the MX has received `n` messages in all (warm-up included).
    fn wait_received(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.times.received_all.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "warm-up messages not delivered");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn start_herald(dir: &Path, s: Scenario, dkim: &str, to: &Destination) -> Herald {
    let (submission, submissions) = (free_addr(), free_addr());
    let ttl = if s.auth_cache { "15m" } else { "0s" };
    let config = common::config(
        dir,
        &dir.join(s.name),
        &format!(
            "submission = \"{submission}\"\nsubmissions = \"{submissions}\"\n\
             auth_cache_ttl = \"{ttl}\"\n"
        ),
        dkim,
        &to.config(),
    );
    let config_path = dir.join(format!("{}.toml", s.name));
    Herald {
        process: common::Herald::start(&config_path, &config, None, false),
        addr: if s.implicit { submissions } else { submission },
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(s: &mut BufStream<S>, line: &[u8]) -> u16 {
    s.write_all(line).await.expect("write");
    s.flush().await.expect("flush");
    read_reply(s).await
}

/// What one connection saw.
struct Outcome {
    connect_to_250: Duration,
    resumed: bool,
    tls: String,
}

/// One message on one new connection: connect, TLS, EHLO, AUTH PLAIN, MAIL/RCPT/DATA
/// (pipelined), the message, QUIT.
async fn one_message(
    addr: SocketAddr,
    implicit: bool,
    tls: Arc<rustls::ClientConfig>,
    i: usize,
) -> Outcome {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from(HOST).expect("name");
    let connector = TlsConnector::from(tls);
    let tls = if implicit {
        connector.connect(name, tcp).await.expect("TLS")
    } else {
        let mut s = BufStream::new(tcp);
        assert_eq!(read_reply(&mut s).await, 220, "greeting");
        assert_eq!(command(&mut s, b"EHLO bench.test\r\n").await, 250);
        assert_eq!(command(&mut s, b"STARTTLS\r\n").await, 220);
        connector
            .connect(name, s.into_inner())
            .await
            .expect("STARTTLS")
    };
    let (resumed, version) = describe(&tls);
    let mut s = BufStream::new(tls);
    if implicit {
        assert_eq!(read_reply(&mut s).await, 220, "greeting");
    }
    assert_eq!(command(&mut s, b"EHLO bench.test\r\n").await, 250);
    assert_eq!(
        command(&mut s, common::auth_plain().as_bytes()).await,
        235,
        "AUTH"
    );
    s.write_all(b"MAIL FROM:<bench@example.test>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n")
        .await
        .expect("write");
    s.flush().await.expect("flush");
    for want in [250, 250, 354] {
        assert_eq!(read_reply(&mut s).await, want);
    }
    s.write_all(common::message(i, SIZE).as_bytes())
        .await
        .expect("write");
    assert_eq!(command(&mut s, b".\r\n").await, 250, "message accepted");
    let connect_to_250 = start.elapsed();
    assert_eq!(command(&mut s, b"QUIT\r\n").await, 221);
    Outcome {
        connect_to_250,
        resumed,
        tls: version,
    }
}

fn describe(tls: &TlsStream<TcpStream>) -> (bool, String) {
    let conn = tls.get_ref().1;
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let version = conn
        .protocol_version()
        .map_or("?".into(), |v| format!("{v:?}"));
    let kx = conn
        .negotiated_key_exchange_group()
        .map_or("?".into(), |g| format!("{:?}", g.name()));
    (resumed, format!("{version} {kx}"))
}

fn client_config(
    root: rustls::pki_types::CertificateDer<'static>,
    resume: bool,
    kx: &str,
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if kx == "x25519" {
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    }
    let mut roots = RootCertStore::empty();
    roots.add(root).expect("trust the server certificate");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // One session store shared by every client, like one app process with a session cache.
    cfg.resumption = if resume {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Arc::new(cfg)
}

/// Runs `total` messages (indices from `first` on) over `clients` concurrent connection
/// loops; returns the outcomes and the wall time of the submissions.
fn run_load(
    rt: &tokio::runtime::Runtime,
    herald: &Herald,
    s: Scenario,
    tls: &Arc<rustls::ClientConfig>,
    clients: usize,
    (first, total): (usize, usize),
) -> (Vec<Outcome>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let outcomes = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (next, tls, addr) = (next.clone(), tls.clone(), herald.addr);
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        out.push(one_message(addr, s.implicit, tls.clone(), first + i).await);
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    });
    (outcomes, started.elapsed())
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let messages = env_num("BENCH_MESSAGES", 2000);
    let before_messages = env_num("BENCH_BEFORE_MESSAGES", 300);
    let cert_kind = env_str("BENCH_CERT", "ecdsa");
    let dkim = env_str("BENCH_KEY", "rsa");
    let kx = env_str("BENCH_KX", "default");
    let wanted = env_str(
        "BENCH_SCENARIOS",
        "before,starttls,starttls-resume,implicit,implicit-resume",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key, der) = certificate(&cert_kind);
    common::write_tls(dir.path(), cert, key);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "herald connection-per-message benchmark: {clients} clients, {SIZE}-byte messages, \
         AUTH PLAIN, server certificate {cert_kind}, DKIM {dkim}, client key exchange {kx}"
    );
    println!(
        "{:<16} {:>6} {:>8} {:>9} {:>9} {:>11} {:>10} {:>8}  tls",
        "scenario", "msgs", "msg/s", "p50 ms", "p99 ms", "herald CPU", "bench CPU", "resumed"
    );
    for s in SCENARIOS
        .iter()
        .filter(|s| wanted.split(',').any(|w| w.trim() == s.name))
    {
        let total = if s.name == "before" {
            before_messages
        } else {
            messages
        };
        let to = Destination::new(total);
        let herald = start_herald(dir.path(), *s, &dkim, &to);
        let tls = client_config(der.clone(), s.resume, &kx);
        // Warm-up: one connection per client (fills the AUTH cache and the session store),
        // indices after the timed ones, delivered before the clock starts.
        run_load(&rt, &herald, *s, &tls, clients, (total, clients));
        to.wait_received(clients);
        let pid = herald.process.pid.to_string();
        let (herald0, bench0) = (cpu_time(&pid), cpu_time("self"));
        let started = Instant::now();
        let (outcomes, _) = run_load(&rt, &herald, *s, &tls, clients, (0, total));
        rt.block_on(async {
            let done = to.times.done.notified();
            if to.times.delivered_count.load(Ordering::SeqCst) < total {
                tokio::time::timeout(Duration::from_secs(600), done)
                    .await
                    .expect("every message delivered within 10 minutes");
            }
        });
        let elapsed = started.elapsed();
        let (herald_cpu, bench_cpu) = (cpu_time(&pid) - herald0, cpu_time("self") - bench0);
        drop(herald);
        let mut lat: Vec<Duration> = outcomes.iter().map(|o| o.connect_to_250).collect();
        lat.sort();
        let pct = |p: f64| percentile(&lat, p);
        let n = outcomes.len().max(1) as f64;
        let resumed = outcomes.iter().filter(|o| o.resumed).count();
        let tls_desc = outcomes.first().map_or(String::new(), |o| o.tls.clone());
        println!(
            "{:<16} {:>6} {:>8.0} {:>9.1} {:>9.1} {:>8.2} ms {:>7.2} ms {:>7.0}%  {}",
            s.name,
            outcomes.len(),
            n / elapsed.as_secs_f64(),
            ms(pct(0.50)),
            ms(pct(0.99)),
            ms(herald_cpu) / n,
            ms(bench_cpu) / n,
            resumed as f64 * 100.0 / n,
            tls_desc,
        );
    }
    println!(
        "(msg/s end to end: first connection to the last message at the MX; p50/p99 from \
         connect to the 250 after DATA; CPU = utime + stime per message from /proc over the \
         same span; bench CPU = clients, DNS and MX)"
    );
}
