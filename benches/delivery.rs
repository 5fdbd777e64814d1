//! Delivery benchmark (not a test), end to end: N concurrent apps submit over STARTTLS + AUTH
//! PLAIN, herald signs, spools and delivers to a loopback MX found through a loopback DNS
//! server. Every app logs in first (STARTTLS + AUTH, untimed); then it prints messages per
//! second from the first submission to the last delivery, p50/p99 from the `250` after DATA to
//! the message's arrival at the MX, herald's CPU per message over that span (utime + stime from
//! /proc/<pid>/stat, and per thread from /proc/<pid>/task), the benchmark's own CPU per message
//! (clients and MX together), the load average, and herald's peak RSS.
//!
//! `cargo bench --bench delivery` — tune with BENCH_CLIENTS (50), BENCH_MESSAGES (5000),
//! BENCH_SIZE (4096 bytes), BENCH_KEY (`ed25519` or `rsa`), BENCH_PER_HOST (connections to the
//! MX, default herald's 5), BENCH_THREADS=1 (list herald's threads by CPU), BENCH_HISTORY=0
//! (`[history] enabled = false`: no events recorded; on by default, as shipped) and
//! BENCH_WEBHOOK=1 (the app's events also POSTed, signed, to a loopback HTTPS endpoint).
//! BENCH_PERF="stat -e task-clock,context-switches -o FILE" (or "record -g -o FILE") runs
//! `perf` with those arguments on herald over exactly the timed span; BENCH_HERALD=PATH runs
//! another herald binary (before/after comparisons).

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;
#[allow(dead_code)]
#[path = "../tests/support/dns.rs"]
mod dns;
#[allow(dead_code)]
#[path = "../tests/support/https.rs"]
mod https;
#[allow(dead_code)]
#[path = "../tests/support/thread.rs"]
mod thread;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sink::{Times, start_mx, submitter};
use common::{HOST, Herald, cpu_time, env_num, load_average, ms, percentile, rss_kb, thread_cpu};

