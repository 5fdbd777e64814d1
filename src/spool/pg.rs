//! The spool in PostgreSQL ([`PgBackend`], `[cluster]`): every node of a cluster stores the
//! mail it accepts in one table (`herald_messages`, migration 0001) and delivers from it.
//!
//! Durability: a group of new messages (the committer thread hands over every message waiting)
//! is inserted in one transaction; `write_batch` returns once PostgreSQL has committed it, so
//! `250` follows a durable commit (and a failed one gives the client `451 4.3.0`). Bodies are
//! `bytea`: a message is read into memory once to be sent to the server.
//!
//! Leases ([`Leases`]): the node that accepts a message holds its lease from the first
//! commit (`lease_owner`). The lease is the node's, not the message's: one row per node in
//! `herald_node_leases` (migration 0006) lasts `[cluster] lease` from its last renewal (the
//! database's clock, so the nodes' clocks do not matter), and the queue renews that one row
//! every quarter of the lease, whatever the number of messages it holds. A node whose row
//! expired (node dead, or cut off from the database) lets another node adopt its messages:
//! the adopter locks the expired node's row for its transaction (`FOR UPDATE SKIP LOCKED`,
//! also on the messages, so two nodes never adopt the same one), and the expired node's next
//! renewal waits for that lock, sees that its lease had lapsed and reloads the list of what
//! is still its own before any new attempt.
//!
//! A clean shutdown expires the node's row and leaves its messages named as its own (no row
//! rewritten): the other nodes may adopt them at once, and the node, started again, renews its
//! row and reads back those still its own a chunk at a time while it already works
//! (`pg_recover.rs`).
//!
//! Operator actions on any node change the row (`held`, the retry time), bump `control_seq`
//! and bump the owning node's `changes`; the owner sees the new count at its next renewal and
//! reloads its list (and with it each changed message).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::batch::{Batcher, Results};
use super::handle::{ClusterEntry, Leases, NewMessage, SpoolBackend};
use super::staged::{MessageBytes, StagedMessage};
use super::{BoxFuture, DeliveryState, Envelope, QueueId, SpoolError, SpooledMessage};
use crate::cluster::{Db, DbError};

/// Longest a single database operation may take before it counts as failed.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Columns read back for a queued message (without its body).
const COLUMNS: &str = "id, envelope, size, state, held, control_seq, lease_owner";

/// Makes or renews this node's one lease row (`$1` node id, `$2` lease in seconds, on the
/// database's clock): at start, with a claim, and at each renewal.
const RENEW_NODE_LEASE: &str = "INSERT INTO herald_node_leases (node_id, lease_until) \
     VALUES ($1, now() + make_interval(secs => $2)) \
     ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until";

/// The spool in the cluster's PostgreSQL database (module documentation).
pub struct PgBackend {
    shared: Arc<Shared>,
    /// Groups new messages into one transaction.
    committer: Batcher<NewMessage>,
    /// Groups removals of delivered messages into one `DELETE`.
    remover: Batcher<QueueId>,
}

/// What the backend's methods and its group-commit tasks share.
struct Shared {
    db: Db,
    /// Local directory for messages being received (before their commit).
    tmp: PathBuf,
    /// Delivered messages whose removal failed (database unreachable): retried at each
    /// renewal, and never adopted back by this node meanwhile.
    unremoved: Mutex<HashSet<QueueId>>,
    /// The node's `changes` count when its messages were last listed (`None` before the
    /// first time), and at the last renewal: a renewal asks for the list again only when the
    /// count moved or the lease had lapsed.
    seen_changes: Mutex<(Option<i64>, i64)>,
}

