//! The delivery queue: recovers the spool at start, schedules each message's next attempt,
//! runs attempts through [`Outbound`], settles each attempt with the pure
//! [`transition::settle`], records the state durably, queues bounces and delay notices, and
//! removes finished messages.
//!
//! Order of durable writes after an attempt: the bounce (if any) is spooled first, then the
//! new state. A crash in between can repeat a bounce, never lose one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, watch};

use super::dsn::{self, Kind};
use super::recovery::{RECOVERY_IN_FOREGROUND, Recovered};
use super::table::Table;
use super::transition::{self, Rules};
use crate::clock::{now_ms, unix_now};
use crate::config::Config;
use crate::mta_sts::StsResolver;
use crate::outbound::deliver::Outbound;
use crate::outbound::job::Job;
use crate::outbound::outcome::{Failure, RecipientResult};
use crate::own_mail::OwnMail;
use crate::signing::Signer;
use crate::spool::{Arrivals, RecipientStatus, Spool, SpoolLock, SpooledMessage};
use crate::tls_policy::TlsSink;

/// Handle on the running queue, shared with the admin endpoint.
#[derive(Clone)]
pub struct QueueManager {
    pub(super) inner: Arc<Inner>,
}

/// What a reload replaces: the settings, the delivery machinery and herald's own mail path
/// that attempts starting from now on use. An attempt in flight keeps the generation it
/// started with, so a reload never changes the rules under a delivery.
pub(super) struct Generation {
    /// The configuration in force.
    pub(super) cfg: Arc<Config>,
    /// herald's own mail path (bounces, delay notices), signing with this generation's keys.
    pub(super) own: OwnMail,
    /// Delivery: resolver, TLS, smart host, MTA-STS, connection pool.
    pub(super) outbound: Arc<Outbound>,
}

/// Delivery for a reloaded configuration, ready to be put in force
/// ([`QueueManager::prepare_reload`]).
pub struct NextGeneration(Arc<Generation>);

pub(super) struct Inner {
    pub(super) spool: Spool,
    current: std::sync::RwLock<Arc<Generation>>,
    table: Mutex<Table>,
    pub(super) wake: Notify,
    rounds: Arc<Semaphore>,
    /// How many rounds may run at once (the permits of `rounds`).
    concurrency: u32,
    /// Running, draining for shutdown, or cutting what still runs.
    pub(super) phase: watch::Sender<Phase>,
    /// In a cluster: until when this node's leases are known to hold (see
    /// [`super::lease`]); no attempt starts after it. `None` for a single node.
    pub(super) leases_valid_until: Mutex<Option<Instant>>,
    /// Wakes the lease keeper at once (after an operator action, so the owner reloads).
    pub(super) lease_wake: Notify,
    /// Bounces, suppression and the guard (issue 24): VERP return paths, held apps, events.
    after: std::sync::OnceLock<crate::bounce::AfterDelivery>,
    _lock: SpoolLock,
}

/// Where the queue stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Starting attempts as they fall due.
    Running,
    /// Shutting down: no new attempts; those in flight finish.
    Draining,
    /// The grace period is over: what is still in flight is abandoned and recorded as not
    /// attempted.
    Cut,
}

impl Inner {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation new attempts use (see [`Generation`]).
    pub(super) fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether a new attempt may start: always on a single node; in a cluster, only while
    /// this node's leases are known to hold (the database answered recently).
    fn may_start_attempts(&self) -> bool {
        match *self
            .leases_valid_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            None => true,
            Some(until) => Instant::now() < until,
        }
    }
}

/// When a message is next due (ms), from its earliest pending recipient; `None` when held or
/// nothing is pending.
pub(super) fn next_due_ms(msg: &SpooledMessage) -> Option<u64> {
    msg.state.next_attempt().map(|s| s.saturating_mul(1000))
}