/// Used by the included DNS server to pick its address.
fn free_addr() -> SocketAddr {
    common::free_addr()
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 50);
    let total = env_num("BENCH_MESSAGES", 5_000);
    let size = env_num("BENCH_SIZE", 4096);
    let per_host = env_num("BENCH_PER_HOST", 5);
    let key = std::env::var("BENCH_KEY").unwrap_or_else(|_| "ed25519".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, tls_key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, tls_key);

    let dns = dns::DnsServer::start();
    // Real MX records live minutes to hours; herald's resolver caches them as it would.
    dns.set_ttl(300);
    dns.add_mx("example.org", 10, "mx.example.org");
    dns.add_a("mx.example.org", Ipv4Addr::new(127, 0, 0, 1));

    let times = Times::new(total);
    let mx_addr = start_mx(times.clone());

    let submission = free_addr();
    let rest = format!(
        "[dns]\nservers = [\"{dns}\"]\n\
         [delivery]\nport = {port}\nmax_connections_per_host = {per_host}\n",
        dns = dns.addr,
        port = mx_addr.port(),
    );
    // [history] on as shipped unless BENCH_HISTORY=0; BENCH_WEBHOOK=1 adds the app's webhook.
    let mut rest = rest;
    if env_num("BENCH_HISTORY", 1) == 0 {
        rest.push_str("[history]\nenabled = false\n");
    }
    let hook = (env_num("BENCH_WEBHOOK", 0) == 1).then(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook listener");
        let port = l.local_addr().expect("addr").port();
        dns.add_a("hooks.example.test", Ipv4Addr::new(127, 0, 0, 1));
        let server = https::HttpsServer::start(
            l,
            ca.server_config(&["hooks.example.test"], ca::Validity::Current),
            vec![("/hook", https::Response::status(204))],
        );
        rest.push_str("[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n");
        (server, port)
    });
    // RUST_LOG (below) sets the log level: herald's own lines at info, others at warn.
    let mut config = common::config(
        dir.path(),
        dir.path(),
        &format!("submission = \"{submission}\"\n"),
        &key,
        &rest,
    );
    // BENCH_SUPPRESSED=N: N addresses on the suppression list first (none of them a
    // recipient), so every RCPT looks up a list of realistic size (issue 24).
    prefill_suppressions(
        &dir.path().join("herald.toml"),
        &config,
        env_num("BENCH_SUPPRESSED", 0),
    );
    if let Some((_, port)) = &hook {
        let root = dir.path().join("test-root.pem");
        ca.write_root(&root);
        config = config
            .replacen(
                "rate_limit = 0\n",
                &format!(
                    "rate_limit = 0\nwebhook_url = \"https://hooks.example.test:{port}/hook\"\n\
                     webhook_secret = \"whsec_YmVuY2gtd2ViaG9vay1rZXktMzItYnl0ZXMtbG9uZyE=\"\n"
                ),
                1,
            )
            .replacen(
                "[tls]\n",
                &format!("[tls]\nextra_roots = [\"{}\"]\n", root.display()),
                1,
            );
    }
    let herald = Herald::start(
        &dir.path().join("herald.toml"),
        &config,
        Some("warn,herald=info"),
        true,
    );
    let pid = herald.pid;
    let idle = rss_kb(pid, "VmRSS:");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let pid_text = pid.to_string();
    let mut readings = None;
    let (finished, elapsed) = rt.block_on(async {
        let done = times.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                tokio::spawn(submitter(
                    submission,
                    tls.clone(),
                    next.clone(),
                    times.clone(),
                    size,
                    Some(barrier.clone()),
                ))
            })
            .collect();
        let mut perf = std::env::var("BENCH_PERF")
            .ok()
            .map(|args| Perf::attach(&args, pid, dir.path()));
        // The clock and the CPU readings start once every app has done STARTTLS and AUTH.
        barrier.wait().await;
        if let Some(p) = &mut perf {
            p.command("enable");
        }
        let load_before = load_average();
        let cpu_before = (cpu_time(&pid_text), cpu_time("self"), thread_cpu(pid));
        let started = Instant::now();
        for t in tasks {
            t.await.expect("submitter");
        }
        let submitted = started.elapsed();
        if times.delivered_count.load(Ordering::SeqCst) < total {
            tokio::time::timeout(Duration::from_secs(600), done)
                .await
                .expect("every message delivered within 10 minutes");
        }
        let elapsed = started.elapsed();
        if let Some(p) = perf {
            p.stop();
        }
        readings = Some((
            load_before,
            load_average(),
            cpu_before,
            (cpu_time(&pid_text), cpu_time("self"), thread_cpu(pid)),
        ));
        (submitted, elapsed)
    });
    let peak = rss_kb(pid, "VmHWM:");
    if let Some((server, _)) = &hook {
        println!(
            "webhook: {} signed POSTs received by the end of the run, over {} connection(s)",
            server.posts().len(),
            server.connections()
        );
    }
    drop(herald);
    let (load_before, load_after, before, after) = readings.expect("readings of the run");
    let per_msg = |d: Duration| ms(d) / total as f64;

    let accepted = times.accepted.lock().expect("lock");
    let delivered = times.delivered.lock().expect("lock");
    let mut latencies: Vec<Duration> = accepted
        .iter()
        .zip(delivered.iter())
        .filter_map(|(a, d)| Some(d.as_ref()?.saturating_duration_since(*a.as_ref()?)))
        .collect();
    latencies.sort();
    let pct = |p: f64| percentile(&latencies, p);
    println!("herald delivery benchmark (end to end)");
    println!(
        "  clients            {clients} (STARTTLS + AUTH PLAIN), DKIM {key}, {per_host} connection(s) to the MX"
    );
    println!("  messages           {total} of {size} bytes");
    println!(
        "  submitted in       {:.2} s; last delivered after {:.2} s (after every app logged in)",
        finished.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput         {:.0} messages/s (first submission to last delivery)",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  250 -> delivered   p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(0.50)),
        ms(pct(0.99))
    );
    println!(
        "  herald CPU         {:.3} ms per message (utime + stime, first submission to last delivery)",
        per_msg(after.0.saturating_sub(before.0))
    );
    println!(
        "  bench CPU          {:.3} ms per message (clients and MX, same cores)",
        per_msg(after.1.saturating_sub(before.1))
    );
    print_threads(&before.2, &after.2, total);
    println!("  load average       {load_before} before, {load_after} after (1 min)");
    println!("  herald RSS         idle {idle} KB, peak {peak} KB");
}

