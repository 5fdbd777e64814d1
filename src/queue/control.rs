//! Operator actions on the running queue (`herald queue` through the admin endpoint): list,
//! show, retry now, hold, release, delete with or without a bounce.
//!
//! In a cluster (`[cluster]`), the view and every action cover the whole cluster's queue in
//! the database ([`crate::spool::Leases`]); the node holding a changed message applies the
//! change at its next lease renewal (this node's at once).

use super::dsn::{self, Kind};
use super::manager::{Inner, QueueManager, next_due_ms};
use super::transition::operator_failures;
use super::view::{ActionResult, MessageView};
use crate::clock::{now_ms, unix_now};
use crate::spool::SpooledMessage;

/// The outcome of an operator action on the queue; the admin endpoint answers each kind
/// with its own HTTP status, `herald queue` prints the words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Done: what happened.
    Done(String),
    /// The message is not in the queue (any more).
    NotFound {
        /// The queue id asked for.
        id: String,
    },
    /// Not done because of the message's state (e.g. held): why, and what to do.
    Refused(String),
    /// The spool or the cluster's database failed: what could not be done.
    Failed(String),
}

impl Control {
    /// Whether the action was done.
    pub fn ok(&self) -> bool {
        matches!(self, Control::Done(_))
    }

    /// What happened, in words.
    pub fn message(&self) -> String {
        match self {
            Control::Done(m) | Control::Refused(m) | Control::Failed(m) => m.clone(),
            Control::NotFound { id } => format!("no message {id} in the queue"),
        }
    }

    /// The JSON answer of the admin endpoint (`{ok, message}`), as `herald queue` reads it.
    pub fn to_wire(&self) -> ActionResult {
        ActionResult {
            ok: self.ok(),
            message: self.message(),
        }
    }
}

fn done(message: impl Into<String>) -> Control {
    Control::Done(message.into())
}

fn refused(message: impl Into<String>) -> Control {
    Control::Refused(message.into())
}

fn failed(message: impl Into<String>) -> Control {
    Control::Failed(message.into())
}

fn not_found(id: &str) -> Control {
    Control::NotFound { id: id.to_string() }
}

impl QueueManager {
    /// Every queued message, oldest first. A message waiting on disk is read from the spool
    /// for it: for a big queue, [`QueueManager::page`] reads only a page.
    pub async fn list(&self) -> Vec<MessageView> {
        let mut ids = self.inner.table().ids();
        ids.sort_unstable();
        self.views_of(&ids).await
    }

    /// One message.
    pub async fn show(&self, id: &str) -> Option<MessageView> {
        let (kept, in_flight) = {
            let table = self.inner.table();
            let entry = table.get(id).filter(|e| !e.deleted())?;
            let in_flight = entry.in_flight();
            let kept = table.kept(id).map(|m| MessageView::of(m, in_flight));
            (kept, in_flight)
        };
        if kept.is_some() {
            return kept;
        }
        match self.inner.spool.load(id).await {
            Ok(m) => Some(MessageView::of(&m, in_flight)),
            Err(e) => {
                // Removed meanwhile, or unreadable.
                tracing::debug!(queue_id = %id, error = %e, "queued message not shown");
                None
            }
        }
    }

