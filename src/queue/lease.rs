//! The queue's side of a shared spool ([`crate::spool::Leases`], `[cluster]`): keeps this
//! node's leases renewed, pauses attempts while the database cannot confirm them, drops
//! messages another node took over or an operator deleted, reloads those an operator changed,
//! and adopts the mail of nodes whose leases expired.
//!
//! A renewal is one row for the node ([`crate::spool::Leases::renew`]), whatever the queue
//! holds; the node's messages are listed and reconciled only when the database says they
//! changed (an operator's action, a lease that lapsed).
//!
//! Timing, for a lease `L`: renewal every `L/4`, adoption every 5 s (or `L/4` if shorter);
//! attempts start only within `L/2` of the last
//! successful renewal (a renewal confirms the lease until at least its start plus `L`, on the
//! database's clock), so an attempt started by this node has at least `L/2` before another node
//! may adopt the message. An attempt still running when its lease expires (a node cut off
//! from the database, or one hung longer than `L/2`) may be repeated by the adopting node: the
//! duplicate window the README documents.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manager::{Inner, Phase, next_due_ms};
use crate::spool::{ClusterEntry, QueueId, Spool};

/// Most messages adopted in one round (the rest at the next).
const ADOPT_BATCH: usize = 500;

/// How long after a successful renewal new attempts may still start.
fn valid_for(lease: Duration) -> Duration {
    lease / 2
}

/// The queue's lease work, as the manager sees it (this file extends [`Inner`] the way
/// `control.rs` extends the manager, so the manager names nothing of this file).
impl Inner {
    /// Until when this node's leases count as held at start (recovery has just claimed them):
    /// `None` on a single node.
    pub(super) fn leases_valid_at_start(spool: &Spool) -> Option<Instant> {
        spool
            .leases()
            .map(|l| Instant::now() + valid_for(l.lease()))
    }

    /// Starts the lease keeper ([`keep`]) when the spool is shared by a cluster.
    pub(super) fn start_lease_keeper(self: &Arc<Self>) {
        if self.spool.leases().is_some() {
            tokio::spawn(keep(self.clone()));
        }
    }

    /// Gives this node's leases up at a clean shutdown ([`release`]).
    pub(super) async fn release_leases(self: &Arc<Self>) {
        release(self).await;
    }
}

/// How often the keeper looks for mail to adopt (a released lease is taken this soon).
const ADOPT_EVERY: Duration = Duration::from_secs(5);

