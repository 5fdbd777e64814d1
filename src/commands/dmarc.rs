//! `herald dmarc`: the aggregate reports received — a summary with a verdict per domain, the
//! sources of one domain, importing reports saved elsewhere, and the reports that could not be
//! read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::feedback::parse::{Limits, parse_file};
use crate::feedback::summary::{self, DomainSummary, Summary};
use crate::store::{self, ReceivedMail};

/// `herald dmarc …`
#[derive(Debug, Subcommand)]
pub enum DmarcCommand {
    /// Per domain: messages, DMARC pass share, sources by class, and the next policy step.
    Summary(SummaryArgs),
    /// Every sending address of one domain, with its class, PTR name and results.
    Sources(SourcesArgs),
    /// Load reports saved elsewhere: .xml, .json, .gz, .zip, .eml or an mbox file.
    Import(ImportArgs),
    /// Report parts that could not be read, with the reason.
    Rejected(RejectedArgs),
}

/// Arguments of `herald dmarc summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Only this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Reports of the last N days.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `herald dmarc sources`.
#[derive(Debug, Args)]
pub struct SourcesArgs {
    /// The domain.
    pub domain: String,
    /// Reports of the last N days.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `herald dmarc import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to load.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Arguments of `herald dmarc rejected`.
#[derive(Debug, Args)]
pub struct RejectedArgs {
    /// How many to show, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `herald dmarc` subcommand.
pub async fn run(config: &Path, cmd: DmarcCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    let store = store::open(&cfg).await?;
    match cmd {
        DmarcCommand::Summary(a) => {
            let s = summary::build(&cfg, store.as_ref(), a.domain.as_deref(), a.days).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render_summary(&s));
            }
        }
        DmarcCommand::Sources(a) => {
            let s = summary::build(&cfg, store.as_ref(), Some(&a.domain), a.days).await?;
            let Some(d) = s.domains.first() else {
                eprintln!(
                    "herald: no DMARC reports for {} in the last {} days",
                    a.domain, a.days
                );
                return Ok(ExitCode::from(1));
            };
            if a.json {
                println!("{}", serde_json::to_string_pretty(&d.sources)?);
            } else {
                print!("{}", render_sources(d));
            }
        }
        DmarcCommand::Import(a) => {
            let limits = Limits::from_config(&cfg.feedback);
            let (mut failed, mut unreadable) = (false, false);
            for file in &a.files {
                let bytes = match std::fs::read(file) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("herald: cannot read {}: {e}", file.display());
                        failed = true;
                        continue;
                    }
                };
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                for (raw, items) in parse_file(&name, &bytes, &limits) {
                    let mail = ReceivedMail {
                        received_at: store::now(),
                        origin: format!("import:{}", file.display()),
                        mail_from: String::new(),
                        rcpt: "import".into(),
                        raw: raw.to_vec(),
                        // The operator vouches for the files they import.
                        verified: store::imported(&items),
                    };
                    let o = store.accept(&mail, &items).await?;
                    println!(
                        "{}: {} stored, {} duplicate, {} unreadable",
                        file.display(),
                        o.stored,
                        o.duplicates,
                        o.rejected
                    );
                    if o.rejected > 0 {
                        unreadable = true;
                    }
                }
            }
            if unreadable {
                eprintln!("herald: some reports could not be read; see `herald dmarc rejected`");
            }
            if failed || unreadable {
                return Ok(ExitCode::from(1));
            }
        }
        DmarcCommand::Rejected(a) => {
            let list = store.rejected(a.limit).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no rejected reports");
            } else {
                for r in list {
                    println!(
                        "{}  mail {}  from {}  {}: {}",
                        when(r.received_at),
                        r.mail_id,
                        r.origin,
                        r.part,
                        r.error
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// The summary as terminal text.
pub fn render_summary(s: &Summary) -> String {
    let mut out = format!(
        "DMARC aggregate reports, last {} days ({} mails received, {} reports, {} duplicates, \
         {} unreadable)\n",
        s.days,
        s.counters.mails,
        s.counters.dmarc_reports,
        s.counters.duplicates,
        s.counters.rejected
    );
    if s.domains.is_empty() {
        out.push_str(
            "\nno reports yet: publish the records of `herald dns` and allow receivers a day\n",
        );
    }
    for d in &s.domains {
        out.push_str(&format!(
            "\n{}{}: {} messages reported by {} organization{} ({}), {:.1}% DMARC pass, p={}\n",
            d.domain,
            if d.signed_by_herald {
                ""
            } else {
                " (not a herald signing domain)"
            },
            d.messages,
            d.reporters.len(),
            if d.reporters.len() == 1 { "" } else { "s" },
            d.reporters.join(", "),
            d.pass_rate,
            d.policy
        ));
        for class in [
            crate::feedback::classify::SourceClass::Herald,
            crate::feedback::classify::SourceClass::Authorized,
            crate::feedback::classify::SourceClass::Unknown,
        ] {
            let (n, m, p) = d
                .sources
                .iter()
                .filter(|s| s.class == class)
                .fold((0, 0u64, 0u64), |(n, m, p), s| {
                    (n + 1, m + s.messages, p + s.pass)
                });
            if n > 0 {
                out.push_str(&format!(
                    "  {:<10} {n} sources, {m} messages, {:.1}% pass\n",
                    class.as_str(),
                    if m == 0 {
                        0.0
                    } else {
                        p as f64 * 100.0 / m as f64
                    }
                ));
            }
        }
        if d.unverified.reports > 0 {
            out.push_str(&format!(
                "  unverified {} reports, {} messages claimed by {} (not counted: mail not \
                 authenticated for the organization it names)\n",
                d.unverified.reports,
                d.unverified.messages,
                d.unverified.reporters.join(", ")
            ));
        }
        for h in &d.verdict.hurt {
            out.push_str(&format!("  ! {} failing: {}\n", h.failing, h.advice));
        }
        out.push_str(&format!(
            "  verdict: {} — {}\n",
            d.verdict.next, d.verdict.text
        ));
    }
    if !s.tls_reports.is_empty() {
        out.push_str("\nTLS-RPT reports received:\n");
        for t in &s.tls_reports {
            out.push_str(&format!(
                "  {} {}: {} successful, {} failed TLS sessions ({})\n",
                summary::utc_date(t.begin),
                t.org,
                t.successful,
                t.failed,
                t.domains.join(", ")
            ));
        }
    }
    out
}

/// One domain's sources as terminal text.
pub fn render_sources(d: &DomainSummary) -> String {
    let mut out = format!(
        "{:<40} {:<11} {:>9} {:>7} {:>7} {:>7}  {:<30} reporters\n",
        "source", "class", "messages", "pass%", "dkim", "spf", "ptr"
    );
    for s in &d.sources {
        out.push_str(&format!(
            "{:<40} {:<11} {:>9} {:>7.1} {:>7} {:>7}  {:<30} {}\n",
            s.ip.to_string(),
            s.class.as_str(),
            s.messages,
            s.pass_rate(),
            s.dkim_aligned,
            s.spf_aligned,
            s.ptr.as_deref().unwrap_or("-"),
            s.reporters.join(",")
        ));
    }
    out
}