    /// The views of `ids` still queued, in the order given (a few read from the spool at a
    /// time).
    pub(super) async fn views_of(&self, ids: &[String]) -> Vec<MessageView> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(16) {
            let reads = chunk.iter().map(|id| {
                let (queue, id) = (self.clone(), id.clone());
                async move { queue.show(&id).await }
            });
            out.extend(
                futures_util::future::join_all(reads)
                    .await
                    .into_iter()
                    .flatten(),
            );
        }
        out
    }

    /// How many messages are queued and when the oldest was accepted (for `/metrics`),
    /// without reading any.
    pub fn depth(&self) -> (u64, Option<u64>) {
        self.inner.table().depth()
    }

    /// The queue an operator sees (or one message with `Some(id)`): this node's on a single
    /// node, the whole cluster's with `[cluster]`. `Err` when the database cannot be read.
    pub async fn view(&self, id: Option<&str>) -> Result<Vec<MessageView>, Control> {
        if self.inner.spool.leases().is_none() {
            return Ok(match id {
                Some(id) => self.show(id).await.into_iter().collect(),
                None => self.list().await,
            });
        }
        let entries = match self.inner.spool.leases() {
            Some(l) => l.list_all(id).await,
            None => Ok(Vec::new()),
        }
        .map_err(|e| failed(format!("cannot read the cluster's queue: {e}")))?;
        let table = self.inner.table();
        Ok(entries
            .iter()
            .map(|e| {
                let in_flight = table
                    .get(&e.message.id)
                    .is_some_and(|local| local.in_flight());
                MessageView::of_cluster(e, in_flight)
            })
            .collect())
    }

    /// Attempts `id` now (every pending recipient), wherever it is queued.
    pub async fn retry(&self, id: &str) -> Control {
        if self.inner.spool.leases().is_some() {
            return self.cluster_retry(Some(id)).await;
        }
        self.retry_local(id)
    }

    fn retry_local(&self, id: &str) -> Control {
        let mut table = self.inner.table();
        let Some(entry) = table.get(id).filter(|e| !e.deleted()) else {
            return not_found(id);
        };
        if entry.held() {
            return refused(format!("{id} is held; release it first"));
        }
        if entry.in_flight() {
            return done(format!("{id} is being attempted right now"));
        }
        // A copy in memory follows; one on disk is attempted as it stands (an attempt tries
        // every waiting recipient, whatever its next time).
        if let Some(msg) = table.kept_mut(id) {
            msg.state.retry_now(unix_now());
        }
        table.schedule(id, Some(now_ms()));
        drop(table);
        self.inner.wake.notify_one();
        done(format!("{id} scheduled for an attempt now"))
    }

    /// Attempts every message that is not held, now.
    pub async fn retry_all(&self) -> Control {
        if self.inner.spool.leases().is_some() {
            return self.cluster_retry(None).await;
        }
        let ids = self.inner.table().ids();
        let scheduled = ids.iter().filter(|id| self.retry_local(id).ok()).count();
        done(format!(
            "{scheduled} message(s) scheduled for an attempt now"
        ))
    }

    /// Holds (`true`) or releases (`false`) a message, recorded in its state.
    pub async fn set_held(&self, id: &str, held: bool) -> Control {
        if self.inner.spool.leases().is_some() {
            return self.cluster_set_held(id, held).await;
        }
        let Some(io) = self.inner.table().serial(id) else {
            return not_found(id);
        };
        let _serial = io.lock().await;
        let kept = {
            let table = self.inner.table();
            match table.get(id) {
                Some(e) if !e.deleted() => table.kept(id).cloned(),
                _ => return not_found(id),
            }
        };
        let mut msg = match kept {
            Some(m) => m,
            None => match self.inner.spool.load(id).await {
                Ok(m) => m,
                Err(e) => return failed(format!("cannot read {id}: {e}")),
            },
        };
        if held {
            msg.state.hold();
        } else {
            msg.state.release();
        }
        let events = super::emit::operator(&msg, held, crate::clock::unix_now());
        {
            let mut table = self.inner.table();
            let Some(in_flight) = table
                .get(id)
                .filter(|e| !e.deleted())
                .map(|e| e.in_flight())
            else {
                return not_found(id);
            };
            table.update(&msg);
            table.schedule(id, if in_flight { None } else { next_due_ms(&msg) });
        }
        let written = self.inner.spool.write_state(id, &msg.state).await;
        {
            let mut table = self.inner.table();
            table.settle(id);
            if written.is_err() {
                // Unrecorded: the copy in memory is the one that counts, as before.
                table.keep(msg);
            }
        }
        if let Err(e) = written {
            return failed(format!("cannot record the change for {id}: {e}"));
        }
        super::emit::send(events);
        self.inner.wake.notify_one();
        if held {
            done(format!("{id} held: no attempts until released"))
        } else {
            done(format!("{id} released"))
        }
    }

    /// Deletes a message; with `bounce`, its sender is told which recipients were not reached.
    pub async fn delete(&self, id: &str, bounce: bool) -> Control {
        if self.inner.spool.leases().is_some() {
            return self.cluster_delete(id, bounce).await;
        }
        let Some(io) = self.inner.table().serial(id) else {
            return not_found(id);
        };
        let _serial = io.lock().await;
        let kept = {
            let mut table = self.inner.table();
            let Some(entry) = table.get(id).filter(|e| !e.deleted()) else {
                return not_found(id);
            };
            let in_flight = entry.in_flight();
            let kept = table.kept(id).cloned();
            if in_flight {
                table.mark_deleted(id);
            } else {
                table.remove(id);
            }
            kept
        };
        let inner = &self.inner;
        let mut note = String::new();
        if bounce {
            let msg = match kept {
                Some(m) => Ok(m),
                None => inner.spool.load(id).await,
            };
            match (msg, inner.spool.read_message(id).await) {
                (Ok(msg), Ok(data)) => {
                    note = operator_bounce(inner, &msg, &data)
                        .await
                        .unwrap_or_else(|e| format!("; {}", e.message()))
                }
                (Err(e), _) | (_, Err(e)) => note = format!("; the bounce could not be built: {e}"),
            }
        }
        if let Err(e) = inner.spool.remove(id).await {
            return failed(format!("cannot remove {id}: {e}"));
        }
        tracing::info!(queue_id = %id, bounce, "message deleted by the operator");
        done(format!("{id} deleted{note}"))
    }
}