/// Renews and reconciles every `lease/4` (or at once when woken), adopts every
/// [`ADOPT_EVERY`] at most, until shutdown.
async fn keep(inner: Arc<Inner>) {
    let Some(lease) = inner.spool.leases().map(|l| l.lease()) else {
        return;
    };
    let every = (lease / 4).max(Duration::from_millis(250));
    let tick = every.min(ADOPT_EVERY);
    let mut phase = inner.phase.subscribe();
    let mut reachable = true;
    let mut last_renewal = Instant::now();
    loop {
        let woken = tokio::select! {
            _ = tokio::time::sleep(tick) => false,
            _ = inner.lease_wake.notified() => true,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        if woken || !reachable || last_renewal.elapsed() + tick / 2 >= every {
            let started = Instant::now();
            if !renew(&inner, lease, started, &mut reachable).await {
                continue;
            }
            last_renewal = started;
        }
        adopt(&inner).await;
    }
}

/// One renewal of this node's lease (one row, whatever the queue holds); when the database
/// says the node's messages changed (an operator's action, or a lapsed lease another node may
/// have taken some under), they are listed and reconciled before attempts may go on. False
/// when the database did not answer (attempts pause until it does).
async fn renew(
    inner: &Arc<Inner>,
    lease: Duration,
    started: Instant,
    reachable: &mut bool,
) -> bool {
    let Some(leases) = inner.spool.leases() else {
        return true;
    };
    let renewed = match leases.renew().await {
        Ok(true) => {
            // What the table held before the list was read: later arrivals are kept.
            let before: Vec<QueueId> = inner.table().ids();
            match leases.owned().await {
                Ok(held) => {
                    reconcile(inner, before, held.into_iter().collect()).await;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    match renewed {
        Ok(()) => {
            *inner
                .leases_valid_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(started + valid_for(lease));
            if !*reachable {
                tracing::info!("cluster: the database answers again; deliveries resume");
                *reachable = true;
            }
            inner.wake.notify_one();
            true
        }
        Err(e) => {
            // Unconfirmed leases: no new attempt until the database answers again.
            *inner
                .leases_valid_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(started);
            if *reachable {
                tracing::error!(error = %e,
                    "cluster: cannot renew this node's leases; new delivery attempts pause \
                     until the database answers (submissions get 451 meanwhile)");
                *reachable = false;
            }
            false
        }
    }
}

/// Applies a renewal's answer: messages of this node that are no longer its are dropped, and
/// those an operator changed are reloaded.
async fn reconcile(inner: &Arc<Inner>, before: Vec<QueueId>, held: HashMap<QueueId, i64>) {
    let mut changed = Vec::new();
    {
        let mut table = inner.table();
        for id in before {
            if held.contains_key(&id) {
                continue;
            }
            let Some(in_flight) = table.get(&id).map(|e| e.in_flight()) else {
                continue;
            };
            if in_flight {
                // Its round ends without recording anything (the row is gone or another
                // node's).
                table.mark_deleted(&id);
            } else {
                table.remove(&id);
            }
            tracing::info!(queue_id = %id,
                "cluster: message no longer this node's (deleted by an operator, or adopted by \
                 another node after this node's lease expired)");
        }
        for (id, seq) in &held {
            if let Some(entry) = table.get(id)
                && table.control_seq(id) != *seq
                && !entry.in_flight()
                && !entry.deleted()
            {
                changed.push((id.clone(), *seq));
            }
        }
    }
    for (id, seq) in changed {
        match inner.spool.load(&id).await {
            Ok(fresh) => {
                let mut table = inner.table();
                if table.get(&id).is_none_or(|e| e.in_flight()) {
                    continue;
                }
                table.set_control_seq(&id, seq);
                table.update(&fresh);
                table.schedule(&id, next_due_ms(&fresh));
                tracing::info!(queue_id = %id, "cluster: operator change applied");
            }
            Err(e) => tracing::warn!(queue_id = %id, error = %e,
                "cluster: cannot reload a message an operator changed; trying again"),
        }
    }
}

/// Takes over messages whose lease expired (a node died or lost the database).
async fn adopt(inner: &Arc<Inner>) {
    if *inner.phase.borrow() != Phase::Running {
        return;
    }
    let adopted = match inner.spool.leases() {
        Some(l) => l.adopt(ADOPT_BATCH).await,
        None => Ok(Vec::new()),
    };
    let adopted: Vec<ClusterEntry> = match adopted {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot adopt expired leases");
            return;
        }
    };
    if adopted.is_empty() {
        return;
    }
    {
        let mut table = inner.table();
        for entry in adopted.iter().cloned() {
            let id = entry.message.id.clone();
            if table.contains(&id) {
                continue;
            }
            table.insert(entry.message, false);
            table.set_control_seq(&id, entry.control_seq);
        }
    }
    tracing::info!(
        messages = adopted.len(),
        "cluster: adopted messages whose lease had expired or was released"
    );
    inner.wake.notify_one();
}

/// Gives this node's leases up at a clean shutdown, so the other nodes take its mail at once.
async fn release(inner: &Arc<Inner>) {
    let released = match inner.spool.leases() {
        Some(l) => l.release_all().await,
        None => Ok(0),
    };
    match released {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "cluster: leases released for the other nodes"),
        Err(e) => tracing::warn!(error = %e,
            "cluster: cannot release leases; the other nodes take the mail once they expire"),
    }
}
