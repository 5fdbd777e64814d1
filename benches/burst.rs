//! Many-destinations benchmark (not a test), issue 29: a burst of N messages, each to its own
//! recipient domain with its own MX host (all on one loopback sink), submitted over STARTTLS +
//! AUTH and delivered end to end. Prints messages per second end to end and the DNS queries
//! per message the loopback name server answered — once cold, then again for the same domains
//! within the records' TTL (what herald's caches save).
//!
//! `cargo bench --bench burst` — tune with BENCH_DOMAINS (10000), BENCH_CLIENTS (20),
//! BENCH_SIZE (2048 bytes).

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;
#[allow(dead_code)]
#[path = "../tests/support/dns.rs"]
mod dns;
#[allow(dead_code)]
#[path = "../tests/support/thread.rs"]
mod thread;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sink::{Times, start_mx};
use common::{HOST, Herald, env_num, load_average, login, read_reply};
use tokio::io::AsyncWriteExt;

/// Used by the included DNS helper to pick its address.
fn free_addr() -> SocketAddr {
    common::free_addr()
}

/// One app sending messages `from..to` (the next index from `next`), message `i` to
/// `r@d{i % domains}.test`.
async fn app(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    next: Arc<AtomicUsize>,
    to: usize,
    domains: usize,
    size: usize,
) {
    let mut s = login(addr, tls).await;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= to {
            break;
        }
        let d = i % domains;
        s.write_all(
            format!("MAIL FROM:<bench@example.test>\r\nRCPT TO:<r@d{d}.test>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
        s.flush().await.expect("flush");
        for want in [250, 250, 354] {
            assert_eq!(read_reply(&mut s).await, want);
        }
        s.write_all(common::message(i, size).as_bytes())
            .await
            .expect("write");
        s.write_all(b".\r\n").await.expect("write");
        s.flush().await.expect("flush");
        assert_eq!(read_reply(&mut s).await, 250, "message accepted");
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    let _ = s.flush().await;
}

fn main() {
    let domains = env_num("BENCH_DOMAINS", 10_000);
    let clients = env_num("BENCH_CLIENTS", 20);
    let size = env_num("BENCH_SIZE", 2048);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, key);

    let dns = dns::DnsServer::start();
    dns.set_ttl(3600);
    for d in 0..domains {
        dns.add_mx(&format!("d{d}.test"), 10, &format!("mx.d{d}.test"));
        dns.add_a(&format!("mx.d{d}.test"), Ipv4Addr::new(127, 0, 0, 1));
    }
    // Two bursts to the same domains: indices 0..domains, then domains..2*domains.
    let times = Times::new(2 * domains);
    let mx = start_mx(times.clone());
    let submission = common::free_addr();
    let rest = format!(
        "[dns]\nservers = [\"{dns}\"]\n[delivery]\nport = {port}\n[history]\nenabled = false\n",
        dns = dns.addr,
        port = mx.port(),
    );
    let config = common::config(
        dir.path(),
        dir.path(),
        &format!("submission = \"{submission}\"\n"),
        "ed25519",
        &rest,
    );
    let load_before = load_average();
    let herald = Herald::start(
        &dir.path().join("herald.toml"),
        &config,
        Some("warn,herald=info"),
        true,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let mut rounds = Vec::new();
    for round in 1..=2 {
        let to = round * domains;
        // Each app takes the next index until it passes `to`: a counter per burst.
        let next = Arc::new(AtomicUsize::new(to - domains));
        let queries_before = dns.queries();
        let started = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    tokio::spawn(app(
                        submission,
                        tls.clone(),
                        next.clone(),
                        to,
                        domains,
                        size,
                    ))
                })
                .collect();
            for t in tasks {
                t.await.expect("app");
            }
        });
        let submitted = started.elapsed();
        eprintln!(
            "burst {round}: submitted in {:.1} s; waiting for delivery",
            submitted.as_secs_f64()
        );
        let deadline = Instant::now() + Duration::from_secs(900);
        while times.delivered_count.load(Ordering::SeqCst) < to {
            assert!(
                Instant::now() < deadline,
                "burst {round} not delivered in 15 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = started.elapsed();
        let queries = dns.queries() - queries_before;
        rounds.push((submitted, elapsed, queries));
    }
    drop(herald);
    println!(
        "herald many-destinations benchmark: {domains} messages of {size} bytes, each to its own domain and MX host; {clients} clients (STARTTLS + AUTH)"
    );
    println!(
        "  load average (1 min) before {load_before}; after {}",
        load_average()
    );
    for (round, (submitted, elapsed, queries)) in rounds.into_iter().enumerate() {
        let what = if round == 0 {
            "cold (first burst)"
        } else {
            "warm (same domains, within TTL)"
        };
        println!(
            "  {what:<32} submitted {:>6.0}/s   delivered end to end {:>6.0}/s   DNS queries per message {:.2}",
            domains as f64 / submitted.as_secs_f64(),
            domains as f64 / elapsed.as_secs_f64(),
            queries as f64 / domains as f64
        );
    }
}
