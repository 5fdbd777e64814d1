//! The spool in PostgreSQL ([`PgBackend`], `[cluster]`): every node of a cluster stores the
//! mail it accepts in one table (`herald_messages`, migration 0001) and delivers from it.
//!
//! Durability: a group of new messages (the committer thread hands over every message waiting)
//! is inserted in one transaction; `write_batch` returns once PostgreSQL has committed it, so
//! `250` follows a durable commit (and a failed one gives the client `451 4.3.0`). Bodies are
//! `bytea`: a message is read into memory once to be sent to the server.
//!
//! Leases ([`Leases`]): the node that accepts a message holds its lease from the first
//! commit. A lease lasts `[cluster] lease` from its last renewal (the database's clock, so the
//! nodes' clocks do not matter); the queue renews all of its node's leases every quarter of
//! that. A lease not renewed in time (node dead, or cut off from the database) lets another
//! node adopt the message (`FOR UPDATE SKIP LOCKED`, so two nodes never adopt the same one).
//!
//! Operator actions on any node change the row (`held`, the retry time) and bump
//! `control_seq`; the owning node sees the new sequence at its next renewal and reloads.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::handle::{ClusterEntry, Leases, NewMessage, SpoolBackend};
use super::staged::{MessageBytes, StagedMessage};
use super::{DeliveryState, Envelope, QueueId, SpooledMessage};
use crate::clock::unix_now;
use crate::cluster::Db;
use crate::cluster::db::io_error;

/// Longest a single database operation may take before it counts as failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Columns read back for a queued message (without its body).
const COLUMNS: &str = "id, envelope, size, state, held, control_seq, lease_owner";

/// The spool in the cluster's PostgreSQL database (module documentation).
pub struct PgBackend {
    db: Db,
    runtime: tokio::runtime::Handle,
    /// Local directory for messages being received (before their commit).
    tmp: PathBuf,
    /// Delivered messages whose removal failed (database unreachable): retried at each
    /// renewal, and never adopted back by this node meanwhile.
    unremoved: Mutex<HashSet<QueueId>>,
}

impl PgBackend {
    /// A backend on `db`, receiving messages into `staging_dir/tmp`. Call from within a
    /// multi-threaded tokio runtime (the backend runs its queries on it).
    pub fn open(db: Db, staging_dir: &Path) -> io::Result<PgBackend> {
        let tmp = staging_dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        Ok(PgBackend {
            db,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| io::Error::other(format!("no tokio runtime: {e}")))?,
            tmp,
            unremoved: Mutex::new(HashSet::new()),
        })
    }

    fn unremoved(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        self.unremoved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a query future to completion from blocking code (the spool's threads, tokio's
    /// blocking pool, or a worker thread through `block_in_place`), with a deadline.
    fn run<T>(&self, fut: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        let timed = async {
            match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "cluster database did not answer in time",
                )),
            }
        };
        match tokio::runtime::Handle::try_current() {
            // block_in_place would panic there; herald's own runtime is multi-threaded.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => Err(
                io::Error::other("the cluster spool cannot be used from a single-threaded runtime"),
            ),
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(timed)),
            Err(_) => self.runtime.block_on(timed),
        }
    }

    fn lease_secs(&self) -> f64 {
        self.db.lease().as_secs_f64()
    }

    async fn delete(&self, ids: &[QueueId]) -> io::Result<()> {
        let client = self.db.client().await?;
        client
            .execute("DELETE FROM herald_messages WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(|e| io_error("removing delivered messages", e))?;
        Ok(())
    }
}

/// A queued message from a row of [`COLUMNS`].
fn message(row: &Row) -> io::Result<SpooledMessage> {
    let bad = |what: &str, e: tokio_postgres::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad {what} in the database: {e}"),
        )
    };
    let id: String = row.try_get("id").map_err(|e| bad("id", e))?;
    let Json(envelope): Json<Envelope> = row.try_get("envelope").map_err(|e| bad("envelope", e))?;
    let size: i64 = row.try_get("size").map_err(|e| bad("size", e))?;
    let state: Option<Json<DeliveryState>> = row.try_get("state").map_err(|e| bad("state", e))?;
    let mut state = match state {
        Some(Json(s)) => s,
        None => DeliveryState::new(&envelope),
    };
    state.held = row.try_get("held").map_err(|e| bad("held", e))?;
    Ok(SpooledMessage {
        id,
        envelope,
        size: size.max(0) as u64,
        state,
    })
}

fn entry(row: &Row) -> io::Result<ClusterEntry> {
    Ok(ClusterEntry {
        message: message(row)?,
        control_seq: row.try_get("control_seq").unwrap_or(0),
        owner: row.try_get("lease_owner").unwrap_or(None),
    })
}

