//! Traffic-shaping benchmark (not a test), issue 29: an MX that answers `421 4.7.28` (Gmail's
//! reputation deferral) to message N, then accepts everything. herald (release build) has a
//! rule for it (4 connections, suspend 5 s, a tenth of the limits back per delivery). Prints
//! the delivery rate before the push-back, how many deliveries still arrived after it (those
//! already under way), the hold the MX saw, the rate in the first seconds after the hold
//! (half the connections) and once recovered, and whether every message arrived once.
//!
//! `cargo bench --bench shaping` — tune with BENCH_MESSAGES (3000), BENCH_PUSHBACK_AT (500).

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
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::sink::{Times, submitter};
use common::{HOST, Herald, env_num, load_average};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Used by the included DNS helper to pick its address.
fn free_addr() -> SocketAddr {
    common::free_addr()
}

/// What the MX saw: when each message was accepted, and when the 421 was given.
#[derive(Default)]
struct Seen {
    accepted: Vec<Instant>,
    pushback: Option<Instant>,
    ends: usize,
}

/// A plain SMTP MX (no extensions) answering `421 4.7.28` to the `at`-th end of data.
fn start_mx(seen: Arc<Mutex<Seen>>, at: usize) -> SocketAddr {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind MX");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            l.set_nonblocking(true).expect("nonblocking");
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(session(s, seen.clone(), at));
            }
        });
    });
    addr
}

async fn session(s: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>, at: usize) {
    let mut r = tokio::io::BufReader::new(s);
    let mut line = String::new();
    if r.get_mut()
        .write_all(b"220 mx.prov.test ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") {
            b"250 mx.prov.test\r\n"
        } else if cmd.starts_with("DATA") {
            if r.get_mut().write_all(b"354 go\r\n").await.is_err() {
                return;
            }
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
            }
            let refuse = {
                let mut s = seen.lock().expect("seen");
                s.ends += 1;
                if s.ends == at {
                    s.pushback = Some(Instant::now());
                } else {
                    s.accepted.push(Instant::now());
                }
                s.ends == at
            };
            if refuse {
                let _ = r
                    .get_mut()
                    .write_all(b"421 4.7.28 [127.0.0.1] unusual rate of unsolicited mail\r\n")
                    .await;
                return;
            }
            b"250 2.0.0 queued\r\n"
        } else if cmd.starts_with("QUIT") {
            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"250 OK\r\n"
        };
        if r.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Messages per second among `times` within `[from, to)`.
fn rate(times: &[Instant], from: Instant, to: Instant) -> f64 {
    let n = times.iter().filter(|t| **t >= from && **t < to).count();
    n as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-9)
}

fn main() {
    let total = env_num("BENCH_MESSAGES", 3000);
    let at = env_num("BENCH_PUSHBACK_AT", 500);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, key);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mx = start_mx(seen.clone(), at);
    let dns = dns::DnsServer::start();
    dns.set_ttl(300);
    dns.add_mx("example.org", 10, "mx.prov.test");
    dns.add_a("mx.prov.test", Ipv4Addr::LOCALHOST);
    let submission = common::free_addr();
    let rest = format!(
        "[dns]\nservers = [\"{dns}\"]\n[delivery]\nport = {port}\n[history]\nenabled = false\n\
         [shaping]\nsuspend_for = \"5s\"\nrecover_step = 0.1\n\
         [[shaping.rules]]\nname = \"prov\"\nmx = [\"*.prov.test\"]\nconnections = 4\n",
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
    let times = Times::new(total);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                tokio::spawn(submitter(
                    submission,
                    tls.clone(),
                    next.clone(),
                    times.clone(),
                    2048,
                    None,
                ))
            })
            .collect();
        for t in tasks {
            t.await.expect("submitter");
        }
    });
    // Every message once (the refused one again after the hold).
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.lock().expect("seen").accepted.len() < total {
        assert!(Instant::now() < deadline, "not every message arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(herald);
    let s = seen.lock().expect("seen");
    let push = s.pushback.expect("the 421 was given");
    let mut after: Vec<Instant> = s.accepted.iter().copied().filter(|t| *t > push).collect();
    after.sort();
    // Deliveries that were already under way when the 421 came arrive within a moment.
    let in_flight = after
        .iter()
        .take_while(|t| t.duration_since(push) < Duration::from_millis(500))
        .count();
    let resumed = after.get(in_flight).copied().unwrap_or(push);
    let hold = resumed.duration_since(push);
    // The message that was answered 421 comes again at its own retry time, maybe long after the
    // rest: the rate after the hold is measured up to the last delivery before such a gap.
    let bulk_end = after
        .windows(2)
        .find(|w| w[0] > resumed && w[1].duration_since(w[0]) > Duration::from_secs(5))
        .map_or(*after.last().unwrap_or(&resumed), |w| w[0]);
    let last = *after.last().unwrap_or(&resumed);
    let early = rate(&after, resumed, resumed + Duration::from_secs(1));
    let later_from = resumed + Duration::from_secs(2);
    let late = rate(&after, later_from, bulk_end + Duration::from_millis(1));
    let before = rate(&s.accepted, started, push);
    println!(
        "herald traffic-shaping benchmark: {total} messages to one destination (4 connections), 421 4.7.28 to message {at}; suspend 5 s, recover_step 0.1"
    );
    println!(
        "  load average (1 min) before {load_before}; after {}",
        load_average()
    );
    println!("  delivered/s before the push-back        {before:.0}");
    println!("  deliveries after the 421, already under way  {in_flight}");
    println!(
        "  hold seen at the MX                     {:.2} s",
        hold.as_secs_f64()
    );
    println!("  delivered/s in the first second after   {early:.0} (limits halved: 2 connections)");
    println!("  delivered/s from 2 s after the hold on  {late:.0} (limits won back)");
    println!(
        "  the refused message again, after the 421  {:.1} s (its retry time)",
        last.duration_since(push).as_secs_f64()
    );
    println!(
        "  every message arrived                   {} of {total} (none bounced)",
        s.accepted.len()
    );
}
