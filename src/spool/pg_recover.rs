//! Recovery of the PostgreSQL spool at start, in chunks (issue 29): the node renews its
//! lease (its messages are its own again from then on) and is ready; its messages are then
//! read a chunk at a time by primary key, and after them the messages no node holds or whose
//! node's lease expired are claimed a chunk at a time, while the queue already works (as the
//! file spool does, [`crate::spool::SpoolBackend::recover_chunks`]).

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{COLUMNS, RENEW_NODE_LEASE, Shared, message, timed};
use crate::cluster::DbError;
use crate::spool::{Recovery, SpoolError, SpooledMessage};

/// Messages read (or claimed) per chunk.
const CHUNK: i64 = 2000;

/// How long to wait before reading a chunk again after the database failed to answer.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where recovery stands: this node's own messages up to an id, then the unclaimed ones.
enum Step {
    /// This node's messages after this id (and before the start's first id).
    Own(String),
    /// Messages no live node holds.
    Unclaimed,
}

impl Shared {
    /// Discards what a crash left half-received, renews (or makes) this node's lease, and
    /// reads the rest in the background ([`Step`]).
    pub(super) async fn recover_chunks(self: Arc<Self>) -> Result<Recovery, SpoolError> {
        for entry in fs::read_dir(&self.tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        self.take_lease().await?;
        // Messages stored from now on reach the queue as they arrive: ids from this start's
        // first microsecond on are not read back.
        let before = format!("{:012x}", crate::clock::now_micros());
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let mut step = Step::Own(String::new());
            loop {
                let chunk = match &step {
                    Step::Own(after) => self.own_chunk(after, &before).await,
                    Step::Unclaimed => self
                        .claim(false, Some(CHUNK))
                        .await
                        .map_err(SpoolError::from),
                };
                let rows = match chunk {
                    Ok(rows) => rows,
                    Err(e) => {
                        // Logged by the queue; the same chunk is read again.
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                };
                let full = rows.len() as i64 >= CHUNK;
                let mut messages: Vec<SpooledMessage> = Vec::with_capacity(rows.len());
                let mut last = None;
                for row in &rows {
                    match message(row) {
                        Ok(m) => {
                            last = Some(m.id.clone());
                            messages.push(m);
                        }
                        Err(e) => {
                            if let Ok(id) = row.try_get::<_, String>("id") {
                                last = Some(id);
                            }
                            if tx.send(Err(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if tx.send(Ok(messages)).await.is_err() {
                    return;
                }
                step = match (step, full, last) {
                    (Step::Own(_), true, Some(last)) => Step::Own(last),
                    (Step::Own(_), _, _) => Step::Unclaimed,
                    (Step::Unclaimed, true, _) => Step::Unclaimed,
                    (Step::Unclaimed, false, _) => return,
                };
            }
        });
        Ok(rx)
    }

    /// Renews or makes this node's lease (one row): from here on its messages are its own.
    async fn take_lease(&self) -> Result<(), DbError> {
        let node = self.db.node_id();
        timed(async {
            let client = self.db.client().await?;
            client
                .execute(RENEW_NODE_LEASE, &[&node, &self.lease_secs()])
                .await
                .map_err(DbError::doing("claiming this node's lease"))?;
            Ok(())
        })
        .await
    }

    /// Up to [`CHUNK`] of this node's messages with ids after `after` and before `before`,
    /// in id order (the index on (lease_owner, id) of migration 0008).
    async fn own_chunk(
        &self,
        after: &str,
        before: &str,
    ) -> Result<Vec<tokio_postgres::Row>, SpoolError> {
        let node = self.db.node_id();
        let sql = format!(
            "SELECT {COLUMNS} FROM herald_messages \
             WHERE lease_owner = $1 AND id > $2 AND id < $3 ORDER BY id LIMIT $4"
        );
        Ok(timed(async {
            let client = self.db.client().await?;
            client
                .query(&sql, &[&node, &after, &before, &CHUNK])
                .await
                .map_err(DbError::doing("reading this node's messages"))
        })
        .await?)
    }
}
