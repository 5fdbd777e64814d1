//! Where an app's sender takes its batches from: this node's history file, or with
//! `[cluster]` the cluster's table ([`super::pg`]), after moving this node's new batches
//! there (the writer makes them in the file, in the transaction that records the events, so
//! they survive a kill -9 either way; a node that dies before moving them sends them when it
//! returns).

use std::sync::Arc;
use std::time::Duration;

use super::pg::SharedOutbox;
use crate::clock::unix_now;
use crate::history::db::{self, Batch, HistoryDb};

/// Most of this node's batches moved to the cluster's table in one trip.
const MOVE_AT_ONCE: usize = 100;

/// How often a sender in a cluster looks for batches other nodes left, when nothing happens
/// on this node (and at least how long it waits between two looks).
const POLL: Duration = Duration::from_secs(2);
const POLL_MIN: Duration = Duration::from_millis(50);

/// One app's outbox.
#[derive(Clone)]
pub(crate) enum Outbox {
    /// This node's history file (no `[cluster]`).
    Local(Arc<HistoryDb>),
    /// The cluster's table, fed from this node's file.
    Shared {
        /// This node's history file, where the writer makes the batches.
        local: Arc<HistoryDb>,
        /// The cluster's table.
        pg: SharedOutbox,
    },
}

/// What the sender does next.
pub(crate) struct Next {
    /// The batch to POST (its `next_attempt` says when), or none now.
    pub batch: Option<Batch>,
    /// The app's waiting events as the cluster's table counts them; `None`: the writer's
    /// count stands.
    pub backlog: Option<u64>,
    /// Without a batch: look again after this even if this node queues nothing (`None`:
    /// only when it does).
    pub recheck: Option<Duration>,
}

impl Outbox {
    /// Removes the finished batch `done`, then gives `app`'s next batch (up to `size` events
    /// when one is made from old per-event rows); in a cluster, leased for `timeout`.
    pub(crate) async fn next(
        &self,
        app: &str,
        done: Option<i64>,
        size: usize,
        timeout: Duration,
    ) -> anyhow::Result<Next> {
        match self {
            Outbox::Local(db) => {
                let app = app.to_string();
                let batch = db
                    .call(move |c| db::next_batch(c, &app, done, size, unix_now()))
                    .await?;
                Ok(Next {
                    batch,
                    backlog: None,
                    recheck: None,
                })
            }
            Outbox::Shared { local, pg } => {
                if let Some(id) = done {
                    pg.remove(id).await?;
                }
                move_to_cluster(local, pg, app, size).await?;
                let claim = pg.claim(app, timeout).await?;
                let recheck = match &claim.batch {
                    Some(_) => None,
                    None => Some(claim.recheck.unwrap_or(POLL).clamp(POLL_MIN, POLL)),
                };
                Ok(Next {
                    batch: claim.batch,
                    backlog: Some(claim.backlog),
                    recheck,
                })
            }
        }
    }

    /// Records a failed attempt of batch `id`: due again after `wait`.
    pub(crate) async fn retry(&self, id: i64, wait: Duration, error: &str) -> anyhow::Result<()> {
        match self {
            Outbox::Local(db) => {
                let next = crate::clock::now_ms().saturating_add(wait.as_millis() as u64);
                let error = error.to_string();
                db.call(move |c| db::retry_batch(c, id, next, &error)).await
            }
            Outbox::Shared { pg, .. } => Ok(pg.retry(id, wait, error).await?),
        }
    }
}

/// Moves `app`'s batches from this node's file to the cluster's table, oldest first, each
/// removed from the file only once the table has it (a batch moved twice is kept once).
async fn move_to_cluster(
    local: &Arc<HistoryDb>,
    pg: &SharedOutbox,
    app: &str,
    size: usize,
) -> anyhow::Result<()> {
    let mut moved: Option<i64> = None;
    for _ in 0..MOVE_AT_ONCE {
        let name = app.to_string();
        let Some(batch) = local
            .call(move |c| db::next_batch(c, &name, moved, size, unix_now()))
            .await?
        else {
            // next_batch removed the last one moved.
            return Ok(());
        };
        pg.add(app, &batch).await?;
        moved = Some(batch.id);
    }
    if let Some(id) = moved {
        local.call(move |c| db::remove_batch(c, id)).await?;
    }
    Ok(())
}
