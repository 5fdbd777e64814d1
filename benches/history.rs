//! Message history benchmark (not a test): loads BENCH_EVENTS (1 000 000) events into a fresh
//! history database the way herald's writer does (batches of 2000 in one transaction, every
//! index in place), then times each kind of search `herald log search` and `/messages` make,
//! newest first with the default limit of 100. The target is under a second each.
//!
//! `cargo bench --bench history` — BENCH_EVENTS sets the size. The data: 250 000 messages of
//! 4 events (accepted, deferred, delivered or bounced…) over 30 days, 50 000 recipients,
//! 20 senders, 10 apps.

use std::sync::Arc;
use std::time::Instant;

use herald::events::{Event, EventKind};
use herald::history::db;
use herald::history::search::Query;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: usize, start: u64) -> Event {
    let msg = i / 4;
    let kind = match i % 4 {
        0 => EventKind::Accepted,
        1 => EventKind::Deferred,
        2 if msg.is_multiple_of(50) => EventKind::Bounced,
        2 => EventKind::Delivered,
        _ => EventKind::Deferred,
    };
    // 30 days spread evenly.
    let time = start + (i as u64 * 30 * 86_400) / 1_000_000;
    let mut e = Event::new(
        kind,
        time,
        format!("user{}@domain{}.example", msg % 50_000, msg % 997),
    );
    e.node = "bench.example.test".into();
    e.app = Some(format!("app{}", msg % 10));
    e.queue_id = Some(format!("{msg:016x}"));
    e.message_id = Some(format!("{msg}.{}@example.test", msg * 7919));
    e.sender = format!("sender{}@example.test", msg % 20);
    e.remote = Some(format!(
        "mx{}.domain{}.example [192.0.2.{}]",
        msg % 3,
        msg % 997,
        msg % 250
    ));
    e.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    e.tls_policy = Some("opportunistic".into());
    e.reply = Some("250 2.0.0 OK queued as 4F2A1B".into());
    e.attempt = Some((i % 4) as u32);
    e
}

fn main() {
    let total = env_num("BENCH_EVENTS", 1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.sqlite");
    let mut conn = db::open(&path).expect("open");
    let start = 1_796_000_000;
    let loading = Instant::now();
    let mut i = 0;
    while i < total {
        let n = (total - i).min(2000);
        let batch: Vec<Arc<Event>> = (i..i + n).map(|j| Arc::new(event(j, start))).collect();
        let rules = db::OutboxRules {
            webhook_apps: &|_| false,
            backlog_of: &|_| 0,
            max_backlog: 0,
            batch_size: 100,
            now: start,
        };
        db::insert(&mut conn, &batch, &rules).expect("insert");
        i += n;
    }
    let load = loading.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "loaded {total} events in {:.1} s ({:.0} events/s), database {:.0} MB",
        load.as_secs_f64(),
        total as f64 / load.as_secs_f64(),
        size as f64 / 1e6
    );
    let msg = total / 4 / 2;
    let end = start + 30 * 86_400;
    let cases: Vec<(&str, Query)> = vec![
        (
            "recipient",
            Query {
                recipient: Some(format!("user{}@domain{}.example", msg % 50_000, msg % 997)),
                ..Query::default()
            },
        ),
        (
            "sender + status",
            Query {
                sender: Some("sender7@example.test".into()),
                status: Some("bounced".into()),
                ..Query::default()
            },
        ),
        (
            "app, last day",
            Query {
                app: Some("app3".into()),
                since: Some(end - 86_400),
                ..Query::default()
            },
        ),
        (
            "message-id",
            Query {
                message_id: Some(format!("<{msg}.{}@example.test>", msg * 7919)),
                ..Query::default()
            },
        ),
        (
            "queue id",
            Query {
                queue_id: Some(format!("{msg:016x}")),
                ..Query::default()
            },
        ),
        (
            "status, a week in the middle",
            Query {
                status: Some("bounced".into()),
                since: Some(start + 10 * 86_400),
                until: Some(start + 17 * 86_400),
                ..Query::default()
            },
        ),
        ("everything, newest", Query::default()),
        (
            "recipient not present",
            Query {
                recipient: Some("nobody@nowhere.example".into()),
                ..Query::default()
            },
        ),
        (
            "status + app + time, 1000 rows",
            Query {
                status: Some("delivered".into()),
                app: Some("app1".into()),
                since: Some(start),
                until: Some(end),
                limit: Some(1000),
                ..Query::default()
            },
        ),
    ];
    let mut worst = 0.0f64;
    for (name, q) in cases {
        // First run cold-ish (just loaded), then the best of 5.
        let mut best = f64::MAX;
        let mut rows = 0;
        for _ in 0..5 {
            let t = Instant::now();
            rows = db::search(&conn, &q).expect("search").len();
            best = best.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        worst = worst.max(best);
        println!("search by {name:<32} {rows:>5} rows  {best:>8.2} ms");
    }
    println!("slowest search: {worst:.2} ms over {total} events (target: under 1000 ms)");
}
