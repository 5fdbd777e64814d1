//! The cluster's side of the PostgreSQL spool: [`Leases`] on `herald_messages` and
//! `herald_node_leases` (module documentation of [`super`]: one lease row per node renewed on
//! the database's clock, adoption with `FOR UPDATE SKIP LOCKED`, operator actions bumping
//! `control_seq` and the owner's `changes`).

use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::{
    COLUMNS, OPERATION_TIMEOUT, PgBackend, RENEW_NODE_LEASE, Shared, entry, message, next_attempt,
    prefixed, timed,
};
use crate::clock::unix_now;
use crate::cluster::DbError;
use crate::spool::handle::{ClusterEntry, Leases, QueueCounts, Taken};
use crate::spool::{BoxFuture, MessageBytes, QueueId, SpoolError};

impl Shared {
    /// Takes messages for this node in one transaction: with `own`, first makes or renews
    /// this node's lease and takes back its own messages (a start); then every unowned
    /// message and those of nodes whose lease expired, at most `limit`, earliest due first.
    /// The expired nodes' lease rows stay locked until the commit, so a renewal of theirs
    /// waits and then finds its lease lapsed (see [`Shared::renew`]).
    pub(super) async fn claim(&self, own: bool, limit: Option<i64>) -> Result<Vec<Row>, DbError> {
        let node = self.db.node_id();
        let work = async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(DbError::doing("claiming messages"))?;
            if own {
                tx.execute(RENEW_NODE_LEASE, &[&node, &self.lease_secs()])
                    .await
                    .map_err(DbError::doing("claiming this node's lease"))?;
            }
            let expired: Vec<String> = tx
                .query(
                    "SELECT node_id FROM herald_node_leases \
                     WHERE lease_until < now() AND node_id <> $1 FOR UPDATE SKIP LOCKED",
                    &[&node],
                )
                .await
                .map_err(DbError::doing("finding expired leases"))?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(DbError::doing("finding expired leases"))?;
            let rows = tx
                .query(
                    &format!(
                        "UPDATE herald_messages m SET lease_owner = $1 \
                         FROM (SELECT id FROM herald_messages \
                               WHERE lease_owner IS NULL OR lease_owner = ANY($2) \
                                  OR ($3 AND lease_owner = $1) \
                               ORDER BY next_attempt NULLS LAST, id LIMIT $4 \
                               FOR UPDATE SKIP LOCKED) c \
                         WHERE m.id = c.id RETURNING {}",
                        prefixed(COLUMNS)
                    ),
                    &[&node, &expired, &own, &limit],
                )
                .await
                .map_err(DbError::doing("claiming messages"))?;
            tx.commit()
                .await
                .map_err(DbError::doing("claiming messages"))?;
            Ok(rows)
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Timeout),
        }
    }

    async fn adopt(&self, limit: usize) -> Result<Vec<ClusterEntry>, SpoolError> {
        let rows = self.claim(false, Some(limit as i64)).await?;
        rows.iter().map(entry).collect()
    }

    /// Renews this node's lease: one row, whatever the number of messages. True when the
    /// node's messages must be listed again ([`Shared::owned`]): an operator changed one of
    /// them since they were last listed, or the lease had lapsed (another node may have
    /// adopted some).
    async fn renew(&self) -> Result<bool, SpoolError> {
        let unremoved: Vec<QueueId> = self.unremoved().iter().cloned().collect();
        if !unremoved.is_empty() {
            self.delete(&unremoved).await?;
            let mut set = self.unremoved();
            for id in &unremoved {
                set.remove(id);
            }
            tracing::info!(
                messages = unremoved.len(),
                "cluster: delivered messages removed now that the database answers"
            );
        }
        let node = self.db.node_id();
        let work = async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(DbError::doing("renewing leases"))?;
            // Waits for an adopter holding the row; clock_timestamp(), not the transaction's
            // start, so a lease that expired while waiting counts as lapsed.
            let before = tx
                .query_opt(
                    "SELECT lease_until < clock_timestamp(), changes FROM herald_node_leases \
                     WHERE node_id = $1 FOR UPDATE",
                    &[&node],
                )
                .await
                .map_err(DbError::doing("renewing leases"))?;
            tx.execute(RENEW_NODE_LEASE, &[&node, &self.lease_secs()])
                .await
                .map_err(DbError::doing("renewing leases"))?;
            tx.commit()
                .await
                .map_err(DbError::doing("renewing leases"))?;
            match before {
                None => Ok::<_, DbError>((true, 0)),
                Some(row) => Ok((
                    row.try_get::<_, bool>(0)
                        .map_err(DbError::doing("renewing leases"))?,
                    row.try_get::<_, i64>(1)
                        .map_err(DbError::doing("renewing leases"))?,
                )),
            }
        };
        let (lapsed, changes) = match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
            Ok(r) => r?,
            Err(_) => return Err(DbError::Timeout.into()),
        };
        let mut seen = self.seen_changes();
        seen.1 = changes;
        Ok(lapsed || seen.0 != Some(changes))
    }

    /// This node's messages and their operator sequences.
    async fn owned(&self) -> Result<Vec<(QueueId, i64)>, SpoolError> {
        let node = self.db.node_id();
        let changes = self.seen_changes().1;
        let rows = timed(async {
            let client = self.db.client().await?;
            client
                .query(
                    "SELECT id, control_seq FROM herald_messages WHERE lease_owner = $1",
                    &[&node],
                )
                .await
                .map_err(DbError::doing("listing this node's messages"))
        })
        .await?;
        let held = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(DbError::doing("renewing leases"))?,
                    r.try_get(1).map_err(DbError::doing("renewing leases"))?,
                ))
            })
            .collect::<Result<Vec<_>, SpoolError>>()?;
        self.seen_changes().0 = Some(changes);
        Ok(held)
    }

    async fn release_all(&self) -> Result<u64, SpoolError> {
        let node = self.db.node_id();
        let work = async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(DbError::doing("releasing leases"))?;
            // The messages keep their owner (no row rewritten, however big the queue): the
            // owner's lease expired, they are adoptable at once, and this node takes back
            // those still its own when it starts again.
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM herald_messages WHERE lease_owner = $1",
                    &[&node],
                )
                .await
                .map_err(DbError::doing("releasing leases"))?
                .try_get(0)
                .map_err(DbError::doing("releasing leases"))?;
            // Expired rather than gone: a message this node still stored on its way out is
            // adoptable at once.
            tx.execute(
                "UPDATE herald_node_leases SET lease_until = '-infinity' WHERE node_id = $1",
                &[&node],
            )
            .await
            .map_err(DbError::doing("releasing leases"))?;
            tx.commit()
                .await
                .map_err(DbError::doing("releasing leases"))?;
            Ok::<_, DbError>(n.max(0) as u64)
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(DbError::Timeout.into()),
        }
    }

    /// Tells the nodes `owners` that an operator changed one of their messages (they list
    /// their messages again at their next renewal).
    async fn bump(&self, owners: &[String]) -> Result<(), DbError> {
        if owners.is_empty() {
            return Ok(());
        }
        timed(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_node_leases SET changes = changes + 1 WHERE node_id = ANY($1)",
                    &[&owners],
                )
                .await
                .map_err(DbError::doing("telling the owning node"))?;
            Ok(())
        })
        .await
    }

    async fn list_all(&self, id: Option<&str>) -> Result<Vec<ClusterEntry>, SpoolError> {
        let rows = timed(async {
            let client = self.db.client().await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM herald_messages \
                 WHERE ($1::text IS NULL OR id = $1) ORDER BY id"
            );
            client
                .query(&sql, &[&id])
                .await
                .map_err(DbError::doing("listing the queue"))
        })
        .await?;
        rows.iter().map(entry).collect()
    }

    async fn set_held(&self, id: &str, held: bool) -> Result<bool, SpoolError> {
        let row = timed(async {
            let client = self.db.client().await?;
            client
                .query_opt(
                    "UPDATE herald_messages SET held = $2, control_seq = control_seq + 1 \
                     WHERE id = $1 RETURNING lease_owner",
                    &[&id, &held],
                )
                .await
                .map_err(DbError::doing("holding or releasing"))
        })
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let owner: Option<String> = row.try_get(0).unwrap_or(None);
        self.bump(&owner.into_iter().collect::<Vec<_>>()).await?;
        Ok(true)
    }

    async fn retry_now(&self, id: Option<&str>) -> Result<u64, SpoolError> {
        let now = unix_now();
        let work = async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(DbError::doing("retrying"))?;
            let sql = format!(
                "SELECT {COLUMNS} FROM herald_messages \
                 WHERE id = $1 OR ($1::text IS NULL AND NOT held AND next_attempt IS NOT NULL) \
                 FOR UPDATE"
            );
            let rows = tx
                .query(&sql, &[&id])
                .await
                .map_err(DbError::doing("retrying"))?;
            let mut count = 0;
            let mut owners: Vec<String> = Vec::new();
            for row in &rows {
                if let Ok(Some(owner)) = row.try_get::<_, Option<String>>("lease_owner")
                    && !owners.contains(&owner)
                {
                    owners.push(owner);
                }
                let mut m = message(row)?;
                m.state.retry_now(now);
                tx.execute(
                    "UPDATE herald_messages SET state = $2, next_attempt = $3, \
                     control_seq = control_seq + 1 WHERE id = $1",
                    &[&m.id, &Json(&m.state), &next_attempt(&m.state)],
                )
                .await
                .map_err(DbError::doing("retrying"))?;
                count += 1;
            }
            tx.execute(
                "UPDATE herald_node_leases SET changes = changes + 1 WHERE node_id = ANY($1)",
                &[&owners],
            )
            .await
            .map_err(DbError::doing("retrying"))?;
            tx.commit().await.map_err(DbError::doing("retrying"))?;
            Ok(count)
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(DbError::Timeout.into()),
        }
    }

    async fn take(&self, id: &str) -> Result<Option<Taken>, SpoolError> {
        let sql = format!("DELETE FROM herald_messages WHERE id = $1 RETURNING {COLUMNS}, body");
        let row = self.row_by_id(&sql, id, "deleting").await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: Vec<u8> = row.try_get("body").map_err(DbError::doing("deleting"))?;
        let owner: Option<String> = row.try_get("lease_owner").unwrap_or(None);
        // The owner drops it at its next renewal.
        self.bump(&owner.into_iter().collect::<Vec<_>>()).await?;
        Ok(Some((message(&row)?, MessageBytes::from(body))))
    }
}

