//! Push-backs shared by the nodes of a cluster: a node that is told to slow down writes it to
//! the database (`herald_shaping`, one row per destination, see
//! [`crate::cluster::limits::record_pushback`]); every node reads the rows that changed each
//! [`SYNC_EVERY`] and applies the ones it has not seen, so the whole cluster holds the
//! destination back and halves its limits. The read is one query per interval, whatever the
//! queue holds; recovery stays each node's own (its deliveries win its limits back).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Reaction, Shaper};
use crate::cluster::Db;

/// How often a node looks for push-backs the others saw.
pub(crate) const SYNC_EVERY: Duration = Duration::from_secs(2);

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