/// herald's CPU per message by thread name over the run (threads that ended meanwhile are in
/// the process total only); with BENCH_THREADS=1, every thread that used CPU.
fn print_threads(
    before: &std::collections::BTreeMap<u32, (String, Duration)>,
    after: &std::collections::BTreeMap<u32, (String, Duration)>,
    total: usize,
) {
    let mut by_name: std::collections::BTreeMap<&str, (usize, Duration)> = Default::default();
    let mut busy = Vec::new();
    for (tid, (name, cpu)) in after {
        let used = cpu.saturating_sub(before.get(tid).map_or(Duration::ZERO, |b| b.1));
        let e = by_name.entry(name.as_str()).or_default();
        e.0 += 1;
        e.1 += used;
        if !used.is_zero() {
            busy.push((used, *tid, name.as_str()));
        }
    }
    let per_msg = |d: Duration| ms(d) / total as f64;
    let groups: Vec<String> = by_name
        .iter()
        .map(|(name, (n, cpu))| format!("{name} x{n} {:.3}", per_msg(*cpu)))
        .collect();
    println!(
        "  herald threads     {} (ms per message)",
        groups.join(", ")
    );
    if std::env::var("BENCH_THREADS").is_ok_and(|v| v == "1") {
        busy.sort_by(|a, b| b.cmp(a));
        for (cpu, tid, name) in busy {
            println!("    {tid:>8} {name:<16} {:.3} ms per message", per_msg(cpu));
        }
    }
}

/// `perf` attached to herald (BENCH_PERF), counting or sampling only while enabled through
/// its control FIFO: exactly the timed span, not the logins before it.
struct Perf {
    child: std::process::Child,
    ctl: std::fs::File,
    ack: std::io::BufReader<std::fs::File>,
}

impl Perf {
    /// Starts `perf ARGS -D -1 --control fifo:… -p PID`, its events disabled.
    fn attach(args: &str, pid: u32, dir: &std::path::Path) -> Perf {
        let (ctl, ack) = (dir.join("perf-ctl"), dir.join("perf-ack"));
        for f in [&ctl, &ack] {
            let ok = std::process::Command::new("mkfifo")
                .arg(f)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mkfifo {}", f.display());
        }
        let mut words = args.split_whitespace();
        let sub = words.next().expect("BENCH_PERF names a perf command");
        let child = std::process::Command::new("perf")
            .arg(sub)
            .args(["-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .args(words)
            .arg("-p")
            .arg(pid.to_string())
            .spawn()
            .expect("start perf (BENCH_PERF)");
        let ctl = std::fs::OpenOptions::new()
            .write(true)
            .open(&ctl)
            .expect("perf control fifo");
        let ack = std::io::BufReader::new(std::fs::File::open(&ack).expect("perf ack fifo"));
        Perf { child, ctl, ack }
    }

    /// Sends `enable` or `disable` and waits for perf's `ack`.
    fn command(&mut self, cmd: &str) {
        use std::io::{BufRead, Write};
        self.ctl
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("perf control");
        let mut line = String::new();
        let _ = self.ack.read_line(&mut line);
    }

    /// Disables the events and stops perf the way Ctrl-C does, so it writes its output.
    fn stop(mut self) {
        self.command("disable");
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Puts `n` addresses on the suppression list with `herald suppress import` (CSV).
fn prefill_suppressions(config_path: &std::path::Path, config: &str, n: usize) {
    if n == 0 {
        return;
    }
    std::fs::write(config_path, config).expect("config");
    let mut csv = String::from("domain,address,reason\n");
    for i in 0..n {
        csv.push_str(&format!("example.test,gone-{i}@example.org,hard_bounce\n"));
    }
    let file = config_path.with_file_name("suppressed.csv");
    std::fs::write(&file, csv).expect("csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(config_path)
        .args(["suppress", "import"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("herald suppress import");
    assert!(status.success(), "herald suppress import failed");
}
