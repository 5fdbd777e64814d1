//! The cluster's side of the PostgreSQL spool: [`Leases`] on `herald_messages` (module
//! documentation of [`super`]: renewal on the database's clock, adoption with `FOR UPDATE SKIP
//! LOCKED`, operator actions bumping `control_seq`).

use std::time::Duration;

use tokio_postgres::types::Json;

use super::{
    COLUMNS, OPERATION_TIMEOUT, PgBackend, Shared, entry, message, next_attempt, prefixed, timed,
};
use crate::clock::unix_now;
use crate::cluster::DbError;
use crate::spool::handle::{ClusterEntry, Leases, Taken};
use crate::spool::{BoxFuture, MessageBytes, QueueId, SpoolError};

impl Shared {
    async fn adopt(&self, limit: usize) -> Result<Vec<ClusterEntry>, SpoolError> {
        let limit = limit as i64;
        let rows = timed(async {
            let client = self.db.client().await?;
            client
                .query(
                    &format!(
                        "UPDATE herald_messages m SET lease_owner = $1, \
                         lease_until = now() + make_interval(secs => $2) \
                         FROM (SELECT id FROM herald_messages \
                               WHERE (lease_until IS NULL OR lease_until < now()) \
                                 AND lease_owner IS DISTINCT FROM $1 \
                               ORDER BY next_attempt NULLS LAST, id LIMIT $3 \
                               FOR UPDATE SKIP LOCKED) c \
                         WHERE m.id = c.id RETURNING {}",
                        prefixed(COLUMNS)
                    ),
                    &[&self.db.node_id(), &self.lease_secs(), &limit],
                )
                .await
                .map_err(DbError::doing("adopting expired leases"))
        })
        .await?;
        rows.iter().map(entry).collect()
    }

    async fn renew(&self) -> Result<Vec<(QueueId, i64)>, SpoolError> {
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
        let rows = timed(async {
            let client = self.db.client().await?;
            client
                .query(
                    "UPDATE herald_messages SET lease_until = now() + make_interval(secs => $2) \
                     WHERE lease_owner = $1 RETURNING id, control_seq",
                    &[&self.db.node_id(), &self.lease_secs()],
                )
                .await
                .map_err(DbError::doing("renewing leases"))
        })
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(DbError::doing("renewing leases"))?,
                    r.try_get(1).map_err(DbError::doing("renewing leases"))?,
                ))
            })
            .collect()
    }

    async fn release_all(&self) -> Result<u64, SpoolError> {
        Ok(timed(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET lease_owner = NULL, lease_until = NULL \
                     WHERE lease_owner = $1",
                    &[&self.db.node_id()],
                )
                .await
                .map_err(DbError::doing("releasing leases"))
        })
        .await?)
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
        let n = timed(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET held = $2, control_seq = control_seq + 1 \
                     WHERE id = $1",
                    &[&id, &held],
                )
                .await
                .map_err(DbError::doing("holding or releasing"))
        })
        .await?;
        Ok(n > 0)
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
            for row in &rows {
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

    fn renew(&self) -> BoxFuture<'_, Result<Vec<(QueueId, i64)>, SpoolError>> {
        Box::pin(self.shared.renew())
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
