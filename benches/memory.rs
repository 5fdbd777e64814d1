//! Memory benchmark (not a test): starts herald (release build), then N authenticated sessions
//! each send half of a large message in DATA and pause there. Prints herald's RSS idle, with
//! every session mid-way (the target: 50 sessions mid-way through 20 MB messages stay under
//! 100 MB), and its peak once all are finished, signed and spooled.
//!
//! `cargo bench --bench memory` — tune with BENCH_CLIENTS (50) and BENCH_MESSAGE_MB (20).
//! Nothing is delivered (no name server): the messages stay in a temporary spool.

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{HOST, Herald, Session, env_num, read_reply, rss_kb};
use tokio::io::AsyncWriteExt;

/// The size of the spool's staging directory: messages being received.
fn staged_bytes(spool: &std::path::Path) -> u64 {
    std::fs::read_dir(spool.join("tmp"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Logs in and starts a message: greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA.
async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, i: usize) -> Session {
    let mut s = common::starttls(addr, tls).await;
    s.write_all(
        format!(
            "EHLO bench.test\r\n{auth}MAIL FROM:<bench@example.test>\r\n\
             RCPT TO:<r{i}@example.org>\r\nDATA\r\n",
            auth = common::auth_plain(),
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    s.flush().await.expect("flush");
    for want in [250, 235, 250, 250, 354] {
        assert_eq!(read_reply(&mut s).await, want);
    }
    s.write_all(
        format!(
            "From: Bench <bench@example.test>\r\nTo: r{i}@example.org\r\nSubject: big {i}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    s
}

/// Sends `bytes` of body lines.
async fn send_body(s: &mut Session, bytes: usize) {
    let mut block = Vec::with_capacity(64 * 1024);
    while block.len() + common::LINE.len() <= 64 * 1024 {
        block.extend_from_slice(common::LINE.as_bytes());
    }
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&block).await.expect("write body");
        sent += block.len();
    }
    s.flush().await.expect("flush");
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let size = env_num("BENCH_MESSAGE_MB", 20) * 1024 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, key);
    let addr = common::free_addr();
    let config = common::config(
        dir.path(),
        dir.path(),
        &format!(
            "submission = \"{addr}\"\nmax_message_size = {max}\ndata_timeout = \"10m\"\n",
            max = size + 1024 * 1024,
        ),
        "ed25519",
        common::NO_DNS,
    );
    let herald = Herald::start(&dir.path().join("herald.toml"), &config, None, false);
    let pid = herald.pid;
    let idle = rss_kb(pid, "VmRSS:");
    let spool = dir.path().join("spool");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let half = size / 2;
    let (mid, accepted, elapsed) = rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut s = open(addr, tls, i).await;
                    send_body(&mut s, half).await;
                    s
                })
            })
            .collect();
        let mut sessions = Vec::new();
        for t in tasks {
            sessions.push(t.await.expect("session"));
        }
        // Every half is in herald once the staging files hold it (less a write buffer each).
        let want = (clients * (half - 64 * 1024)) as u64;
        let deadline = Instant::now() + Duration::from_secs(300);
        while staged_bytes(&spool) < want {
            assert!(Instant::now() < deadline, "herald did not take in the data");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mid = rss_kb(pid, "VmRSS:");
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    send_body(&mut s, size - half).await;
                    s.write_all(b".\r\n").await.expect("write");
                    s.flush().await.expect("flush");
                    read_reply(&mut s).await == 250
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            accepted += usize::from(t.await.expect("finish"));
        }
        (mid, accepted, started.elapsed())
    });
    let peak = rss_kb(pid, "VmHWM:");
    drop(herald);
    println!("herald memory benchmark");
    println!(
        "  sessions           {clients} (STARTTLS + AUTH PLAIN), each a {} MB message",
        size / (1024 * 1024)
    );
    println!("  herald RSS idle    {idle} KB");
    println!(
        "  herald RSS mid-way {mid} KB (every session {} MB into its DATA)",
        half / (1024 * 1024)
    );
    println!(
        "  accepted           {accepted} of {clients} in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!("  herald peak RSS    {peak} KB (VmHWM, signing and spooling included)");
}
