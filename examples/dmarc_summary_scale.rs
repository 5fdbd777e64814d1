//! The cost of `herald dmarc summary` over a year of DMARC reports (issue 31): builds a report
//! database of DAYS daily reports from each of ORGS organizations (the last one unverified),
//! ROWS rows each over SOURCES sending addresses, in the tables of a herald from before the
//! summary totals, then runs `herald dmarc summary --days 366 --json` on it: once to upgrade it
//! (the totals are backfilled on open), then RUNS times. Prints the wall time and the peak
//! resident memory (`ru_maxrss`) of each run.
//!
//! ```text
//! cargo build --locked --bin herald --example dmarc_summary_scale   # --release: release figures
//! target/debug/examples/dmarc_summary_scale                         # 500,415 rows
//! DAYS=365 ORGS=8 ROWS=1000 SOURCES=500 target/debug/examples/dmarc_summary_scale
//! ```
//!
//! `SCALE_DIR=dir` keeps the database there (built once, reused by the next run).
//!
//! `HERALD=/path/to/herald` measures another binary (an older herald reads the same database
//! without its totals: the "before" figures); by default the `herald` beside this example.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rusqlite::{Connection, params};

/// The tables of a report database from before the totals (as `herald` created them).
const OLD_SCHEMA: &str = r#"
CREATE TABLE mails (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL,
    origin TEXT NOT NULL, mail_from TEXT NOT NULL, rcpt TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE dmarc_reports (id INTEGER PRIMARY KEY,
    mail_id INTEGER NOT NULL REFERENCES mails(id), org TEXT NOT NULL,
    report_id TEXT NOT NULL, domain TEXT NOT NULL, begin_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL, policy TEXT NOT NULL, received_at INTEGER NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0, UNIQUE (org, report_id));
CREATE INDEX dmarc_reports_domain ON dmarc_reports(domain, end_at);
CREATE TABLE dmarc_rows (id INTEGER PRIMARY KEY,
    report INTEGER NOT NULL REFERENCES dmarc_reports(id), source_ip TEXT NOT NULL,
    count INTEGER NOT NULL, disposition TEXT NOT NULL, dkim_aligned INTEGER NOT NULL,
    spf_aligned INTEGER NOT NULL, header_from TEXT NOT NULL, dkim_json TEXT NOT NULL,
    spf_json TEXT NOT NULL);
CREATE INDEX dmarc_rows_report ON dmarc_rows(report);
CREATE INDEX mails_origin ON mails(origin, received_at);
CREATE INDEX dmarc_reports_mail ON dmarc_reports(mail_id);
"#;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the reports; returns the rows stored.
fn fill(path: &Path, days: i64, orgs: i64, rows: i64, sources: i64) -> anyhow::Result<i64> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(OLD_SCHEMA)?;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO mails (received_at, origin, mail_from, rcpt, raw)
         VALUES (0, 'import:scale', '', 'import', x'')",
        [],
    )?;
    let mail = tx.last_insert_rowid();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let today = now - now % 86_400;
    let mut stored = 0;
    {
        let mut report = tx.prepare(
            "INSERT INTO dmarc_reports (mail_id, org, report_id, domain, begin_at, end_at,
               policy, received_at, verified)
             VALUES (?1, ?2, ?3, 'example.com', ?4, ?5, 'none', ?5, ?6)",
        )?;
        let mut row = tx.prepare(
            "INSERT INTO dmarc_rows (report, source_ip, count, disposition, dkim_aligned,
               spf_aligned, header_from, dkim_json, spf_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'example.com', ?7, ?8)",
        )?;
        for day in 0..days {
            let begin = today - (days - day) * 86_400;
            for org in 0..orgs {
                let verified = org + 1 < orgs || orgs == 1;
                report.execute(params![
                    mail,
                    format!("org{org}.example"),
                    format!("{org}-{day}"),
                    begin,
                    begin + 86_399,
                    verified
                ])?;
                let id = tx.last_insert_rowid();
                for i in 0..rows {
                    let source = i % sources;
                    let ip = format!(
                        "10.{}.{}.{}",
                        source >> 16 & 255,
                        source >> 8 & 255,
                        source & 255
                    );
                    let dkim = (i / sources) % 3 != 2;
                    let spf = (i / sources) % 2 == 0;
                    let disposition = if dkim || spf { "none" } else { "quarantine" };
                    row.execute(params![
                        id,
                        ip,
                        i % 7 + 1,
                        disposition,
                        dkim,
                        spf,
                        format!(
                            r#"[["example.com","s{}","{}"]]"#,
                            source % 4,
                            if dkim { "pass" } else { "fail" }
                        ),
                        format!(
                            r#"[["example.com","{}"]]"#,
                            if spf { "pass" } else { "fail" }
                        ),
                    ])?;
                    stored += 1;
                }
            }
        }
    }
    tx.commit()?;
    Ok(stored)
}