impl QueueManager {
    /// Locks the spool, recovers every waiting message and starts delivering; messages stored
    /// later arrive through `arrivals`.
    pub async fn start(
        cfg: Arc<Config>,
        spool: Spool,
        arrivals: Arrivals,
        signer: Arc<Signer>,
        sts: Arc<StsResolver>,
        tls_events: Arc<dyn TlsSink>,
    ) -> anyhow::Result<QueueManager> {
        let dir = cfg.spool_dir();
        let lock = SpoolLock::try_acquire(&dir)
            .map_err(|e| anyhow::anyhow!("cannot lock the spool {}: {e}", dir.display()))?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "another herald is already running on the spool {}",
                    dir.display()
                )
            })?;
        let outbound = Arc::new(Outbound::new(&cfg, sts, tls_events)?);
        let recovery = spool.recover_chunks().await?;
        let concurrency = (cfg.delivery.max_connections * 2).max(4);
        let leases_valid_until = Inner::leases_valid_at_start(&spool);
        let own = OwnMail::new(spool.clone(), signer, &cfg.server.hostname);
        let inner = Arc::new(Inner {
            current: std::sync::RwLock::new(Arc::new(Generation { cfg, own, outbound })),
            spool,
            table: Mutex::new(Table::default()),
            wake: Notify::new(),
            rounds: Arc::new(Semaphore::new(concurrency)),
            concurrency: concurrency as u32,
            phase: watch::Sender::new(Phase::Running),
            leases_valid_until: Mutex::new(leases_valid_until),
            lease_wake: Notify::new(),
            after: std::sync::OnceLock::new(),
            _lock: lock,
        });
        // A small spool is recovered before the queue counts as started; a big one goes on
        // in the background (herald is ready meanwhile: new mail is taken and delivered, and
        // recovered messages join the schedule as they are read).
        let mut recovered = Recovered::new(recovery);
        let deadline = tokio::time::Instant::now() + RECOVERY_IN_FOREGROUND;
        let done = recovered.take_until(&inner, Some(deadline)).await;
        tracing::info!(
            waiting = recovered.waiting,
            spool = %dir.display(),
            "queue started: waiting messages recovered"
        );
        if !done {
            inner.table().recovering = true;
            tracing::info!(
                "queue: the spool is big; the rest of it is recovered in the background \
                 (`herald queue summary` shows when it is done)"
            );
            tokio::spawn({
                let inner = inner.clone();
                async move {
                    recovered.take_until(&inner, None).await;
                    let mut table = inner.table();
                    table.recovering = false;
                    table.burst_over();
                    drop(table);
                    super::give_memory_back();
                    tracing::info!(
                        waiting = recovered.waiting,
                        seconds = recovered.started.elapsed().as_secs(),
                        "queue recovered: every waiting message is in the schedule"
                    );
                }
            });
        }
        tokio::spawn(receive(inner.clone(), arrivals));
        tokio::spawn(schedule(inner.clone()));
        inner.start_lease_keeper();
        Ok(QueueManager { inner })
    }

    /// Stops the queue for shutdown: no new attempt starts, and those in flight may finish
    /// and have their results recorded (so a restart does not repeat a delivery that was
    /// made). What is still running after `grace` is cut: its recipients are recorded as not
    /// attempted and stay due, to be tried when herald starts again. Returns once every
    /// round has recorded its results (or, should the spool hang, shortly after the cut).
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.phase.send_replace(Phase::Draining);
        inner.wake.notify_one();
        let in_flight = inner.table().in_flight();
        if in_flight > 0 {
            tracing::info!(
                in_flight,
                "queue draining: letting deliveries in flight finish"
            );
        }
        let all_done = inner.rounds.clone().acquire_many_owned(inner.concurrency);
        tokio::pin!(all_done);
        if tokio::time::timeout(grace, &mut all_done).await.is_ok() {
            tracing::info!("queue stopped: no delivery in flight");
            inner.release_leases().await;
            return;
        }
        let cut = inner.table().in_flight();
        tracing::warn!(
            messages = cut,
            grace = %humantime::format_duration(grace),
            "queue stopping: deliveries still in flight after the grace period are cut and \
             recorded as not attempted"
        );
        inner.phase.send_replace(Phase::Cut);
        if tokio::time::timeout(CUT_RECORDING, all_done).await.is_err() {
            tracing::error!("queue stopped before every cut delivery was recorded");
        } else {
            tracing::info!("queue stopped");
            inner.release_leases().await;
        }
    }

    /// Puts together delivery for a reloaded configuration, changing nothing yet: retry
    /// schedule and expiry, smart host, TLS requirements, DNS servers, MTA-STS (through
    /// `sts`), timeouts, connection limits, and the keys bounces and delay notices are signed
    /// with. Fails when they cannot be put together (e.g. an unreadable CA file); a reload
    /// then keeps everything as it was. [`QueueManager::apply_reload`] puts it in force.
    pub fn prepare_reload(
        &self,
        cfg: Arc<Config>,
        signer: Arc<Signer>,
        sts: Arc<StsResolver>,
        tls_events: Arc<dyn TlsSink>,
    ) -> anyhow::Result<NextGeneration> {
        let outbound = Arc::new(Outbound::new(&cfg, sts, tls_events)?);
        let own = OwnMail::new(self.inner.spool.clone(), signer, &cfg.server.hostname);
        Ok(NextGeneration(Arc::new(Generation { cfg, own, outbound })))
    }

    /// Attempts that start from now on use `next`; those in flight finish with the settings
    /// they started with.
    pub fn apply_reload(&self, next: NextGeneration) {
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = next.0;
        // Retry times may have changed: let the scheduler look again.
        self.inner.wake.notify_one();
    }

    /// Plugs in the after-delivery subsystem: VERP return paths, the guard's hold of paused
    /// apps, and the events of each settled attempt (once; later calls are ignored).
    pub fn attach_after_delivery(&self, after: crate::bounce::AfterDelivery) {
        let _ = self.inner.after.set(after);
    }
}

