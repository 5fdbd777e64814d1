//! The message history: every [`Event`](crate::events::Event) the stages emit, stored for
//! search (`herald log search`, `/messages`) and queued for the app's webhook.
//!
//! A subscriber of the process's [`EventHub`](crate::events::EventHub) with a writer thread of
//! its own (at a lower CPU priority): after the first event it lets more gather for
//! [`LINGER`] (up to [`MAX_LINGER`] under sustained traffic), then writes them in one transaction (up to [`WRITE_BATCH`]), with the webhook
//! batches of the apps that have one, so neither submission nor delivery ever waits on the
//! database. If the writer falls behind by more than
//! `[history] queue` events, new ones are lost and counted (`herald_events_lost`). Events older
//! than `[history] retention` are pruned hourly.
//!
//! With `[cluster]` every batch is also copied into the cluster's PostgreSQL ([`pg`]), and
//! search reads from there: any node answers for the whole cluster. The SQLite file stays
//! (the writer makes this node's webhook batches there; the senders move them to the
//! cluster's outbox, which any live node sends).

pub mod db;
pub mod payload;
pub mod pg;
pub mod search;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::cluster::Db;
use crate::config::Config;
use crate::events::{Event, stats};
use db::HistoryDb;
use pg::PgHistory;
use search::Query;

/// Most events written in one transaction.
pub const WRITE_BATCH: usize = 2000;

/// How long the writer lets events gather after the first one before it writes them: one
/// transaction then carries a burst's events (each index page written once for many rows),
/// and the emitters find the writer busy or asleep rather than waiting on its channel, so an
/// event costs them no wake-up of this thread. On a quiet node events reach the history (and
/// the webhook outbox) within this much of happening.
pub const LINGER: Duration = Duration::from_millis(25);

/// The longest the writer lingers, reached under sustained traffic: while each write carries
/// at least [`BUSY_BATCH`] events the linger doubles up to this, so a busy node writes a few
/// large transactions a second instead of forty small ones: the hot index pages and their WAL
/// frames are written once per transaction (the history's schema in `sqlite3`, rows like the
/// delivery benchmark's: 8.8 µs of CPU per row in transactions of 150 rows, 4.8 µs in
/// transactions of 2 000). Events then reach the history within this much.
pub const MAX_LINGER: Duration = Duration::from_millis(200);

/// A write of at least this many events counts as busy (see [`MAX_LINGER`]); a smaller one
/// brings the linger back to [`LINGER`].
pub const BUSY_BATCH: usize = 256;

/// The linger after a write of `written` events that followed a linger of `linger`.
fn next_linger(linger: Duration, written: usize) -> Duration {
    if written >= BUSY_BATCH {
        (linger * 2).min(MAX_LINGER)
    } else {
        LINGER
    }
}

/// The history database of this configuration: `[history] database`, by default
/// `<data_dir>/history.sqlite`.
pub fn database_path(cfg: &Config) -> PathBuf {
    cfg.history
        .database
        .clone()
        .unwrap_or_else(|| cfg.server.data_dir.join("history.sqlite"))
}

/// The running history: the shared database and a signal that bumps after each write that
/// queued webhook events.
#[derive(Clone)]
pub struct History {
    /// Search, senders and pruning use this connection.
    pub db: Arc<HistoryDb>,
    /// With `[cluster]`: the shared table search reads.
    pub pg: Option<PgHistory>,
    /// Bumped after every write that put events in an outbox.
    pub queued: watch::Receiver<u64>,
    /// The apps whose events the writer queues for a webhook, and the bound of each outbox
    /// (`[webhooks] max_backlog`); they follow reloads ([`History::set_webhook_apps`]).
    outboxes: Arc<RwLock<Outboxes>>,
    /// Becomes `true` when the writer thread has written everything and stopped.
    pub written: watch::Receiver<bool>,
}

/// Which apps' events go to an outbox, how many may wait there, and how many go in a POST.
struct Outboxes {
    apps: HashSet<String>,
    max_backlog: usize,
    batch_size: usize,
}

impl History {
    /// The apps whose events are queued for a webhook now.
    pub fn webhook_apps(&self) -> HashSet<String> {
        self.outboxes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .apps
            .clone()
    }