impl PgBackend {
    /// A backend on `db`, receiving messages into `staging_dir/tmp`. Call from within a tokio
    /// runtime (its group commits run as tasks there).
    pub fn open(db: Db, staging_dir: &Path) -> Result<PgBackend, SpoolError> {
        let tmp = staging_dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        let shared = Arc::new(Shared {
            db,
            tmp,
            unremoved: Mutex::new(HashSet::new()),
            seen_changes: Mutex::new((None, 0)),
        });
        let s = shared.clone();
        let committer = Batcher::on_task("spool-commit", move |group| {
            let s = s.clone();
            Box::pin(async move { s.write_batch(group).await })
        })?;
        let s = shared.clone();
        let remover = Batcher::on_task("spool-remove", move |ids: Vec<QueueId>| {
            let s = s.clone();
            Box::pin(async move { s.remove_batch(&ids).await })
        })?;
        Ok(PgBackend {
            shared,
            committer,
            remover,
        })
    }
}

/// `fut` with the operation deadline.
async fn timed<T>(fut: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(OPERATION_TIMEOUT, fut)
        .await
        .unwrap_or(Err(DbError::Timeout))
}

/// The same failure for every member of a group.
fn all_failed(count: usize, e: &DbError) -> Results {
    (0..count).map(|_| Err(e.clone().into())).collect()
}

impl Shared {
    fn unremoved(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        self.unremoved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen_changes(&self) -> MutexGuard<'_, (Option<i64>, i64)> {
        self.seen_changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_secs(&self) -> f64 {
        self.db.lease().as_secs_f64()
    }

    async fn delete(&self, ids: &[QueueId]) -> Result<(), DbError> {
        timed(async {
            let client = self.db.client().await?;
            client
                .execute("DELETE FROM herald_messages WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(DbError::doing("removing delivered messages"))?;
            Ok(())
        })
        .await
    }

    /// A group of new messages in one transaction: all stored, or all failed.
    async fn write_batch(&self, batch: Vec<NewMessage>) -> Results {
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
                    let (kind, why) = (e.kind(), format!("reading the received message: {e}"));
                    return (0..count)
                        .map(|_| Err(io::Error::new(kind, why.clone()).into()))
                        .collect();
                }
            }
            rows.push((id, envelope, bytes));
        }
        let stored = timed(async {
            let mut client = self.db.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(DbError::doing("storing messages"))?;
            let insert = tx
                .prepare(
                    "INSERT INTO herald_messages (id, envelope, body, size, next_attempt, \
                     accepted_by, lease_owner) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .await
                .map_err(DbError::doing("storing messages"))?;
            for (id, envelope, bytes) in &rows {
                let size = bytes.len() as i64;
                let due = envelope.received_at as i64;
                tx.execute(
                    &insert,
                    &[id, &Json(envelope), bytes, &size, &due, &self.db.node_id()],
                )
                .await
                .map_err(DbError::doing("storing a message"))?;
            }
            tx.commit()
                .await
                .map_err(DbError::doing("committing messages"))
        })
        .await;
        match stored {
            Ok(()) => (0..count).map(|_| Ok(())).collect(),
            Err(e) => all_failed(count, &e),
        }
    }

    /// Removes delivered messages with one statement; on failure they are kept for the next
    /// renewal (and never delivered again by this node meanwhile).
    async fn remove_batch(&self, ids: &[QueueId]) -> Results {
        match self.delete(ids).await {
            Ok(()) => ids.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                self.unremoved().extend(ids.iter().cloned());
                all_failed(ids.len(), &e)
            }
        }
    }
}

/// A queued message from a row of [`COLUMNS`].
pub(super) fn message(row: &Row) -> Result<SpooledMessage, SpoolError> {
    let id: String = row.try_get("id").map_err(|e| SpoolError::Corrupt {
        id: String::new(),
        what: "id",
        detail: e.to_string(),
    })?;
    let bad = |what: &'static str, e: tokio_postgres::Error| SpoolError::Corrupt {
        id: id.clone(),
        what,
        detail: e.to_string(),
    };
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