/// When the earliest pending recipient is due, whatever the hold (the column behind
/// `herald_messages.next_attempt`).
fn next_attempt(state: &DeliveryState) -> Option<i64> {
    state
        .recipients
        .iter()
        .filter(|r| r.status == super::RecipientStatus::Pending)
        .map(|r| r.next_attempt as i64)
        .min()
}

fn not_found(id: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no message {id} in the cluster's queue"),
    )
}

impl SpoolBackend for PgBackend {
    fn stage(&self) -> io::Result<StagedMessage> {
        StagedMessage::create_in(&self.tmp, 0)
    }

    fn write_batch(&self, batch: Vec<NewMessage>) -> Vec<io::Result<()>> {
        let count = batch.len();
        let mut rows = Vec::with_capacity(count);
        for m in batch {
            let NewMessage {
                id,
                envelope,
                head,
                mut body,
            } = m;
            let mut bytes = head;
            match body.map() {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(e) => {
                    let why = format!("reading the received message: {e}");
                    return (0..count)
                        .map(|_| Err(io::Error::other(why.clone())))
                        .collect();
                }
            }
            rows.push((id, envelope, bytes));
        }
        let result = self.run(async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| io_error("storing messages", e))?;
            let insert = tx
                .prepare(
                    "INSERT INTO herald_messages (id, envelope, body, size, next_attempt, \
                     accepted_by, lease_owner, lease_until) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6, now() + make_interval(secs => $7))",
                )
                .await
                .map_err(|e| io_error("storing messages", e))?;
            for (id, envelope, bytes) in &rows {
                let size = bytes.len() as i64;
                let due = envelope.received_at as i64;
                tx.execute(
                    &insert,
                    &[
                        id,
                        &Json(envelope),
                        bytes,
                        &size,
                        &due,
                        &self.db.node_id(),
                        &self.lease_secs(),
                    ],
                )
                .await
                .map_err(|e| io_error("storing a message", e))?;
            }
            tx.commit()
                .await
                .map_err(|e| io_error("committing messages", e))
        });
        match result {
            Ok(()) => (0..count).map(|_| Ok(())).collect(),
            Err(e) => {
                let (kind, why) = (e.kind(), e.to_string());
                (0..count)
                    .map(|_| Err(io::Error::new(kind, why.clone())))
                    .collect()
            }
        }
    }

    fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
        // Messages half-received when this node's previous run died.
        for entry in fs::read_dir(&self.tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        // This node's own leases (a restart: its id is unique) and every unowned or expired
        // one; the rest belongs to live nodes.
        let rows = self.run(async {
            let client = self.db.client().await?;
            client
                .query(
                    &format!(
                        "UPDATE herald_messages m SET lease_owner = $1, \
                         lease_until = now() + make_interval(secs => $2) \
                         FROM (SELECT id FROM herald_messages \
                               WHERE lease_owner = $1 OR lease_owner IS NULL \
                                  OR lease_until IS NULL OR lease_until < now() \
                               FOR UPDATE SKIP LOCKED) c \
                         WHERE m.id = c.id RETURNING {}",
                        prefixed(COLUMNS)
                    ),
                    &[&self.db.node_id(), &self.lease_secs()],
                )
                .await
                .map_err(|e| io_error("recovering the queue", e))
        })?;
        let mut out = rows.iter().map(message).collect::<io::Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn load(&self, id: &str) -> io::Result<SpooledMessage> {
        let row = self.run(async {
            let client = self.db.client().await?;
            client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM herald_messages WHERE id = $1"),
                    &[&id],
                )
                .await
                .map_err(|e| io_error("loading a message", e))
        })?;
        message(&row.ok_or_else(|| not_found(id))?)
    }

    fn read_message(&self, id: &str) -> io::Result<MessageBytes> {
        let row = self.run(async {
            let client = self.db.client().await?;
            client
                .query_opt("SELECT body FROM herald_messages WHERE id = $1", &[&id])
                .await
                .map_err(|e| io_error("reading a message", e))
        })?;
        let body: Vec<u8> = row
            .ok_or_else(|| not_found(id))?
            .try_get(0)
            .map_err(|e| io_error("reading a message", e))?;
        Ok(MessageBytes::from(body))
    }

    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        let due = next_attempt(state);
        let updated = self.run(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET state = $2, next_attempt = $3 \
                     WHERE id = $1 AND lease_owner = $4",
                    &[&id, &Json(state), &due, &self.db.node_id()],
                )
                .await
                .map_err(|e| io_error("recording the delivery state", e))
        })?;
        if updated == 0 {
            return Err(io::Error::other(format!(
                "{id} is no longer this node's (deleted by an operator, or taken over by \
                 another node after this node's lease expired)"
            )));
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        self.remove_batch(&[id.to_string()]).pop().unwrap_or(Ok(()))
    }

    fn remove_batch(&self, ids: &[QueueId]) -> Vec<io::Result<()>> {
        match self.run(self.delete(ids)) {
            Ok(()) => ids.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                // Kept for the next renewal; never delivered again by this node meanwhile.
                self.unremoved().extend(ids.iter().cloned());
                let why = e.to_string();
                ids.iter()
                    .map(|_| Err(io::Error::other(why.clone())))
                    .collect()
            }
        }
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }
}