    /// From the next batch on, queue the events of `apps` (bounded by `max_backlog`), in
    /// POSTs of at most `batch_size` events.
    pub fn set_webhook_apps(&self, apps: HashSet<String>, max_backlog: usize, batch_size: usize) {
        *self.outboxes.write().unwrap_or_else(|p| p.into_inner()) = Outboxes {
            apps,
            max_backlog,
            batch_size,
        };
    }

    /// Shutdown, once nothing emits any more: ends the hub's channels so the writer writes
    /// what is still queued and stops; waits for that at most `grace`. Returns whether it
    /// finished in time (what it had not written then is lost, and logged).
    pub async fn flush(&self, grace: Duration) -> bool {
        crate::events::hub().close();
        let mut written = self.written.clone();
        match tokio::time::timeout(grace, written.wait_for(|done| *done)).await {
            Ok(_) => true,
            Err(_) => {
                tracing::warn!(
                    "history: events still queued at the end of the grace period are lost"
                );
                false
            }
        }
    }

    /// Events matching `q`, newest first: from the cluster's table with `[cluster]`, else
    /// from this node's file.
    pub async fn search(&self, q: Query) -> anyhow::Result<Vec<db::StoredEvent>> {
        match &self.pg {
            Some(pg) => Ok(pg.search(&q).await?),
            None => self.db.call(move |c| db::search(c, &q)).await,
        }
    }
}

