//! Submission benchmark (not a test): starts herald (release build), then N concurrent clients
//! submit many 4 KB messages over STARTTLS + AUTH PLAIN, one connection each, pipelining
//! MAIL/RCPT/DATA. Prints accepted messages per second, p50/p99 from end of DATA to `250`, and
//! herald's idle and peak RSS from /proc.
//!
//! `cargo bench --bench submission` — tune with BENCH_CLIENTS (50) and BENCH_MESSAGES (20000).
//! Messages are From: example.test, signed with an Ed25519 key generated at start.

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{HOST, Herald, env_num, login, ms, percentile, read_reply, rss_kb, send_message};
use tokio::io::AsyncWriteExt;

const SIZE: usize = 4096;

async fn client(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    next: Arc<AtomicUsize>,
    total: usize,
    logged_in: Arc<tokio::sync::Barrier>,
) -> Vec<Duration> {
    let mut s = login(addr, tls).await;
    logged_in.wait().await;
    let mut latencies = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            break;
        }
        send_message(&mut s, i, SIZE).await;
        let t = Instant::now();
        assert_eq!(read_reply(&mut s).await, 250, "message accepted");
        latencies.push(t.elapsed());
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    let _ = s.flush().await;
    latencies
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let total = env_num("BENCH_MESSAGES", 20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, key);
    let addr = common::free_addr();
    let config = common::config(
        dir.path(),
        dir.path(),
        &format!("submission = \"{addr}\"\n"),
        "ed25519",
        common::NO_DNS,
    );
    let herald = Herald::start(&dir.path().join("herald.toml"), &config, None, false);
    let pid = herald.pid;
    let idle = rss_kb(pid, "VmRSS:");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let (mut latencies, elapsed): (Vec<Duration>, Duration) = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let c = client(addr, tls.clone(), next.clone(), total, barrier.clone());
                tokio::spawn(c)
            })
            .collect();
        // The clock starts once every client has done STARTTLS and AUTH.
        barrier.wait().await;
        let started = Instant::now();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        (all, started.elapsed())
    });
    let peak = rss_kb(pid, "VmHWM:");
    drop(herald);

    latencies.sort();
    let pct = |p: f64| percentile(&latencies, p);
    let spooled = std::fs::read_dir(dir.path().join("spool/msg"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!("herald submission benchmark");
    println!("  clients            {clients} (STARTTLS + AUTH PLAIN, one connection each)");
    println!(
        "  messages           {} of 4096 bytes ({spooled} in the spool)",
        latencies.len()
    );
    println!(
        "  elapsed            {:.2} s (after every client did STARTTLS + AUTH)",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput         {:.0} accepted messages/s",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  end of DATA -> 250 p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99))
    );
    println!("  herald RSS         idle {} KB, peak {} KB", idle, peak);
}
