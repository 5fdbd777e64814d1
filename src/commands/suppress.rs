//! `herald suppress`: the suppression list (issue 24). Works on the store directly (the
//! SQLite file in `data_dir`, or the cluster's PostgreSQL), so it works whether herald runs or
//! not; a running herald takes the change up within `[bounce] refresh_interval`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use super::UsageError;
use crate::suppress::{Entry, NewSuppression, Reason, Suppressions};

/// File formats of import and export.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// `domain,app,address,reason,first_at,last_at,count,expires_at,detail` with a header line.
    Csv,
    /// A JSON array of entries (as `GET /suppressions` gives).
    Json,
}

/// `herald suppress` subcommands.
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// The suppressed addresses (optionally of one sending domain).
    List {
        /// Only this sending domain.
        #[arg(long)]
        domain: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Suppress an address for a sending domain (reason `manual` unless given).
    Add {
        /// The sending domain (e.g. example.com).
        domain: String,
        /// The recipient address.
        address: String,
        /// Only for this app (default: every app of the domain).
        #[arg(long)]
        app: Option<String>,
        /// hard_bounce, complaint, manual or unsubscribe.
        #[arg(long, default_value = "manual")]
        reason: String,
        /// A note kept with the entry.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove an address from a sending domain's list.
    Remove {
        /// The sending domain.
        domain: String,
        /// The recipient address.
        address: String,
        /// The app's own entry (default: the domain-wide one).
        #[arg(long)]
        app: Option<String>,
    },
    /// Add the entries of a CSV or JSON file (as `export` writes; in CSV only `domain` and
    /// `address` are required, `reason` defaults to `manual`).
    Import {
        /// The file.
        file: PathBuf,
        /// Its format (default: from the file name's extension).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Write the list to stdout.
    Export {
        /// The format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Only this sending domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

/// Opens the list the configuration names (PostgreSQL with `[cluster]`).
pub async fn open(config: &Path) -> anyhow::Result<Suppressions> {
    let cfg = super::load_config(config)?;
    let db = match &cfg.cluster {
        Some(c) => Some(crate::cluster::open(c).await?),
        None => None,
    };
    Ok(Suppressions::open(&cfg, db).await?)
}

/// Runs a `herald suppress` subcommand.
pub async fn run(config: &Path, cmd: SuppressCommand) -> anyhow::Result<ExitCode> {
    let list = open(config).await?;
    match cmd {
        SuppressCommand::List { domain, json } => {
            let entries = list.list(domain.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_table(&entries);
            }
        }
        SuppressCommand::Add {
            domain,
            address,
            app,
            reason,
            note,
        } => {
            let reason = parse_reason(&reason)?;
            let e = list
                .record(NewSuppression {
                    domain,
                    app,
                    address,
                    reason,
                    detail: note,
                    at: crate::clock::unix_now() as i64,
                })
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            println!(
                "suppressed {} for {} ({})",
                e.address,
                scope(&e),
                e.reason.as_str()
            );
        }
        SuppressCommand::Remove {
            domain,
            address,
            app,
        } => {
            if list.remove(&domain, app.as_deref(), &address).await? {
                println!("removed {address} from {domain}");
            } else {
                eprintln!("herald: {address} is not suppressed for {domain}");
                return Ok(ExitCode::from(1));
            }
        }
        SuppressCommand::Import { file, format } => {
            let format = match format {
                Some(f) => f,
                None if file.extension().is_some_and(|e| e == "json") => Format::Json,
                None => Format::Csv,
            };
            let text = std::fs::read_to_string(&file)
                .map_err(|e| UsageError(format!("{}: {e}", file.display())))?;
            let news = match format {
                Format::Json => from_json(&text)?,
                Format::Csv => from_csv(&text)?,
            };
            let n = list
                .record_many(news)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            println!("imported {n} entr{}", if n == 1 { "y" } else { "ies" });
        }
        SuppressCommand::Export { format, domain } => {
            let entries = list.list(domain.as_deref()).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
                Format::Csv => print!("{}", to_csv(&entries)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_reason(s: &str) -> anyhow::Result<Reason> {
    Reason::parse(s).ok_or_else(|| {
        UsageError(format!(
            "reason {s:?}: use hard_bounce, complaint, manual or unsubscribe"
        ))
        .into()
    })
}

fn scope(e: &Entry) -> String {
    if e.app.is_empty() {
        e.domain.clone()
    } else {
        format!("{} (app {})", e.domain, e.app)
    }
}

fn date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn print_table(entries: &[Entry]) {
    if entries.is_empty() {
        println!("no suppressed addresses");
        return;
    }
    println!(
        "{:<24} {:<10} {:<32} {:<12} {:<10} {:<10} {:>5} {:<10}",
        "DOMAIN", "APP", "ADDRESS", "REASON", "FIRST", "LAST", "COUNT", "EXPIRES"
    );
    for e in entries {
        println!(
            "{:<24} {:<10} {:<32} {:<12} {:<10} {:<10} {:>5} {:<10}",
            e.domain,
            if e.app.is_empty() { "-" } else { &e.app },
            e.address,
            e.reason.as_str(),
            date(e.first_at),
            date(e.last_at),
            e.count,
            e.expires_at.map(date).unwrap_or_else(|| "never".into())
        );
    }
}

const CSV_HEADER: &str = "domain,app,address,reason,first_at,last_at,count,expires_at,detail";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The entries as CSV with a header line.
pub fn to_csv(entries: &[Entry]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            csv_field(&e.domain),
            csv_field(&e.app),
            csv_field(&e.address),
            e.reason.as_str(),
            e.first_at,
            e.last_at,
            e.count,
            e.expires_at.map(|t| t.to_string()).unwrap_or_default(),
            csv_field(&e.detail)
        ));
    }
    out
}

/// Splits one CSV line into fields (quotes with doubled `""` inside).
fn csv_split(line: &str) -> Vec<String> {
    let (mut fields, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Reads CSV: a header line naming the columns (at least `domain` and `address`).
fn from_csv(text: &str) -> anyhow::Result<Vec<NewSuppression>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = csv_split(lines.next().unwrap_or(""));
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(d), Some(a)) = (col("domain"), col("address")) else {
        return Err(UsageError(
            "the CSV needs a header line naming at least the columns domain and address".into(),
        )
        .into());
    };
    let (app, reason, detail, last) = (col("app"), col("reason"), col("detail"), col("last_at"));
    let now = crate::clock::unix_now() as i64;
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let f = csv_split(line);
        let get = |c: Option<usize>| c.and_then(|c| f.get(c)).map(|s| s.trim().to_string());
        let reason = match get(reason).filter(|r| !r.is_empty()) {
            Some(r) => parse_reason(&r).map_err(|e| UsageError(format!("line {}: {e}", i + 2)))?,
            None => Reason::Manual,
        };
        out.push(NewSuppression {
            domain: get(Some(d)).unwrap_or_default(),
            app: get(app).filter(|a| !a.is_empty()),
            address: get(Some(a)).unwrap_or_default(),
            reason,
            detail: get(detail).unwrap_or_default(),
            at: get(last).and_then(|t| t.parse().ok()).unwrap_or(now),
        });
    }
    Ok(out)
}

fn from_json(text: &str) -> anyhow::Result<Vec<NewSuppression>> {
    let entries: Vec<Entry> = serde_json::from_str(text)
        .map_err(|e| UsageError(format!("not a JSON array of suppressions: {e}")))?;
    Ok(entries
        .into_iter()
        .map(|e| NewSuppression {
            domain: e.domain,
            app: (!e.app.is_empty()).then_some(e.app),
            address: e.address,
            reason: e.reason,
            detail: e.detail,
            at: e.last_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_quotes_and_commas() {
        let e = Entry {
            domain: "example.com".into(),
            app: String::new(),
            address: "a@x.test".into(),
            reason: Reason::HardBounce,
            detail: "550 5.1.1 \"no\", really".into(),
            first_at: 1,
            last_at: 2,
            count: 3,
            expires_at: None,
        };
        let text = to_csv(&[e]);
        let back = from_csv(&text).expect("csv");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].detail, "550 5.1.1 \"no\", really");
        assert_eq!(back[0].reason, Reason::HardBounce);
        assert_eq!(back[0].at, 2);
        assert!(from_csv("address\nx@y").is_err());
    }
}