/// Opens the history database (and with `cluster`, the shared table), subscribes to the hub
/// and starts the writer thread and the hourly pruning; `None` when `[history] enabled =
/// false`.
pub async fn start(cfg: &Config, cluster: Option<Db>) -> anyhow::Result<Option<History>> {
    if !cfg.history.enabled {
        return Ok(None);
    }
    let path = database_path(cfg);
    let db = Arc::new(HistoryDb::open(&path).await?);
    let conn = db::open(&path)?;
    let pg = match cluster {
        Some(c) => Some(PgHistory::open(c).await?),
        None => None,
    };
    let hub = crate::events::hub();
    hub.set_node(&match &cfg.cluster {
        Some(c) => c.node_id(),
        None => cfg.server.hostname.clone(),
    });
    let copies = pg.clone().map(|pg| {
        let (tx, mut rx) = mpsc::channel::<Vec<Arc<Event>>>(256);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                if let Err(e) = pg.insert(&batch).await {
                    stats::stats().lost.inc_by(batch.len() as u64);
                    tracing::error!(error = %e, events = batch.len(), "history: cannot copy events to the cluster database");
                }
            }
        });
        tx
    });
    let rx = hub.subscribe(cfg.history.queue);
    let apps: HashSet<String> = cfg
        .apps
        .iter()
        .filter(|(_, a)| {
            a.webhook_url.is_some() && a.webhook_secret.as_ref().and_then(|s| s.key()).is_some()
        })
        .map(|(n, _)| n.clone())
        .collect();
    // The backlog gauge is the writer's count of each app's waiting events (the senders
    // lower it as batches leave): set from the database once, here, before anything writes
    // (and by a reload for an app that gains a webhook).
    for app in &apps {
        let name = app.clone();
        let n = db.call(move |c| db::backlog(c, &name)).await?;
        stats::stats()
            .backlog
            .get_or_create(&stats::app(app))
            .set(n as i64);
    }
    let outboxes = Arc::new(RwLock::new(Outboxes {
        apps,
        max_backlog: cfg.webhooks.max_backlog,
        batch_size: cfg.webhooks.batch_size,
    }));
    let (queued_tx, queued) = watch::channel(0u64);
    let (written_tx, written) = watch::channel(false);
    let writer_outboxes = outboxes.clone();
    std::thread::Builder::new()
        .name("history-writer".into())
        .spawn(move || {
            lower_priority();
            write_loop(rx, conn, &writer_outboxes, queued_tx, copies);
            written_tx.send_replace(true);
        })?;
    let retention = cfg.history.retention;
    let pruning = db.clone();
    let pg_pruning = pg.clone();
    tokio::spawn(async move {
        loop {
            let before = crate::clock::unix_now().saturating_sub(retention.as_secs());
            match pruning.call(move |c| db::prune(c, before)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "history: pruned events past retention"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "history: cannot prune"),
            }
            if let Some(pg) = &pg_pruning
                && let Err(e) = pg.prune(before).await
            {
                tracing::warn!(error = %e, "history: cannot prune the cluster table");
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    tracing::info!(database = %path.display(), "history: recording message events");
    Ok(Some(History {
        db,
        pg,
        queued,
        outboxes,
        written,
    }))
}

/// The writer thread: takes what has queued up, writes it in one transaction, repeats; returns
/// once the hub has closed its channel and everything queued is written.
fn write_loop(
    mut rx: mpsc::Receiver<Arc<Event>>,
    mut conn: rusqlite::Connection,
    outboxes: &RwLock<Outboxes>,
    queued: watch::Sender<u64>,
    copies: Option<mpsc::Sender<Vec<Arc<Event>>>>,
) {
    let hub = crate::events::hub();
    let mut lost_seen = 0;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut linger = LINGER;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        take_queued(&mut rx, &mut batch);
        if batch.len() < WRITE_BATCH {
            std::thread::sleep(linger);
            take_queued(&mut rx, &mut batch);
        }
        linger = next_linger(linger, batch.len());
        let s = stats::stats();
        let backlog_of = |a: &str| s.backlog.get_or_create(&stats::app(a)).get().max(0) as u64;
        let written = {
            let o = outboxes.read().unwrap_or_else(|p| p.into_inner());
            db::insert(
                &mut conn,
                &batch,
                &db::OutboxRules {
                    webhook_apps: &|a| o.apps.contains(a),
                    backlog_of: &backlog_of,
                    max_backlog: o.max_backlog,
                    batch_size: o.batch_size,
                    now: crate::clock::unix_now(),
                },
            )
        };
        match written {
            Ok(per_app) => {
                s.stored.inc_by(batch.len() as u64);
                let mut any = false;
                for (app, n, overflow) in per_app {
                    any |= n > 0;
                    if overflow > 0 {
                        s.overflow.get_or_create(&stats::app(&app)).inc_by(overflow);
                        tracing::warn!(
                            app,
                            events = overflow,
                            "webhook outbox full: events not queued"
                        );
                    }
                    if n > 0 {
                        s.backlog.get_or_create(&stats::app(&app)).inc_by(n as i64);
                    }
                }
                if any {
                    queued.send_modify(|v| *v += 1);
                }
                if let Some(tx) = &copies
                    && tx.try_send(batch.clone()).is_err()
                {
                    s.lost.inc_by(batch.len() as u64);
                }
            }
            Err(e) => {
                s.lost.inc_by(batch.len() as u64);
                tracing::error!(error = %e, events = batch.len(), "history: cannot write events");
            }
        }
        batch.clear();
        let lost = hub.dropped();
        if lost > lost_seen {
            s.lost.inc_by(lost - lost_seen);
            lost_seen = lost;
        }
    }
}

/// Moves what is queued into `batch`, up to [`WRITE_BATCH`] events.
fn take_queued(rx: &mut mpsc::Receiver<Arc<Event>>, batch: &mut Vec<Arc<Event>>) {
    while batch.len() < WRITE_BATCH {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(_) => break,
        }
    }
}

/// Gives the calling thread a lower CPU priority (nice 10): on saturated cores the history
/// writer takes what mail delivery leaves, and catches up when it is idle (its queue is
/// bounded; what overflows is counted, never waited for).
fn lower_priority() {
    // SAFETY: gettid and setpriority only read their integer arguments; on Linux a "process"
    // priority set for a thread id applies to that thread alone.
    let done = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
    };
    if done != 0 {
        tracing::debug!("history: cannot lower the writer thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_grows_under_sustained_traffic_and_falls_back_when_it_eases() {
        let mut linger = LINGER;
        for _ in 0..10 {
            linger = next_linger(linger, BUSY_BATCH);
        }
        assert_eq!(linger, MAX_LINGER);
        assert_eq!(next_linger(linger, BUSY_BATCH - 1), LINGER);
        assert_eq!(next_linger(LINGER, 1), LINGER);
        assert_eq!(next_linger(LINGER, WRITE_BATCH), LINGER * 2);
    }
}
