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
use super::store::{DayCounts, OutboxItem};
use crate::cluster::Db;
use crate::cluster::db::{Client, io_error};

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

    /// Locks the next outbox report that no other node is sending at this moment and that
    /// is not in `seen` (to which it is added); `None` when there is none left. An unreadable
    /// report is dropped on the way.
    pub async fn lock_next(&self, seen: &mut Vec<String>) -> std::io::Result<Option<LockedReport>> {
        loop {
            let tx = OpenTx::begin(&self.db).await?;
            let Some(row) = tx
                .client()?
                .query_opt(
                    "SELECT report_id, item::text FROM herald_tlsrpt_outbox \
                     WHERE NOT (report_id = ANY($1)) ORDER BY created_at, report_id \
                     LIMIT 1 FOR UPDATE SKIP LOCKED",
                    &[&*seen],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?
            else {
                tx.commit().await?;
                return Ok(None);
            };
            let id: String = row.get(0);
            seen.push(id.clone());
            // As text: the report's date range borrows its strings while parsing.
            let text: String = row.get(1);
            match serde_json::from_str::<OutboxItem>(&text) {
                Ok(item) => {
                    return Ok(Some(LockedReport {
                        tx,
                        id,
                        delivered_before: item.delivered.len(),
                        item,
                    }));
                }
                Err(e) => {
                    tracing::error!(report = %id, "tls-rpt: unreadable outbox item dropped: {e}");
                    tx.client()?
                        .execute(
                            "DELETE FROM herald_tlsrpt_outbox WHERE report_id = $1",
                            &[&id],
                        )
                        .await
                        .map_err(db_err("tls-rpt: outbox"))?;
                    tx.commit().await?;
                }
            }
        }
    }
}

/// An outbox report this node has locked (its row, in a transaction on a connection of its
/// own) while sending it. [`LockedReport::finish`] records the outcome and commits.
pub struct LockedReport {
    tx: OpenTx,
    id: String,
    delivered_before: usize,
    /// The report; sending records the `rua`s it reached in `delivered`.
    pub item: OutboxItem,
}

impl LockedReport {
    /// Removes the report when it is `done` with (sent, or given up), else records the
    /// destinations it reached; commits, releasing the lock.
    pub async fn finish(self, done: bool) -> std::io::Result<()> {
        let client = self.tx.client()?;
        if done {
            client
                .execute(
                    "DELETE FROM herald_tlsrpt_outbox WHERE report_id = $1",
                    &[&self.id],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?;
        } else if self.item.delivered.len() != self.delivered_before {
            let json = serde_json::to_value(&self.item).map_err(std::io::Error::other)?;
            client
                .execute(
                    "UPDATE herald_tlsrpt_outbox SET item = $2 WHERE report_id = $1",
                    &[&self.id, &json],
                )
                .await
                .map_err(db_err("tls-rpt: outbox"))?;
        }
        self.tx.commit().await
    }
}

/// A transaction that owns its connection. Dropped without [`OpenTx::commit`] (an error on
/// the way), the connection is closed instead of going back to the pool, so the server rolls
/// the transaction back and releases its row locks.
struct OpenTx(Option<Client>);

impl OpenTx {
    async fn begin(db: &Db) -> std::io::Result<OpenTx> {
        let client = db.client().await?;
        client
            .batch_execute("BEGIN")
            .await
            .map_err(db_err("tls-rpt: outbox"))?;
        Ok(OpenTx(Some(client)))
    }

    fn client(&self) -> std::io::Result<&Client> {
        self.0
            .as_ref()
            .ok_or_else(|| std::io::Error::other("tls-rpt: outbox transaction already ended"))
    }

    async fn commit(mut self) -> std::io::Result<()> {
        let Some(client) = self.0.take() else {
            return Ok(());
        };
        client
            .batch_execute("COMMIT")
            .await
            .map_err(db_err("tls-rpt: outbox"))
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
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
