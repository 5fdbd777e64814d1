//! Big-queue benchmark (not a test), issue 29: N messages accepted and deferred (their
//! domain's MX refuses connections, so every attempt fails and waits an hour), then what the
//! operator's tools and a restart cost with them queued. Prints herald's memory per deferred
//! message, how long `herald queue summary`, `herald queue list --limit 100` and the whole
//! `herald queue list` take against the running herald, the time from a restart to
//! `herald ready` and to the whole queue recovered, and the speed of mail to a healthy
//! destination (a loopback MX) on an empty queue and again with the N deferred messages
//! waiting (BENCH_HEALTHY messages each time, 5000).
//!
//! `cargo bench --bench scale` — tune with BENCH_QUEUED (100000), BENCH_CLIENTS (20),
//! BENCH_SIZE (1024 bytes); BENCH_PG=1 runs herald on PostgreSQL (`[cluster]`, one node,
//! PostgreSQL 15 started in a temporary directory as in the tests) instead of the file spool.

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;
#[allow(dead_code)]
#[path = "../tests/support/dns.rs"]
mod dns;
#[allow(dead_code)]
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[allow(dead_code)]
#[path = "../tests/support/thread.rs"]
mod thread;

/// Used by the included PostgreSQL helper to pick its address.
fn free_addr() -> std::net::SocketAddr {
    common::free_addr()
}

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::atomic::Ordering;

use common::sink::{Times, start_mx};
use common::{HOST, Herald, env_num, load_average, rss_kb};
use tokio::io::AsyncWriteExt;

/// Runs `herald queue ARGS` against `config`: (seconds taken, bytes printed, last line).
fn queue(config: &Path, args: &[&str]) -> (f64, usize, String) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(config)
        .arg("queue")
        .args(args)
        .output()
        .expect("herald queue");
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "herald queue {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(out.stdout.trim_ascii_end())
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (took, out.stdout.len(), last)
}

/// `herald queue summary --json` against `config`: whether it succeeded, and its JSON
/// (`null` when it printed none).
fn summary_json(config: &Path) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(config)
        .args(["queue", "summary", "--json"])
        .output()
        .expect("herald queue summary");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out.status.success(), v)
}

