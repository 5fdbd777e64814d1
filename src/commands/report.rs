//! `herald report`: TLS-RPT reports.
//!
//! `flush` asks a running herald to send its pending reports through the admin endpoint
//! (`POST /report/flush`), so that the counts and the queue stay with the process that owns
//! them. When no herald answers there, it flushes directly: reports for `mailto:` addresses
//! are written into the spool directory, where herald's delivery picks them up.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Config;
use crate::report::send::ReportSender;
use crate::report::{self, FlushSummary, TlsReporter};
use crate::signing::Signer;
use crate::spool::{Spool, SpoolLock};

/// `herald report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Send every pending TLS-RPT report now.
    Flush,
    /// Print the counts not yet reported, per policy domain and day.
    Pending,
}

/// Runs an `herald report` subcommand.
pub async fn run(config: &Path, cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    match cmd {
        ReportCommand::Flush => flush(&cfg).await,
        ReportCommand::Pending => {
            let reporter = TlsReporter::open(&cfg)?;
            let pending = reporter.pending();
            if pending.is_empty() {
                println!("no pending TLS-RPT counts");
            }
            for c in pending {
                println!(
                    "{} {}: {} successful, {} failed session(s)",
                    c.day,
                    c.domain,
                    c.success,
                    c.failure_total()
                );
                print_failures(&c.failures);
                if let Some(t) = &c.tlsa {
                    let failed: u64 = t.failures.iter().map(|f| f.count).sum();
                    println!(
                        "  dane (tlsa, {}): {} successful, {failed} failed session(s)",
                        t.mx_hosts.join(" "),
                        t.success
                    );
                    print_failures(&t.failures);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One line per failure group: result type, count, MX host and address.
fn print_failures(failures: &[crate::report::store::FailureCount]) {
    for f in failures {
        let result = serde_json::to_value(f.result_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "  {} x{} mx={} ip={}",
            result,
            f.count,
            f.mx_host.as_deref().unwrap_or("-"),
            f.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into())
        );
    }
}

async fn flush(cfg: &Config) -> anyhow::Result<ExitCode> {
    if !cfg.report.enabled {
        println!("TLS-RPT reporting is off ([report] enabled = false); nothing sent");
        return Ok(ExitCode::SUCCESS);
    }
    let summary = match ask_running_herald(cfg).await {
        Some(summary) => summary,
        None => {
            let lock = SpoolLock::try_acquire(&cfg.spool_dir()).map_err(|e| {
                anyhow::anyhow!("cannot open the spool {}: {e}", cfg.spool_dir().display())
            })?;
            if lock.is_none() {
                eprintln!(
                    "herald: a herald is serving this spool but its admin endpoint did not \
                     answer; report mail is written to the spool and sent when that herald \
                     next starts (set [admin] listen to flush through it)"
                );
            }
            let signer = Arc::new(Signer::load(cfg)?);
            let (spool, _arrivals) = Spool::open_dir(&cfg.spool_dir()).map_err(|e| {
                anyhow::anyhow!("cannot open the spool {}: {e}", cfg.spool_dir().display())
            })?;
            let reporter = TlsReporter::open(cfg)?;
            let sender = ReportSender::new(cfg, spool, signer)?;
            report::flush(&reporter, &sender).await?
        }
    };
    print_summary(&summary);
    Ok(if summary.kept.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Asks the admin endpoint of a running herald to flush; `None` when none answers.
async fn ask_running_herald(cfg: &Config) -> Option<FlushSummary> {
    let base = crate::admin::client::base_url(cfg)?;
    let client = match crate::admin::client::http_client(cfg, Duration::from_secs(300)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e:#}");
            return None;
        }
    };
    let url = format!("{base}{}", report::FLUSH_PATH);
    match client.post(&url).send().await {
        Ok(response) if response.status().is_success() => match response
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(summary) => Some(summary),
            Err(e) => {
                eprintln!("herald: {url} flushed but its summary is unreadable ({e})");
                Some(FlushSummary::default())
            }
        },
        Ok(response) => {
            eprintln!(
                "herald: {url} answered {}; flushing directly",
                response.status()
            );
            None
        }
        Err(_) => None,
    }
}

fn print_summary(s: &FlushSummary) {
    println!("{} report(s) built from pending counts", s.built);
    for line in &s.sent {
        println!("sent     {line}");
    }
    for line in &s.kept {
        println!("kept     {line} (retried at the next flush)");
    }
    for line in &s.dropped {
        println!("dropped  {line}");
    }
    if s.sent.is_empty() && s.kept.is_empty() && s.dropped.is_empty() {
        println!("nothing to send");
    }
}
