//! The webhook outbox of a cluster (`[cluster]`), in its PostgreSQL (`herald_webhook_batches`,
//! migration 5): every node moves the batches its history writer made into the table, and any
//! live node POSTs them, so the events of a node that died do not wait for it to return.
//!
//! One app's batches go out in order, one at a time across the cluster: a node takes the
//! app's oldest batch only when it is due and nobody else holds it, and holds it under a lease
//! (`[webhooks] timeout` and a margin) while it POSTs; a node killed mid-POST leaves a lease
//! that runs out, and another node sends the batch again with the same `webhook-id`
//! (at least once). Lease and retry times are the database's clock, so nodes' clocks need
//! not agree.

use std::time::Duration;

use crate::cluster::{Db, DbError};
use crate::history::db::Batch;

/// The database's clock in unix milliseconds, as SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Longer than a POST may take (`[webhooks] timeout`), for the trips to the database around it.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The cluster's webhook outbox.
#[derive(Clone)]
pub(crate) struct SharedOutbox {
    db: Db,
}

/// What a claim found.
pub(crate) struct Claim {
    /// The app's oldest batch, now leased to this node; `None` when it has none, or its
    /// oldest is not due yet or is held by another node.
    pub batch: Option<Batch>,
    /// Events of the app waiting in the cluster (for the backlog gauge).
    pub backlog: u64,
    /// When nothing was claimed although batches wait: how long until the oldest is due or
    /// its lease runs out.
    pub recheck: Option<Duration>,
}

impl SharedOutbox {
    /// The outbox in `db` (its table comes with the schema migrations).
    pub(crate) fn new(db: Db) -> SharedOutbox {
        SharedOutbox { db }
    }

    /// Adds `batch` (made by this node's history writer) for `app`; a batch already there
    /// (moved before a crash kept it from leaving the node's file) is not added twice.
    pub(crate) async fn add(&self, app: &str, batch: &Batch) -> Result<(), DbError> {
        let client = self.db.client().await?;
        client
            .execute(
                "INSERT INTO herald_webhook_batches (webhook_id, app, node, body, events, created,
                 attempts, next_attempt)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (webhook_id) DO NOTHING",
                &[
                    &batch.webhook_id,
                    &app,
                    &self.db.node_id(),
                    &batch.body,
                    &(batch.events.min(i32::MAX as u64) as i32),
                    &(batch.created as i64),
                    &(batch.attempts.min(i32::MAX as u32) as i32),
                    &(batch.next_attempt as i64),
                ],
            )
            .await
            .map_err(DbError::doing("moving a webhook batch to the cluster"))?;
        Ok(())
    }

    /// Leases `app`'s oldest batch to this node for `timeout` (and a margin) if it is due
    /// and free (or already this node's), and counts the app's waiting events.
    pub(crate) async fn claim(&self, app: &str, timeout: Duration) -> Result<Claim, DbError> {
        let client = self.db.client().await?;
        let lease_ms = (timeout + LEASE_MARGIN).as_millis() as i64;
        let node = self.db.node_id();
        let rows = client
            .query(
                &format!(
                    "WITH oldest AS (
                         SELECT id FROM herald_webhook_batches WHERE app = $1
                         ORDER BY id LIMIT 1 FOR UPDATE
                     )
                     UPDATE herald_webhook_batches b
                     SET leased_by = $2, leased_until = {NOW_MS} + $3
                     FROM oldest
                     WHERE b.id = oldest.id AND b.next_attempt <= {NOW_MS}
                       AND (b.leased_until IS NULL OR b.leased_until < {NOW_MS}
                            OR b.leased_by = $2)
                     RETURNING b.id, b.webhook_id, b.body, b.events, b.created, b.attempts,
                               b.next_attempt"
                ),
                &[&app, &node, &lease_ms],
            )
            .await
            .map_err(DbError::doing("claiming a webhook batch"))?;
        let batch = rows.first().map(|r| Batch {
            id: r.get(0),
            webhook_id: r.get(1),
            body: r.get(2),
            events: r.get::<_, i32>(3).max(0) as u64,
            created: r.get::<_, i64>(4).max(0) as u64,
            attempts: r.get::<_, i32>(5).max(0) as u32,
            // Due now: the sender does not wait again on another clock.
            next_attempt: 0,
        });
        let row = client
            .query_one(
                &format!(
                    "SELECT coalesce(sum(events), 0)::bigint,
                            (SELECT greatest(next_attempt, coalesce(leased_until, 0)) - {NOW_MS}
                             FROM herald_webhook_batches WHERE app = $1 ORDER BY id LIMIT 1)
                     FROM herald_webhook_batches WHERE app = $1"
                ),
                &[&app],
            )
            .await
            .map_err(DbError::doing("counting webhook batches"))?;
        let backlog = row.get::<_, i64>(0).max(0) as u64;
        let recheck = match (&batch, row.get::<_, Option<i64>>(1)) {
            (None, Some(ms)) => Some(Duration::from_millis(ms.max(0) as u64)),
            _ => None,
        };
        Ok(Claim {
            batch,
            backlog,
            recheck,
        })
    }

    /// Removes batch `id` (acknowledged by the endpoint, or given up).
    pub(crate) async fn remove(&self, id: i64) -> Result<(), DbError> {
        let client = self.db.client().await?;
        client
            .execute("DELETE FROM herald_webhook_batches WHERE id = $1", &[&id])
            .await
            .map_err(DbError::doing("removing a webhook batch"))?;
        Ok(())
    }

    /// Records a failed attempt of batch `id`, due again after `wait`, and frees its lease.
    pub(crate) async fn retry(&self, id: i64, wait: Duration, error: &str) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let wait_ms = wait.as_millis().min(i64::MAX as u128) as i64;
        client
            .execute(
                &format!(
                    "UPDATE herald_webhook_batches SET attempts = attempts + 1,
                     next_attempt = {NOW_MS} + $2, last_error = $3,
                     leased_by = NULL, leased_until = NULL
                     WHERE id = $1"
                ),
                &[&id, &wait_ms, &error],
            )
            .await
            .map_err(DbError::doing("recording a failed webhook attempt"))?;
        Ok(())
    }
}
