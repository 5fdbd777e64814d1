//! `herald log search`: the message history — what happened to which recipient, when, and
//! what the remote answered — by recipient, sender, app, Message-ID, queue id, status and
//! time range. Reads the history database directly (a running herald keeps writing to it).

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::UsageError;
use crate::history::db::{self, StoredEvent};
use crate::history::search::{Form, Query};

/// `herald log …`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Events matching every criterion given, newest first.
    Search(SearchArgs),
}

/// Arguments of `herald log search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The recipient address (case-insensitive).
    #[arg(long, short)]
    pub recipient: Option<String>,
    /// The envelope sender.
    #[arg(long, short)]
    pub sender: Option<String>,
    /// The app.
    #[arg(long)]
    pub app: Option<String>,
    /// The Message-ID (angle brackets optional).
    #[arg(long)]
    pub message_id: Option<String>,
    /// herald's queue id.
    #[arg(long)]
    pub queue_id: Option<String>,
    /// accepted, delivered, deferred, bounced, expired, refused, suppressed, complained, …
    #[arg(long)]
    pub status: Option<String>,
    /// From: unix seconds, RFC 3339, or an age such as 2h or 3days.
    #[arg(long)]
    pub since: Option<String>,
    /// Up to: unix seconds, RFC 3339, or an age.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON (an array of events) for scripts instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Runs `herald log`.
pub async fn run(config: &Path, cmd: LogCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    let LogCommand::Search(a) = cmd;
    let form = Form {
        recipient: a.recipient.unwrap_or_default(),
        sender: a.sender.unwrap_or_default(),
        app: a.app.unwrap_or_default(),
        message_id: a.message_id.unwrap_or_default(),
        queue_id: a.queue_id.unwrap_or_default(),
        status: a.status.unwrap_or_default(),
        since: a.since.unwrap_or_default(),
        until: a.until.unwrap_or_default(),
        limit: a.limit.to_string(),
    };
    let q = form
        .query(crate::clock::unix_now())
        .map_err(|e| UsageError(e.to_string()))?;
    let events = match &cfg.cluster {
        Some(cluster) => {
            let db = crate::cluster::open(cluster).await?;
            let pg = crate::history::pg::PgHistory::open(db).await?;
            pg.search(&q).await?
        }
        None => local(&cfg, &q)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&events)?);
    } else if events.is_empty() {
        println!("no events match");
    } else {
        for e in &events {
            println!("{}", line(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// This node's history file.
fn local(cfg: &crate::config::Config, q: &Query) -> anyhow::Result<Vec<StoredEvent>> {
    let path = crate::history::database_path(cfg);
    if !path.exists() {
        anyhow::bail!(
            "no message history at {} yet (herald serve creates it; [history] database)",
            path.display()
        );
    }
    let conn = db::open(&path)?;
    Ok(db::search(&conn, q)?)
}

/// One event on one line: time, kind, recipient, queue id, then what is known.
fn line(e: &StoredEvent) -> String {
    let ev = &e.event;
    let time = chrono::DateTime::from_timestamp(ev.time as i64, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut out = format!(
        "{time}  {:<10} {}  queue {}",
        ev.kind.as_str(),
        if ev.recipient.is_empty() {
            "-"
        } else {
            &ev.recipient
        },
        ev.queue_id.as_deref().unwrap_or("-"),
    );
    if let Some(app) = &ev.app {
        out.push_str(&format!("  app {app}"));
    }
    if let Some(a) = ev.attempt {
        out.push_str(&format!("  attempt {a}"));
    }
    if let Some(r) = &ev.remote {
        out.push_str(&format!("  {r}"));
    }
    if let Some(r) = &ev.reply {
        out.push_str(&format!("  \"{r}\""));
    }
    out
}
