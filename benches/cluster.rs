//! Cluster benchmark (not a test): submission and end-to-end throughput of one node on the
//! file spool, one node on PostgreSQL and three nodes on one PostgreSQL (`[cluster]`). For each,
//! N concurrent apps submit over STARTTLS + AUTH PLAIN, spread evenly over the nodes; herald
//! signs, stores and delivers to a loopback MX found through a loopback DNS server. PostgreSQL
//! 15 is started from Debian's packages (as in the tests) in a temporary directory.
//!
//! With PostgreSQL it also counts the database's transactions per message (`pg_stat_database`:
//! committed and rolled back, every node's, background work such as lease renewal included):
//! one statement outside a transaction is one, so this is a floor on the round trips. And the
//! statements per message (`pg_stat_statements`, BEGIN and COMMIT included: about one round
//! trip each), with the statements that cost the most calls per message.
//!
//! `cargo bench --bench cluster` — tune with BENCH_CLIENTS (30), BENCH_MESSAGES (3000 per
//! set-up), BENCH_SIZE (4096 bytes).

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

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::sink::{Times, start_mx, submitter};
use common::{HOST, Herald, env_num};

/// Used by the included DNS and PostgreSQL helpers to pick their addresses.
fn free_addr() -> SocketAddr {
    common::free_addr()
}

/// Transactions the database has seen so far (all databases, committed and rolled back).
fn transactions(pg: &postgres::Postgres) -> f64 {
    pg.query("SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database")
        .trim()
        .parse()
        .unwrap_or(0.0)
}

/// Loads `pg_stat_statements` into `pg` (a restart) so the statements can be counted.
fn count_statements(pg: &mut postgres::Postgres) {
    pg.query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'");
    pg.stop();
    pg.run();
    pg.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
}

/// Statements per message since the last reset, and the busiest ones (calls per message).
fn statements(pg: &postgres::Postgres, total: usize) -> (f64, Vec<(f64, String)>) {
    let per = |calls: &str| calls.trim().parse::<f64>().unwrap_or(0.0) / total as f64;
    let all = per(&pg.query(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements \
         WHERE query NOT LIKE '%pg_stat_%'",
    ));
    let top = pg
        .query(
            "SELECT calls, regexp_replace(left(query, 90), '\\s+', ' ', 'g') \
             FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_%' \
             ORDER BY calls DESC LIMIT 8",
        )
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(calls, q)| (per(calls), q.to_string()))
        .collect();
    (all, top)
}

/// One set-up's figures: (submitted per second, delivered per second end to end, database
/// transactions per message).
fn run(
    name: &str,
    nodes: usize,
    pg: Option<&postgres::Postgres>,
    dns: &dns::DnsServer,
    (clients, total, size): (usize, usize, usize),
) -> (f64, f64, f64) {
    let ca = ca::TestCa::new();
    let times = Times::new(total);
    let mx = start_mx(times.clone());
    let mut dirs = Vec::new();
    let mut heralds = Vec::new();
    let mut addrs = Vec::new();
    for n in 0..nodes {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = ca.issue(&[HOST], ca::Validity::Current);
        common::write_tls(dir.path(), cert, key);
        let submission = free_addr();
        let mut rest = format!(
            "[dns]\nservers = [\"{dns}\"]\n[delivery]\nport = {port}\n",
            dns = dns.addr,
            port = mx.port(),
        );
        if let Some(pg) = pg {
            rest.push_str(&cluster_section(dir.path(), pg, &format!("{name}-{n}")));
        }
        let config = common::config(
            dir.path(),
            dir.path(),
            &format!("submission = \"{submission}\"\n"),
            "ed25519",
            &rest,
        );
        heralds.push(Herald::start(
            &dir.path().join("herald.toml"),
            &config,
            Some("warn,herald=info"),
            true,
        ));
        addrs.push(submission);
        dirs.push(dir);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let tls = ca.client_config_trusting();
    let next = Arc::new(AtomicUsize::new(0));
    let xacts_before = pg.map(transactions);
    if let Some(pg) = pg {
        pg.query("SELECT pg_stat_statements_reset()");
    }
    let started = Instant::now();
    let submitted = rt.block_on(async {
        let done = times.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                tokio::spawn(submitter(
                    addrs[c % addrs.len()],
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
        let submitted = started.elapsed();
        if times.delivered_count.load(Ordering::SeqCst) < total {
            tokio::time::timeout(Duration::from_secs(600), done)
                .await
                .expect("every message delivered within 10 minutes");
        }
        submitted
    });
    let elapsed = started.elapsed();
    drop(heralds);
    // Backends report their counts when they end or within a second.
    std::thread::sleep(Duration::from_millis(1500));
    let per_message = match (pg, xacts_before) {
        (Some(pg), Some(before)) => (transactions(pg) - before) / total as f64,
        _ => 0.0,
    };
    (
        total as f64 / submitted.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        per_message,
    )
}

/// The `[cluster]` section of a node on `pg`.
fn cluster_section(dir: &Path, pg: &postgres::Postgres, node: &str) -> String {
    format!(
        "[cluster]\ndatabase_url = \"{url}\"\npassword_file = \"{pw}\"\ntls = \"disable\"\n\
         node_id = \"{node}\"\n",
        url = pg.url(),
        pw = pg.password_file(dir).display(),
    )
}

fn main() {
    let clients = env_num("BENCH_CLIENTS", 30);
    let total = env_num("BENCH_MESSAGES", 3_000);
    let size = env_num("BENCH_SIZE", 4096);
    let dns = dns::DnsServer::start();
    dns.set_ttl(300);
    dns.add_mx("example.org", 10, "mx.example.org");
    dns.add_a("mx.example.org", Ipv4Addr::new(127, 0, 0, 1));
    let load = (clients, total, size);

    let file = run("file", 1, None, &dns, load);
    let mut pg = postgres::Postgres::start();
    count_statements(&mut pg);
    let pg1 = run("pg1", 1, Some(&pg), &dns, load);
    let pg1_statements = statements(&pg, total);
    drop(pg);
    let mut pg = postgres::Postgres::start();
    count_statements(&mut pg);
    let pg3 = run("pg3", 3, Some(&pg), &dns, load);
    let pg3_statements = statements(&pg, total);
    drop(pg);

    println!(
        "herald cluster benchmark: {total} messages of {size} bytes, {clients} clients (STARTTLS + AUTH PLAIN, DKIM ed25519), spread over the nodes"
    );
    println!(
        "  set-up                        submitted/s   delivered/s (end to end)   DB transactions/message"
    );
    for (name, (sub, e2e, db)) in [
        ("1 node, file spool", file),
        ("1 node, PostgreSQL", pg1),
        ("3 nodes, one PostgreSQL", pg3),
    ] {
        let db = if db > 0.0 {
            format!("{db:.1}")
        } else {
            "-".into()
        };
        println!("  {name:<28}  {sub:>11.0}   {e2e:>11.0}   {db:>23}");
    }
    for (name, (all, top)) in [
        ("1 node, PostgreSQL", pg1_statements),
        ("3 nodes, one PostgreSQL", pg3_statements),
    ] {
        println!(
            "  {name}: {all:.1} statements per message (pg_stat_statements); the most called:"
        );
        for (per, query) in top {
            println!("    {per:>6.2}/message  {query}");
        }
    }
}
