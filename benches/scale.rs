//! Big-queue benchmark (not a test), issue 29: N messages accepted and deferred (no name
//! server answers, so every attempt fails and waits an hour), then what the operator's tools
//! and a restart cost with them queued. Prints herald's memory per deferred message, how long
//! `herald queue summary`, `herald queue list --limit 100` and the whole `herald queue list`
//! take against the running herald, and the time from a restart to `herald ready`.
//!
//! `cargo bench --bench scale` — tune with BENCH_QUEUED (100000), BENCH_CLIENTS (20),
//! BENCH_SIZE (1024 bytes).

#[allow(dead_code)]
#[path = "../tests/support/ca.rs"]
mod ca;
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use common::sink::{Times, submitter};
use common::{HOST, Herald, env_num, load_average, rss_kb};

/// Runs `herald queue ARGS` against `config`: (seconds taken, bytes printed).
fn queue(config: &Path, args: &[&str]) -> (f64, usize) {
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
    (took, out.stdout.len())
}

/// Waits until herald has tried (and deferred) every message once: `herald queue summary`
/// shows none in flight and none due.
fn wait_settled(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut calm = 0;
    while calm < 2 {
        assert!(Instant::now() < deadline, "the queue did not settle");
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(config)
            .args(["queue", "summary", "--json"])
            .output()
            .expect("herald queue summary");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        calm = if v["in_flight"] == 0 && v["due"] == 0 && v["messages"] != 0 {
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
    let rest = format!(
        "{}[delivery]\nretry_schedule = [\"1h\"]\n[admin]\nlisten = \"{admin}\"\n\
         [history]\nenabled = false\n",
        common::NO_DNS
    );
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
    let times = Times::new(queued);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                tokio::spawn(submitter(
                    addr,
                    tls.clone(),
                    next.clone(),
                    times.clone(),
                    size,
                    None,
                ))
            })
            .collect();
        for t in tasks {
            t.await.expect("submitter");
        }
    });
    let accepting = started.elapsed().as_secs_f64();
    wait_settled(&config);
    let full = rss_kb(herald.pid, "VmRSS:");
    let spool_bytes = du(&dir.path().join("spool"));

    let (summary, _) = queue(&config, &["summary", "--json"]);
    let (page, _) = queue(&config, &["list", "--limit", "100"]);
    let (list, list_bytes) = queue(&config, &["list"]);
    drop(herald);

    let restart = Instant::now();
    let again = Herald::start(&config, &config_text, Some("warn,herald=info"), true);
    let ready = restart.elapsed().as_secs_f64();
    wait_settled(&config);
    let after_restart = rss_kb(again.pid, "VmRSS:");
    let peak = rss_kb(again.pid, "VmHWM:");
    let (summary2, _) = queue(&config, &["summary"]);
    drop(again);

    let per = |kb: u64| (kb.saturating_sub(idle) as f64 * 1024.0) / queued as f64;
    println!("herald big-queue benchmark: {queued} messages of {size} bytes, all deferred");
    println!(
        "  load average (1 min) before   {load_before}; after {}",
        load_average()
    );
    println!(
        "  accepted                      {queued} in {accepting:.1} s ({:.0}/s, {clients} clients, STARTTLS + AUTH)",
        queued as f64 / accepting
    );
    println!("  herald RSS idle               {idle} KB");
    println!(
        "  herald RSS, all deferred      {full} KB ({:.0} B per deferred message)",
        per(full)
    );
    println!(
        "  spool on disk                 {:.0} MB ({:.1} KB per message)",
        spool_bytes as f64 / 1e6,
        spool_bytes as f64 / 1024.0 / queued as f64
    );
    println!("  herald queue summary --json   {summary:.2} s (CLI, through the admin endpoint)");
    println!("  herald queue list --limit 100 {page:.2} s");
    println!(
        "  herald queue list (all)       {list:.2} s ({:.1} MB of text)",
        list_bytes as f64 / 1e6
    );
    println!("  restart until herald ready    {ready:.2} s");
    println!(
        "  herald RSS after the restart  {after_restart} KB ({:.0} B per message; peak {peak} KB during recovery)",
        per(after_restart)
    );
    println!("  herald queue summary then     {summary2:.2} s");
}

/// Bytes under `dir` (files only).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