impl Leases for PgBackend {
    fn node_id(&self) -> &str {
        self.shared.db.node_id()
    }

    fn lease(&self) -> Duration {
        self.shared.db.lease()
    }

    fn adopt(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ClusterEntry>, SpoolError>> {
        Box::pin(self.shared.adopt(limit))
    }

    fn renew(&self) -> BoxFuture<'_, Result<bool, SpoolError>> {
        Box::pin(self.shared.renew())
    }

    fn owned(&self) -> BoxFuture<'_, Result<Vec<(QueueId, i64)>, SpoolError>> {
        Box::pin(self.shared.owned())
    }

    fn release_all(&self) -> BoxFuture<'_, Result<u64, SpoolError>> {
        Box::pin(self.shared.release_all())
    }

    fn list_all<'a>(
        &'a self,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ClusterEntry>, SpoolError>> {
        Box::pin(self.shared.list_all(id))
    }

    fn list_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<ClusterEntry>, SpoolError>> {
        Box::pin(self.shared.list_page(after, limit))
    }

    fn counts<'a>(
        &'a self,
        now: u64,
        age_bounds: &'a [u64],
    ) -> BoxFuture<'a, Result<QueueCounts, SpoolError>> {
        Box::pin(self.shared.counts(now, age_bounds))
    }

    fn set_held<'a>(&'a self, id: &'a str, held: bool) -> BoxFuture<'a, Result<bool, SpoolError>> {
        Box::pin(self.shared.set_held(id, held))
    }

    fn retry_now<'a>(&'a self, id: Option<&'a str>) -> BoxFuture<'a, Result<u64, SpoolError>> {
        Box::pin(self.shared.retry_now(id))
    }

    fn take<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Taken>, SpoolError>> {
        Box::pin(self.shared.take(id))
    }
}