/// Takes newly stored messages into the schedule.
async fn receive(inner: Arc<Inner>, mut arrivals: Arrivals) {
    while let Some(msg) = arrivals.recv().await {
        crate::metrics::message_accepted(msg.envelope.app.as_deref().unwrap_or("-"));
        inner.table().insert(msg, true);
        inner.wake.notify_one();
    }
}

/// How often a paused app's held message looks again whether the app was resumed.
const PAUSED_RECHECK_MS: u64 = 2_000;

/// How long the queue waits without an arrival before it takes a burst to be over.
const BURST_QUIET: Duration = Duration::from_secs(1);

/// How long a shutdown waits, after cutting, for the cut rounds to record their state.
const CUT_RECORDING: Duration = Duration::from_secs(10);

/// Starts each message's attempt when it is due, within the concurrency limit, until the
/// queue drains for shutdown.
async fn schedule(inner: Arc<Inner>) {
    let mut phase = inner.phase.subscribe();
    // Arrivals seen at the last idle moment: when none came since and nothing is in flight,
    // a burst is over and its memory goes back (see `Table::burst_over`).
    let mut arrived_when_idle = u64::MAX;
    loop {
        let permit = tokio::select! {
            permit = inner.rounds.clone().acquire_owned() => permit,
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        };
        let Ok(permit) = permit else {
            return;
        };
        if *inner.phase.borrow() != Phase::Running {
            return;
        }
        let now = now_ms();
        let next = {
            let mut table = inner.table();
            match table.first_due() {
                // Cluster node cut off from the database: attempts wait until it answers.
                Some((due, _)) if due <= now && !inner.may_start_attempts() => Err(Some(1000)),
                Some((due, id)) if due <= now => {
                    table.schedule(&id, None);
                    table.set_in_flight(&id, true);
                    Ok(id)
                }
                other => Err(other.map(|(due, _)| due - now)),
            }
        };
        match next {
            Ok(id) => {
                let inner = inner.clone();
                tokio::spawn(async move {
                    run_round(&inner, &id).await;
                    drop(permit);
                });
            }
            Err(wait) => {
                drop(permit);
                let mut wait = Duration::from_millis(wait.unwrap_or(3_600_000));
                let burst_over = {
                    let mut table = inner.table();
                    let over = table.burst_pending()
                        && table.arrived() == arrived_when_idle
                        && table.in_flight() == 0;
                    if over {
                        let started = Instant::now();
                        Some((table.burst_over(), started))
                    } else {
                        if table.burst_pending() {
                            arrived_when_idle = table.arrived();
                            wait = wait.min(BURST_QUIET);
                        }
                        None
                    }
                };
                if let Some((arrivals, started)) = burst_over {
                    super::give_memory_back();
                    tracing::info!(
                        arrivals,
                        took_ms = started.elapsed().as_millis() as u64,
                        "queue: a burst of arrivals is settled; memory given back"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = inner.wake.notified() => {}
                    _ = phase.wait_for(|p| *p != Phase::Running) => return,
                }
            }
        }
    }
}

/// One attempt for every pending recipient of a message, grouped by domain.
async fn run_round(inner: &Arc<Inner>, id: &str) {
    let loaded = match copy_for_attempt(inner, id).await {
        Ok(None) => return,
        Ok(Some(msg)) => inner.spool.read_message(id).await.map(|d| (msg, d)),
        Err(e) => Err(e),
    };
    let (msg, data) = match loaded {
        Ok((msg, d)) => (msg, Arc::new(d)),
        Err(e) => {
            // A cluster's database comes back within seconds, or the lease keeper pauses
            // attempts meanwhile: try again soon rather than in a minute.
            let retry_ms = if inner.spool.leases().is_some() {
                5_000
            } else {
                60_000
            };
            tracing::error!(queue_id = %id, error = %e, retry_in_ms = retry_ms, "cannot read the queued message; retrying");
            let mut table = inner.table();
            table.set_in_flight(id, false);
            table.schedule(id, Some(now_ms() + retry_ms));
            table.settle(id);
            return;
        }
    };
    let after = inner.after.get();
    if let Some((app, why)) = after.and_then(|a| {
        let app = msg.envelope.app.as_deref()?;
        Some((app, a.guard.paused(app)?))
    }) {
        // The app is paused by its guard: its mail waits, other apps' flows.
        tracing::debug!(queue_id = %id, app, reason = %why, "held: the app is paused");
        let mut table = inner.table();
        table.set_in_flight(id, false);
        table.schedule(id, Some(now_ms() + PAUSED_RECHECK_MS));
        table.settle(id);
        return;
    }
    let generation = inner.current();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in msg.state.recipients.iter().enumerate() {
        if r.status != RecipientStatus::Pending {
            continue;
        }
        let domain = if generation.outbound.uses_relay() {
            "relay".to_string()
        } else {
            r.address
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default()
        };
        groups.entry(domain).or_default().push(i);
    }
    let attempted: Vec<usize> = groups.values().flatten().copied().collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (domain, idxs) in groups {
        let recipients: Vec<String> = idxs
            .iter()
            .map(|&i| msg.state.recipients[i].address.clone())
            .collect();
        let mail_from = after
            .and_then(|a| {
                let e = &msg.envelope;
                a.return_path(
                    e.app.as_deref(),
                    e.return_path_domain.as_deref(),
                    &e.mail_from,
                    id,
                    &recipients,
                    unix_now(),
                )
            })
            .unwrap_or_else(|| msg.envelope.mail_from.clone());
        let job = Job {
            queue_id: id.to_string(),
            mail_from,
            mail_params: msg.envelope.mail_from_params.clone(),
            domain,
            recipients,
            message: data.clone(),
            tls_report: msg.envelope.tls_report,
            tls_request: msg.envelope.tls_request,
        };
        let outbound = generation.outbound.clone();
        tasks.spawn(async move {
            let results = outbound.deliver(&job).await;
            idxs.into_iter().zip(results).collect::<Vec<_>>()
        });
    }
    let mut results = Vec::new();
    let mut phase = inner.phase.subscribe();
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok(r)) => results.extend(r),
                Some(Err(e)) => {
                    tracing::error!(queue_id = %id, error = %e, "delivery task failed")
                }
            },
            _ = phase.wait_for(|p| *p == Phase::Cut) => {
                // Shutdown's grace period is over: abandon what has not answered; the
                // recipients stay due and are tried again when herald starts.
                tasks.abort_all();
                let answered: BTreeSet<usize> = results.iter().map(|(i, _)| *i).collect();
                let cut: Vec<usize> = attempted.into_iter().filter(|i| !answered.contains(i)).collect();
                tracing::warn!(queue_id = %id, recipients = cut.len(),
                    "delivery cut by shutdown; recorded as not attempted");
                results.extend(cut.into_iter().map(|i| {
                    (
                        i,
                        RecipientResult {
                            outcome: Err(Failure::NotAttempted),
                            host: None,
                            tls: None,
                            tls_policy: None,
                        },
                    )
                }));
                break;
            }
        }
    }
    finish_round(inner, id, &data, results).await;
}

