//! Push-backs shared by the nodes of a cluster: a node that is told to slow down writes it to
//! the database (`herald_shaping`, one row per destination, see
//! [`crate::cluster::limits::record_pushback`]); every node reads the rows that changed each
//! [`SYNC_EVERY`] and applies the ones it has not seen, so the whole cluster holds the
//! destination back and halves its limits. The read is one query per interval, whatever the
//! queue holds; recovery stays each node's own (its deliveries win its limits back).
//!
//! The limits themselves hold for the whole cluster: on the same interval a node counts the
//! live nodes (their leases in `herald_node_leases`, see
//! [`crate::cluster::limits::live_nodes`]) and takes its share of each destination's
//! connections and messages per minute ([`super::rules`]). No database round trip per
//! message: a node that dies leaves its share unused until its lease expires (`[cluster]
//! lease`), one that stops cleanly gives it back within [`SYNC_EVERY`].

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Reaction, Shaper};
use crate::cluster::Db;

/// How often a node looks for push-backs the others saw.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(2);

/// The live nodes this node shares each destination's limits with (itself included).
static NODES: AtomicU32 = AtomicU32::new(1);

/// How many nodes deliver now (1 on a single node, or before the first count).
pub(super) fn nodes() -> u32 {
    NODES.load(Ordering::Relaxed).max(1)
}

/// Reads the number of live nodes; keeps the last count when the database does not answer.
async fn count_nodes(db: &Db) {
    match crate::cluster::limits::live_nodes(db).await {
        Ok(n) => {
            let before = NODES.swap(n, Ordering::Relaxed);
            if before != n {
                tracing::info!(
                    nodes = n,
                    "traffic shaping: {n} live nodes share every destination's limits"
                );
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "traffic shaping: cannot count the live nodes");
        }
    }
}

struct Pushback {
    destination: String,
    hold: Duration,
    why: String,
}

fn sink() -> &'static OnceLock<mpsc::UnboundedSender<Pushback>> {
    static SINK: OnceLock<mpsc::UnboundedSender<Pushback>> = OnceLock::new();
    &SINK
}

/// Tells the other nodes (when in a cluster) that `destination` pushed back.
pub(super) fn publish(destination: &str, hold: Duration, why: &str) {
    if let Some(tx) = sink().get() {
        let _ = tx.send(Pushback {
            destination: destination.to_string(),
            hold,
            why: why.to_string(),
        });
    }
}

/// Starts sharing push-backs through `db` (once per process): writes this node's, applies the
/// others' with `shaper`'s floor.
pub(crate) fn start(db: Db, shaper: Shaper) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Pushback>();
    if sink().set(tx).is_err() {
        return;
    }
    let writer = db.clone();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if let Err(e) =
                crate::cluster::limits::record_pushback(&writer, &p.destination, p.hold, &p.why)
                    .await
            {
                tracing::warn!(destination = %p.destination, error = %e,
                    "traffic shaping: cannot share a push-back with the cluster");
            }
        }
    });
    tokio::spawn(async move {
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut tick = tokio::time::interval(SYNC_EVERY);
        loop {
            tick.tick().await;
            count_nodes(&db).await;
            let rows = match crate::cluster::limits::pushbacks(&db).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::debug!(error = %e, "traffic shaping: cannot read the cluster's push-backs");
                    continue;
                }
            };
            for row in rows {
                let new = seen.get(&row.destination).is_none_or(|s| row.seq > *s);
                seen.insert(row.destination.clone(), row.seq);
                if new && row.node != db.node_id() && row.held_for > Duration::ZERO {
                    shaper.push_back(
                        &row.destination,
                        row.held_for,
                        &row.reason,
                        Reaction::Suspend,
                    );
                }
            }
        }
    });
}