/// The same actions on a cluster's shared queue.
impl QueueManager {
    async fn cluster_retry(&self, id: Option<&str>) -> Control {
        if let Some(id) = id {
            match self.view(Some(id)).await {
                Err(e) => return e,
                Ok(found) if found.is_empty() => {
                    return not_found(id);
                }
                Ok(found) if found.iter().any(|m| m.held) => {
                    return refused(format!("{id} is held; release it first"));
                }
                Ok(_) => {}
            }
        }
        let result = match self.inner.spool.leases() {
            Some(l) => l.retry_now(id).await,
            None => Ok(0),
        };
        self.inner.lease_wake.notify_one();
        match (result, id) {
            (Err(e), _) => failed(format!("cannot record the retry: {e}")),
            (Ok(0), Some(id)) => not_found(id),
            (Ok(_), Some(id)) => done(format!("{id} scheduled for an attempt now")),
            (Ok(n), None) => done(format!("{n} message(s) scheduled for an attempt now")),
        }
    }

    async fn cluster_set_held(&self, id: &str, held: bool) -> Control {
        let result = match self.inner.spool.leases() {
            Some(l) => l.set_held(id, held).await,
            None => Ok(false),
        };
        self.inner.lease_wake.notify_one();
        match result {
            Err(e) => failed(format!("cannot record the change for {id}: {e}")),
            Ok(false) => not_found(id),
            Ok(true) if held => done(format!("{id} held: no attempts until released")),
            Ok(true) => done(format!("{id} released")),
        }
    }

    async fn cluster_delete(&self, id: &str, bounce: bool) -> Control {
        let inner = &self.inner;
        let msg = match self.view(Some(id)).await {
            Err(e) => return e,
            Ok(found) if found.is_empty() => {
                return not_found(id);
            }
            Ok(_) => match inner.spool.load(id).await {
                Ok(m) => m,
                Err(e) => return failed(format!("cannot read {id}: {e}")),
            },
        };
        // The bounce is queued before the message goes: a failure leaves the message in place.
        let mut note = String::new();
        if bounce {
            let data = match inner.spool.read_message(id).await {
                Ok(d) => d,
                Err(e) => return failed(format!("the bounce could not be built: {e}")),
            };
            note = match operator_bounce(inner, &msg, &data).await {
                Ok(note) => note,
                Err(e) => return e,
            };
        }
        match match inner.spool.leases() {
            Some(l) => l.take(id).await,
            None => Ok(None),
        } {
            Err(e) => return failed(format!("cannot remove {id}: {e}")),
            Ok(None) => return not_found(id),
            Ok(Some(_)) => {}
        }
        {
            let mut table = inner.table();
            match table.get(id).map(|e| e.in_flight()) {
                Some(true) => table.mark_deleted(id),
                Some(false) => {
                    table.remove(id);
                }
                None => {}
            }
        }
        inner.lease_wake.notify_one();
        tracing::info!(queue_id = %id, bounce, "message deleted from the cluster's queue by the operator");
        done(format!("{id} deleted{note}"))
    }
}

/// Queues the bounce of a message the operator deletes with `--bounce`: the note for the
/// answer, or why it could not be queued ([`Control::Failed`]).
async fn operator_bounce(
    inner: &Inner,
    msg: &SpooledMessage,
    data: &[u8],
) -> Result<String, Control> {
    let failures = operator_failures(&msg.state);
    let generation = inner.current();
    match dsn::queue_notice(
        &generation.cfg,
        &generation.own,
        msg,
        data,
        &failures,
        Kind::Failed,
    )
    .await
    {
        Ok(Some(dsn_id)) => {
            crate::metrics::dsn_sent();
            Ok(format!(
                "; bounce {dsn_id} queued to <{}>",
                msg.envelope.mail_from
            ))
        }
        Ok(None) => Ok("; no bounce (null sender)".into()),
        Err(e) => Err(failed(format!("the bounce could not be queued: {e}"))),
    }
}