/// Waits until herald has tried (and deferred) every message once: `herald queue summary`
/// shows none in flight and none due.
fn wait_settled(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut calm = 0;
    while calm < 2 {
        assert!(Instant::now() < deadline, "the queue did not settle");
        let (_, v) = summary_json(config);
        let recovered = v["recovering"] != true;
        calm = if recovered && v["in_flight"] == 0 && v["due"] == 0 && v["messages"] != 0 {
            calm + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn main() {
    let queued = env_num("BENCH_QUEUED", 100_000);
    let clients = env_num("BENCH_CLIENTS", 20);
    let size = env_num("BENCH_SIZE", 1024);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ca::TestCa::new();
    let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
    common::write_tls(dir.path(), cert, key);
    let addr = common::free_addr();
    let admin = common::free_addr();
    let healthy = env_num("BENCH_HEALTHY", 5_000);
    let pg = (env_num("BENCH_PG", 0) == 1).then(postgres::Postgres::start);
    // example.org: a loopback MX that takes everything; deferred.example: an MX address where
    // nothing listens (connection refused at once, the attempt deferred for an hour).
    let dns = dns::DnsServer::start();
    dns.set_ttl(300);
    dns.add_mx("example.org", 10, "mx.example.org");
    dns.add_a("mx.example.org", Ipv4Addr::new(127, 0, 0, 1));
    dns.add_mx("deferred.example", 10, "down.example");
    dns.add_a("down.example", Ipv4Addr::new(127, 0, 0, 2));
    let times = Times::new(2 * healthy);
    let mx = start_mx(times.clone());
    let mut rest = format!(
        "[dns]\nservers = [\"{dns}\"]\n[delivery]\nport = {port}\nretry_schedule = [\"1h\"]\n\
         [admin]\nlisten = \"{admin}\"\n[history]\nenabled = false\n",
        dns = dns.addr,
        port = mx.port(),
    );
    if let Some(pg) = &pg {
        rest.push_str(&format!(
            "[cluster]\ndatabase_url = \"{url}\"\npassword_file = \"{pw}\"\ntls = \"disable\"\n\
             node_id = \"scale-1\"\n",
            url = pg.url(),
            pw = pg.password_file(dir.path()).display(),
        ));
    }
    let config_text = common::config(
        dir.path(),
        dir.path(),
        &format!("submission = \"{addr}\"\n"),
        "ed25519",
        &rest,
    );
    let config = dir.path().join("herald.toml");
    let load_before = load_average();
    let herald = Herald::start(&config, &config_text, Some("warn,herald=info"), true);
    let idle = rss_kb(herald.pid, "VmRSS:");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let send = |range: Range<usize>, rcpt: &'static str| {
        submit(&rt, addr, tls.clone(), clients, range, size, rcpt)
    };
    let healthy_before = healthy_phase(&times, 0..healthy, &send);
    let idle_after_healthy = rss_kb(herald.pid, "VmRSS:");
    let accepting = send(2 * healthy..2 * healthy + queued, "r@deferred.example");
    wait_settled(&config);
    let vacuum_before = pg.as_ref().map(vacuum_state);
    let healthy_during = healthy_phase(&times, healthy..2 * healthy, &send);
    let vacuum_after = pg.as_ref().map(vacuum_state);
    wait_settled(&config);
    let full = steady_rss(herald.pid);
    let (spool_bytes, spool_allocated, spool_kinds) = match &pg {
        Some(pg) => {
            let size: u64 = pg
                .query("SELECT pg_database_size(current_database())")
                .trim()
                .parse()
                .unwrap_or(0);
            (size, size, "the PostgreSQL database's size".to_string())
        }
        None => du(&dir.path().join("spool")),
    };

    let (summary, ..) = queue(&config, &["summary", "--json"]);
    let (page, ..) = queue(&config, &["list", "--limit", "100"]);
    let (list, list_bytes, total) = queue(&config, &["list"]);
    assert!(
        total.starts_with(&format!("{queued} message(s)")),
        "the whole list ends with every deferred message counted: {total}"
    );
    drop(herald);

    let restart = Instant::now();
    let again = Herald::start(&config, &config_text, Some("warn,herald=info"), true);
    let ready = restart.elapsed().as_secs_f64();
    let (summary_recovering, ..) = queue(&config, &["summary", "--json"]);
    wait_recovered(&config);
    let recovered = restart.elapsed().as_secs_f64();
    wait_settled(&config);
    let after_restart = steady_rss(again.pid);
    let peak = rss_kb(again.pid, "VmHWM:");
    let (summary2, ..) = queue(&config, &["summary"]);
    drop(again);

    let per = |kb: u64| (kb.saturating_sub(idle_after_healthy) as f64 * 1024.0) / queued as f64;
    println!("herald big-queue benchmark: {queued} messages of {size} bytes, all deferred");
    println!(
        "  load average (1 min) before   {load_before}; after {}",
        load_average()
    );
    println!(
        "  accepted                      {queued} in {accepting:.1} s ({:.0}/s, {clients} clients, STARTTLS + AUTH)",
        queued as f64 / accepting
    );
    println!(
        "  herald RSS idle               {idle} KB; {idle_after_healthy} KB after the first healthy round (the base of the figures per message)"
    );
    println!(
        "  herald RSS, all deferred      {full} KB ({:.0} B per deferred message)",
        per(full)
    );
    let backend = if pg.is_some() {
        "PostgreSQL (one node, [cluster])"
    } else {
        "the file spool"
    };
    println!("  backend                       {backend}");
    println!(
        "  spool on disk                 {:.0} MB of files ({:.1} KB per message), {:.0} MB allocated; {spool_kinds}",
        spool_bytes as f64 / 1e6,
        spool_bytes as f64 / 1024.0 / queued as f64,
        spool_allocated as f64 / 1e6,
    );
    println!("  herald queue summary --json   {summary:.2} s (CLI, through the admin endpoint)");
    println!("  herald queue list --limit 100 {page:.2} s");
    println!(
        "  herald queue list (all)       {list:.2} s ({:.1} MB of text)",
        list_bytes as f64 / 1e6
    );
    println!("  restart until herald ready    {ready:.2} s");
    println!(
        "  restart until all recovered   {recovered:.2} s (the schedule rebuilt in the background; \
         summary meanwhile {summary_recovering:.2} s)"
    );
    println!(
        "  herald RSS after the restart  {after_restart} KB ({:.0} B per message; peak {peak} KB during recovery)",
        per(after_restart)
    );
    println!("  herald queue summary then     {summary2:.2} s");
    for (when, (sub, e2e)) in [
        ("healthy MX, empty queue     ", healthy_before),
        ("healthy MX, N deferred      ", healthy_during),
    ] {
        println!(
            "  {when}  {healthy} messages: submitted {sub:.0}/s, delivered {e2e:.0}/s end to end"
        );
    }
    println!(
        "  healthy delivery with the queue full: {:.0}% of its speed on an empty queue",
        healthy_during.1 / healthy_before.1 * 100.0
    );
    if let (Some(before), Some(after)) = (vacuum_before, vacuum_after) {
        println!(
            "  PostgreSQL around that round   at its start: {before}\n\
             {:32}at its end:   {after}",
            ""
        );
    }
}

/// What PostgreSQL's autovacuum is doing to `herald_messages` (a burst of deferrals leaves
/// a dead row per message; its vacuum on the same cores slows whatever runs beside it).
fn vacuum_state(pg: &postgres::Postgres) -> String {
    pg.query(
        "SELECT format('%s autovacuum worker(s) running; herald_messages: %s dead rows, \
                %s autovacuum(s), %s autoanalyze(s), %s of %s updates HOT', \
                (SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'autovacuum worker'), \
                n_dead_tup, autovacuum_count, autoanalyze_count, n_tup_hot_upd, n_tup_upd) \
         FROM pg_stat_user_tables WHERE relname = 'herald_messages'",
    )
}

/// Submits messages `range` (their index in the Message-ID) to `rcpt` over `clients`
/// sessions (STARTTLS + AUTH); seconds taken.
fn submit(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    clients: usize,
    range: Range<usize>,
    size: usize,
    rcpt: &'static str,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (next, tls) = (next.clone(), tls.clone());
                tokio::spawn(async move {
                    let mut s = common::login(addr, tls).await;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end {
                            break;
                        }
                        common::send_message_to(&mut s, i, size, rcpt).await;
                        assert_eq!(common::read_reply(&mut s).await, 250, "message accepted");
                    }
                    let _ = s.write_all(b"QUIT\r\n").await;
                    let _ = s.flush().await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("submitter");
        }
    });
    started.elapsed().as_secs_f64()
}

