//! TLS-RPT in a cluster (`[cluster]`): every node's counts end up in one row per policy domain
//! and UTC day in PostgreSQL, and each report is built once and sent by one node.
//!
//! - Each node keeps counting in memory (and `counts.json`, so a restart loses nothing), and
//!   moves its counts into `herald_tlsrpt_counts` every [`SYNC_EVERY`], before each flush and
//!   at shutdown, merged into the row of the same domain and day (row lock, one transaction;
//!   the local copy is cleared only after the commit, so a crash repeats counts rather than
//!   losing them).
//! - A flush takes the counts rows (`DELETE … RETURNING`: a row is taken by one node only)
//!   and turns each into one report in `herald_tlsrpt_outbox`, in the same transaction. The
//!   periodic flush takes only days that have ended (UTC), so each domain gets one report per
//!   day covering every node's sessions, whichever node's timer fires first; `herald report
//!   flush` takes today's counts too, as on a single node.
//! - Each outbox report is sent by the node that locks its row (`FOR UPDATE SKIP LOCKED`),
//!   and removed (or its delivered `rua`s recorded) in that transaction.

use std::time::Duration;

use super::build::{self, Reporter, day_of};
use super::flush::FlushSummary;
use super::send::ReportSender;
use super::store::{DayCounts, OutboxItem};
use crate::cluster::Db;
use crate::cluster::db::io_error;

/// How often a node moves its counts into the database.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// Which counts a flush turns into reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Days {
    /// Every pending day, today included (`herald report flush`).
    All,
    /// Days that have ended (the periodic flush).
    Ended,
}

/// The cluster's TLS-RPT tables.
#[derive(Debug, Clone)]
pub struct ClusterReports {
    db: Db,
}

fn db_err(context: &str) -> impl Fn(tokio_postgres::Error) -> std::io::Error + '_ {
    move |e| io_error(context, e)
}

impl ClusterReports {
    /// TLS-RPT data in `db`.
    pub fn new(db: Db) -> ClusterReports {
        ClusterReports { db }
    }

    /// Adds `counts` to the database's rows (merging with what other nodes added).
    pub async fn push(&self, counts: &[DayCounts]) -> std::io::Result<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut client = self.db.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_err("tls-rpt: counts"))?;
        for c in counts {
            let row = tx
                .query_opt(
                    "SELECT counts FROM herald_tlsrpt_counts WHERE domain = $1 AND day = $2 \
                     FOR UPDATE",
                    &[&c.domain, &c.day],
                )
                .await
                .map_err(db_err("tls-rpt: counts"))?;
            let mut merged = c.clone();
            if let Some(row) = row {
                let json: serde_json::Value = row.get(0);
                match serde_json::from_value::<DayCounts>(json) {
                    Ok(theirs) => merged.merge(theirs),
                    Err(e) => tracing::error!(
                        domain = %c.domain, day = %c.day,
                        "tls-rpt: unreadable counts in the database replaced: {e}"
                    ),
                }
            }
            let json = serde_json::to_value(&merged).map_err(std::io::Error::other)?;
            tx.execute(
                "INSERT INTO herald_tlsrpt_counts (domain, day, counts) VALUES ($1, $2, $3) \
                 ON CONFLICT (domain, day) DO UPDATE SET counts = $3",
                &[&c.domain, &c.day, &json],
            )
            .await
            .map_err(db_err("tls-rpt: counts"))?;
        }
        tx.commit().await.map_err(db_err("tls-rpt: counts"))?;
        Ok(())
    }

    /// Takes the counts of `days` out of the database and turns each row into a report in the
    /// outbox, in one transaction. Returns how many reports were built.
    pub async fn build(&self, days: Days, reporter: &Reporter, now: u64) -> std::io::Result<usize> {
        let today = day_of(now as i64);
        let mut client = self.db.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_err("tls-rpt: build"))?;
        let rows = match days {
            Days::All => {
                tx.query("DELETE FROM herald_tlsrpt_counts RETURNING counts", &[])
                    .await
            }
            Days::Ended => {
                tx.query(
                    "DELETE FROM herald_tlsrpt_counts WHERE day < $1 RETURNING counts",
                    &[&today],
                )
                .await
            }
        }
        .map_err(db_err("tls-rpt: build"))?;
        let mut built = 0;
        for row in &rows {
            let counts: DayCounts = match serde_json::from_value(row.get(0)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("tls-rpt: unreadable counts in the database dropped: {e}");
                    continue;
                }
            };
            let item = OutboxItem {
                domain: counts.domain.clone(),
                report: build::build(&counts, reporter, now as i64),
                created_at: now,
                delivered: Vec::new(),
            };
            let json = serde_json::to_value(&item).map_err(std::io::Error::other)?;
            tx.execute(
                "INSERT INTO herald_tlsrpt_outbox (report_id, domain, item, created_at) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &item.report.report_id,
                    &item.domain,
                    &json,
                    &i64::try_from(now).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db_err("tls-rpt: build"))?;
            built += 1;
        }
        tx.commit().await.map_err(db_err("tls-rpt: build"))?;
        Ok(built)
    }

    /// Sends every outbox report no other node is sending at this moment, each under its row
    /// lock; adds what happened to `summary`.
    pub async fn send_outbox(
        &self,
        sender: &ReportSender,
        now: u64,
        summary: &mut FlushSummary,
    ) -> std::io::Result<()> {
        let mut seen: Vec<String> = Vec::new();
        loop {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(db_err("tls-rpt: outbox"))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT report_id, item::text FROM herald_tlsrpt_outbox \
                     WHERE NOT (report_id = ANY($1)) ORDER BY created_at, report_id \
                     LIMIT 1 FOR UPDATE SKIP LOCKED",
                    &[&seen],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?
            else {
                return Ok(());
            };
            let id: String = row.get(0);
            seen.push(id.clone());
            // As text: the report's date range borrows its strings while parsing.
            let text: String = row.get(1);
            let mut item: OutboxItem = match serde_json::from_str(&text) {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(report = %id, "tls-rpt: unreadable outbox item dropped: {e}");
                    tx.execute(
                        "DELETE FROM herald_tlsrpt_outbox WHERE report_id = $1",
                        &[&id],
                    )
                    .await
                    .map_err(db_err("tls-rpt: outbox"))?;
                    tx.commit().await.map_err(db_err("tls-rpt: outbox"))?;
                    continue;
                }
            };
            let before = item.delivered.len();
            let remove = super::flush::send_one(sender, &mut item, now, summary).await;
            if remove {
                tx.execute(
                    "DELETE FROM herald_tlsrpt_outbox WHERE report_id = $1",
                    &[&id],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?;
            } else if item.delivered.len() != before {
                let json = serde_json::to_value(&item).map_err(std::io::Error::other)?;
                tx.execute(
                    "UPDATE herald_tlsrpt_outbox SET item = $2 WHERE report_id = $1",
                    &[&id, &json],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?;
            }
            tx.commit().await.map_err(db_err("tls-rpt: outbox"))?;
        }
    }
}

/// Moves the node's counts into the database every [`SYNC_EVERY`] until the runtime stops.
pub fn spawn_sync(reporter: std::sync::Arc<super::TlsReporter>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(SYNC_EVERY).await;
            match reporter.push_to_cluster().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("tls-rpt: counts reach the cluster database again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("tls-rpt: counts kept on this node for now: {e}");
                }
                Err(_) => {}
            }
        }
    })
}