/// `a, b` → `m.a, m.b` (for RETURNING after an UPDATE … FROM, where names are ambiguous).
fn prefixed(columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Leases for PgBackend {
    fn node_id(&self) -> &str {
        self.db.node_id()
    }

    fn lease(&self) -> Duration {
        self.db.lease()
    }

    fn adopt(&self, limit: usize) -> io::Result<Vec<ClusterEntry>> {
        let limit = limit as i64;
        let rows = self.run(async {
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
                .map_err(|e| io_error("adopting expired leases", e))
        })?;
        rows.iter().map(entry).collect()
    }

    fn renew(&self) -> io::Result<Vec<(QueueId, i64)>> {
        let unremoved: Vec<QueueId> = self.unremoved().iter().cloned().collect();
        if !unremoved.is_empty() {
            self.run(self.delete(&unremoved))?;
            let mut set = self.unremoved();
            for id in &unremoved {
                set.remove(id);
            }
            tracing::info!(
                messages = unremoved.len(),
                "cluster: delivered messages removed now that the database answers"
            );
        }
        let rows = self.run(async {
            let client = self.db.client().await?;
            client
                .query(
                    "UPDATE herald_messages SET lease_until = now() + make_interval(secs => $2) \
                     WHERE lease_owner = $1 RETURNING id, control_seq",
                    &[&self.db.node_id(), &self.lease_secs()],
                )
                .await
                .map_err(|e| io_error("renewing leases", e))
        })?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(|e| io_error("renewing leases", e))?,
                    r.try_get(1).map_err(|e| io_error("renewing leases", e))?,
                ))
            })
            .collect()
    }

    fn release_all(&self) -> io::Result<u64> {
        self.run(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET lease_owner = NULL, lease_until = NULL \
                     WHERE lease_owner = $1",
                    &[&self.db.node_id()],
                )
                .await
                .map_err(|e| io_error("releasing leases", e))
        })
    }

    fn list_all(&self, id: Option<&str>) -> io::Result<Vec<ClusterEntry>> {
        let rows = self.run(async {
            let client = self.db.client().await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM herald_messages \
                 WHERE ($1::text IS NULL OR id = $1) ORDER BY id"
            );
            client
                .query(&sql, &[&id])
                .await
                .map_err(|e| io_error("listing the queue", e))
        })?;
        rows.iter().map(entry).collect()
    }

    fn set_held(&self, id: &str, held: bool) -> io::Result<bool> {
        let n = self.run(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET held = $2, control_seq = control_seq + 1 \
                     WHERE id = $1",
                    &[&id, &held],
                )
                .await
                .map_err(|e| io_error("holding or releasing", e))
        })?;
        Ok(n > 0)
    }

    fn retry_now(&self, id: Option<&str>) -> io::Result<u64> {
        let now = unix_now();
        self.run(async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(|e| io_error("retrying", e))?;
            let sql = format!(
                "SELECT {COLUMNS} FROM herald_messages \
                 WHERE id = $1 OR ($1::text IS NULL AND NOT held AND next_attempt IS NOT NULL) \
                 FOR UPDATE"
            );
            let rows = tx
                .query(&sql, &[&id])
                .await
                .map_err(|e| io_error("retrying", e))?;
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
                .map_err(|e| io_error("retrying", e))?;
                count += 1;
            }
            tx.commit().await.map_err(|e| io_error("retrying", e))?;
            Ok(count)
        })
    }

    fn take(&self, id: &str) -> io::Result<Option<(SpooledMessage, MessageBytes)>> {
        let row = self.run(async {
            let client = self.db.client().await?;
            client
                .query_opt(
                    &format!("DELETE FROM herald_messages WHERE id = $1 RETURNING {COLUMNS}, body"),
                    &[&id],
                )
                .await
                .map_err(|e| io_error("deleting", e))
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let body: Vec<u8> = row.try_get("body").map_err(|e| io_error("deleting", e))?;
        Ok(Some((message(&row)?, MessageBytes::from(body))))
    }
}