/// Sends messages `range` to the healthy MX and waits until all arrived: (submitted per
/// second, delivered per second end to end).
fn healthy_phase(
    times: &Times,
    range: Range<usize>,
    submit: &dyn Fn(Range<usize>, &'static str) -> f64,
) -> (f64, f64) {
    let count = range.len() as f64;
    let end = range.end;
    let started = Instant::now();
    let submitted = submit(range, "r@example.org");
    let deadline = Instant::now() + Duration::from_secs(600);
    while times.delivered_count.load(Ordering::SeqCst) < end {
        assert!(
            Instant::now() < deadline,
            "the healthy messages did not all arrive"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (count / submitted, count / started.elapsed().as_secs_f64())
}

/// herald's RSS at rest (KB): the lowest of samples every 250 ms over the 3 s after the
/// queue settled (the queue gives memory back a second after a burst of arrivals is settled;
/// nothing grows meanwhile).
fn steady_rss(pid: u32) -> u64 {
    let mut lowest = rss_kb(pid, "VmRSS:");
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        lowest = lowest.min(rss_kb(pid, "VmRSS:"));
    }
    lowest
}

/// Waits until herald has read its whole spool back after a start (`recovering` gone from
/// `herald queue summary`), polling every 100 ms.
fn wait_recovered(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        assert!(Instant::now() < deadline, "the spool was not recovered");
        let (ok, v) = summary_json(config);
        if ok && v["recovering"] != true {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes under `dir`: (file lengths, blocks allocated, lengths by kind of file).
fn du(dir: &Path) -> (u64, u64, String) {
    use std::os::unix::fs::MetadataExt as _;
    let (mut total, mut allocated) = (0, 0);
    let mut kinds: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    total += m.len();
                    allocated += m.blocks() * 512;
                    let path = e.path();
                    let kind = path
                        .extension()
                        .map_or("other".into(), |x| x.to_string_lossy().into_owned());
                    let k = kinds.entry(kind).or_default();
                    k.0 += 1;
                    k.1 += m.len();
                }
                Err(_) => {}
            }
        }
    }
    let kinds = kinds
        .iter()
        .map(|(k, (n, b))| format!("{n} .{k} {:.0} MB", *b as f64 / 1e6))
        .collect::<Vec<_>>()
        .join(", ");
    (total, allocated, kinds)
}