/// Counts each tried recipient's outcome by destination domain for `/metrics`.
fn record_outcomes(msg: &SpooledMessage, tried: &[usize], received: u64, now: u64) {
    use crate::metrics::{Outcome, recipient};
    use crate::spool::RecipientStatus;
    for r in tried.iter().filter_map(|&i| msg.state.recipients.get(i)) {
        let domain = r.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        match r.status {
            RecipientStatus::Delivered => {
                recipient(Outcome::Delivered, domain);
                crate::metrics::delivered_after(std::time::Duration::from_secs(
                    now.saturating_sub(received),
                ));
            }
            RecipientStatus::Pending => recipient(Outcome::Deferred, domain),
            RecipientStatus::Failed => recipient(Outcome::Bounced, domain),
        }
    }
}

/// Records the attempt's results: bounce first, then the new state (or removal).
async fn finish_round(
    inner: &Arc<Inner>,
    id: &str,
    data: &[u8],
    results: Vec<(usize, RecipientResult)>,
) {
    let Some(io) = inner.table().serial(id) else {
        return;
    };
    let _serial = io.lock().await;
    let now = unix_now();
    let generation = inner.current();
    let cfg = &generation.cfg;
    let (msg, settled, for_events) = {
        let mut table = inner.table();
        let Some(entry) = table.get(id) else {
            return;
        };
        if entry.deleted() {
            table.remove(id);
            return;
        }
        // The copy the round started from (an operator's hold meanwhile included); nothing
        // else reads it while this holds the message's serial lock.
        let Some(mut msg) = table.take_kept(id) else {
            tracing::error!(queue_id = %id, "attempt settled without its message in memory");
            table.set_in_flight(id, false);
            table.schedule(id, Some(now_ms() + 60_000));
            return;
        };
        let received = msg.envelope.received_at;
        let rules = Rules::of_config(cfg);
        let tried: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        let for_events = super::emit::tried(&results);
        let settled = transition::settle(&mut msg.state, received, results, now, &rules);
        record_outcomes(&msg, &tried, received, now);
        table.update(&msg);
        (*msg, settled, for_events)
    };
    // The events are built from the copy, after the queue's table is unlocked.
    super::emit::settled(&msg, data, for_events, now);
    for (list, kind) in [
        (&settled.bounce, Kind::Failed),
        (&settled.delay, Kind::Delayed),
    ] {
        match dsn::queue_notice(cfg, &generation.own, &msg, data, list, kind).await {
            Ok(Some(_)) => crate::metrics::dsn_sent(),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot queue the delivery status notification")
            }
        }
    }
    if msg.state.is_finished() {
        if let Err(e) = inner.spool.remove_finished(id).await {
            tracing::error!(queue_id = %id, error = %e, "cannot remove the finished message");
        }
        inner.table().remove(id);
        // Debug: each recipient's outcome was already logged at info (one write less per
        // message on the hot path).
        tracing::debug!(
            "queue {id} finished: every recipient delivered or failed; removed from the spool"
        );
        return;
    }
    let recorded = inner.spool.record_state(id, msg.state.clone()).await;
    if let Err(e) = &recorded {
        tracing::error!(queue_id = %id, error = %e, "cannot record the delivery state");
    }
    let mut table = inner.table();
    if table.contains(id) {
        table.set_in_flight(id, false);
        table.schedule(id, next_due_ms(&msg));
        table.settle(id);
        // Unrecorded, the copy in memory stays the one that counts, as before.
        if recorded.is_err() {
            table.keep(msg);
        }
    }
    drop(table);
    inner.wake.notify_one();
}

/// The message for an attempt of `id`: the copy in memory, or (for one that waited on disk)
/// read from the spool and kept in memory until the attempt is recorded. `None` when it left
/// the queue meanwhile.
async fn copy_for_attempt(
    inner: &Arc<Inner>,
    id: &str,
) -> Result<Option<SpooledMessage>, crate::spool::SpoolError> {
    let Some(io) = inner.table().serial(id) else {
        return Ok(None);
    };
    // An operator's change under way is written first (it may be read just below).
    let _serial = io.lock().await;
    let kept = {
        let mut table = inner.table();
        match table.get(id) {
            None => return Ok(None),
            Some(e) if e.deleted() => {
                // Deleted before its round began: nothing to attempt or record.
                table.remove(id);
                return Ok(None);
            }
            Some(_) => table.kept(id).cloned(),
        }
    };
    if let Some(msg) = kept {
        return Ok(Some(msg));
    }
    let loaded = inner.spool.load(id).await?;
    let mut table = inner.table();
    match table.get(id) {
        Some(e) if !e.deleted() => {
            table.keep(loaded.clone());
            Ok(Some(loaded))
        }
        Some(_) => {
            table.remove(id);
            Ok(None)
        }
        None => Ok(None),
    }
}