fn entry(row: &Row) -> Result<ClusterEntry, SpoolError> {
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

impl Shared {
    /// The row `sql` returns for `$1 = id`, if any, within the operation's deadline.
    pub(super) async fn row_by_id(
        &self,
        sql: &str,
        id: &str,
        doing: &'static str,
    ) -> Result<Option<tokio_postgres::Row>, DbError> {
        timed(async {
            let client = self.db.client().await?;
            client
                .query_opt(sql, &[&id])
                .await
                .map_err(DbError::doing(doing))
        })
        .await
    }
}

impl Shared {
    async fn recover(&self) -> Result<Vec<SpooledMessage>, SpoolError> {
        // Messages half-received when this node's previous run died.
        for entry in fs::read_dir(&self.tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        // This node's lease (renewed or made), then its own messages (a restart: its id is
        // unique), every unowned one and those of nodes whose lease expired; the rest
        // belongs to live nodes.
        let rows = self.claim(true, None).await?;
        let mut out = rows.iter().map(message).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn load(&self, id: &str) -> Result<SpooledMessage, SpoolError> {
        let sql = format!("SELECT {COLUMNS} FROM herald_messages WHERE id = $1");
        let row = self.row_by_id(&sql, id, "loading a message").await?;
        message(&row.ok_or_else(|| SpoolError::NotFound(id.to_string()))?)
    }

    async fn read_message(&self, id: &str) -> Result<MessageBytes, SpoolError> {
        let row = timed(async {
            let client = self.db.client().await?;
            client
                .query_opt("SELECT body FROM herald_messages WHERE id = $1", &[&id])
                .await
                .map_err(DbError::doing("reading a message"))
        })
        .await?;
        let body: Vec<u8> = row
            .ok_or_else(|| SpoolError::NotFound(id.to_string()))?
            .try_get(0)
            .map_err(DbError::doing("reading a message"))?;
        Ok(MessageBytes::from(body))
    }

    async fn write_state(&self, id: &str, state: DeliveryState) -> Result<(), SpoolError> {
        let due = next_attempt(&state);
        let updated = timed(async {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE herald_messages SET state = $2, next_attempt = $3 \
                     WHERE id = $1 AND lease_owner = $4",
                    &[&id, &Json(&state), &due, &self.db.node_id()],
                )
                .await
                .map_err(DbError::doing("recording the delivery state"))
        })
        .await?;
        if updated == 0 {
            return Err(SpoolError::LeaseLost(id.to_string()));
        }
        Ok(())
    }
}

impl SpoolBackend for PgBackend {
    fn stage(&self) -> io::Result<StagedMessage> {
        StagedMessage::create_in(&self.shared.tmp, 0)
    }

    fn commit(&self, message: NewMessage) -> BoxFuture<'_, Result<(), SpoolError>> {
        Box::pin(self.committer.submit(message))
    }

    fn recover(&self) -> BoxFuture<'_, Result<Vec<SpooledMessage>, SpoolError>> {
        Box::pin(self.shared.recover())
    }

    fn recover_chunks(&self) -> BoxFuture<'_, Result<super::Recovery, SpoolError>> {
        Box::pin(self.shared.clone().recover_chunks())
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SpooledMessage, SpoolError>> {
        Box::pin(self.shared.load(id))
    }

    fn read_message<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<MessageBytes, SpoolError>> {
        Box::pin(self.shared.read_message(id))
    }

    fn write_state<'a>(
        &'a self,
        id: &'a str,
        state: DeliveryState,
    ) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(self.shared.write_state(id, state))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(async move {
            let ids = [id.to_string()];
            self.shared.remove_batch(&ids).await.pop().unwrap_or(Ok(()))
        })
    }

    fn remove_finished<'a>(
        &'a self,
        ids: &'a [QueueId],
    ) -> BoxFuture<'a, Vec<Result<(), SpoolError>>> {
        Box::pin(self.remover.submit_all(ids.to_vec()))
    }

    fn leases(&self) -> Option<&dyn Leases> {
        Some(self)
    }
}

/// `a, b` → `m.a, m.b` (for RETURNING after an UPDATE … FROM, where names are ambiguous).
pub(super) fn prefixed(columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("m.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[path = "pg_leases.rs"]
mod leases;
#[path = "pg_queue.rs"]
mod queue;
#[path = "pg_recover.rs"]
mod recover;