/// A name server on loopback that answers every question at once with NXDOMAIN, so the
/// summary's DNS look-ups (SPF, PTR) cost the same, and little, before and after.
fn nxdomain_server() -> anyhow::Result<std::net::SocketAddr> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = socket.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            // QR, the question's opcode and RD kept, RA, RCODE 3; no answers or others.
            reply[2] = 0x80 | (buf[2] & 0x79);
            reply[3] = 0x80 | 3;
            reply[6..12].fill(0);
            let _ = socket.send_to(&reply, peer);
        }
    });
    Ok(addr)
}

/// One run: wall seconds, CPU seconds, peak resident MiB, its JSON.
struct Run {
    seconds: f64,
    cpu: f64,
    mib: f64,
    json: Vec<u8>,
}

/// Runs the summary.
fn summary(herald: &Path, config: &Path) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(herald)
        .arg("--config")
        .arg(config)
        .args(["dmarc", "summary", "--days", "366", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut o) = out {
            let _ = std::io::Read::read_to_end(&mut o, &mut buf);
        }
        buf
    });
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into values we own.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(waited == pid, "wait4 failed");
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "herald dmarc summary failed ({status})"
    );
    let json = reader.join().unwrap_or_default();
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Run {
        seconds,
        cpu: cpu(usage.ru_utime) + cpu(usage.ru_stime),
        mib: usage.ru_maxrss as f64 / 1024.0,
        json,
    })
}

fn main() -> anyhow::Result<()> {
    let (days, orgs, rows, sources) = (
        env("DAYS", 365),
        env("ORGS", 3),
        env("ROWS", 457),
        env("SOURCES", 50),
    );
    let runs = env("RUNS", 3);
    let herald: PathBuf = match std::env::var_os("HERALD") {
        Some(p) => p.into(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("herald"))
            .ok_or_else(|| anyhow::anyhow!("cannot find herald; set HERALD"))?,
    };
    let dir = match std::env::var_os("SCALE_DIR") {
        Some(d) => PathBuf::from(d),
        None => tempfile::tempdir()?.keep(),
    };
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("reports.sqlite");
    let config = dir.join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n\n[dns]\nservers = [\"{}\"]\n",
            dir.display(),
            nxdomain_server()?
        ),
    )?;
    if !db.exists() {
        let start = Instant::now();
        let stored = fill(&db, days, orgs, rows, sources)?;
        println!(
            "built {stored} rows ({days} days x {orgs} organizations x {rows} rows, {sources} \
             sources) in {:.1} s: {}",
            start.elapsed().as_secs_f64(),
            db.display()
        );
    }
    let size = std::fs::metadata(&db)?.len() as f64 / 1_048_576.0;
    println!("database {size:.0} MiB; herald {}", herald.display());
    for run in 0..=runs {
        let r = summary(&herald, &config)?;
        let what = if run == 0 { "first (upgrade)" } else { "again" };
        println!(
            "{what}: {:.2} s ({:.2} s CPU), peak {:.0} MiB resident, {} bytes of JSON",
            r.seconds,
            r.cpu,
            r.mib,
            r.json.len()
        );
        // The last output, to compare two binaries' (`generated_at` and `since` differ).
        std::fs::write(dir.join("summary.json"), &r.json)?;
    }
    Ok(())
}
