//! The cost of the RCPT suppression check (issue 24), alone: `Suppressions::lookup` against an
//! index of N addresses (SUPPRESSED, default 100 000), half of the look-ups hits, half misses.
//! CPU time of the looking thread, compared with the delivery benchmark's CPU per message
//! (README "Benchmark").
//!
//! `cargo run --release --example suppress_lookup` (a debug build overstates the cost).

/// CPU time of this thread in nanoseconds (wall time would count other processes' turns).
fn thread_cpu() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("SUPPRESSED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!("[server]\ndata_dir = \"{}\"\n", dir.path().display()),
    )?;
    let cfg = herald::config::Config::load(&config)?;
    let list = herald::suppress::Suppressions::open(&cfg, None).await?;
    let now = herald::clock::unix_now() as i64;
    let news = (0..n)
        .map(|i| herald::suppress::NewSuppression {
            domain: "example.com".into(),
            app: None,
            address: format!("gone-{i}@example.org"),
            reason: herald::suppress::Reason::HardBounce,
            detail: String::new(),
            at: now,
        })
        .collect();
    list.record_many(news).await?;
    let rounds = 1_000_000;
    // Misses (the common RCPT: an address on no list), then hits (refused recipients).
    for (what, make) in [
        (
            "miss",
            Box::new(|i: usize| format!("reader-{i}@example.org")) as Box<dyn Fn(usize) -> String>,
        ),
        (
            "hit",
            Box::new(move |i: usize| format!("gone-{}@example.org", i * 7 % n.max(1))),
        ),
    ] {
        let addresses: Vec<String> = (0..1000).map(&make).collect();
        let started = thread_cpu();
        let mut hits = 0usize;
        for i in 0..rounds {
            let a = &addresses[i % addresses.len()];
            if list.lookup("app@example.com", Some("demo"), a).is_some() {
                hits += 1;
            }
        }
        let per = (thread_cpu() - started) as f64 / rounds as f64;
        println!(
            "suppression look-up, {what}: {per:.0} ns per RCPT ({n} addresses listed, {hits} of {rounds} refused)"
        );
    }
    Ok(())
}
