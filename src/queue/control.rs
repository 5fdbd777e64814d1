//! Operator actions on the running queue (`herald queue` through the admin endpoint): list,
//! show, retry now, hold, release, delete with or without a bounce.

use std::sync::atomic::Ordering;

use super::dsn::{self, Kind};
use super::manager::{QueueManager, blocking, next_due_ms};
use super::transition::operator_failures;
use super::view::{ActionResult, MessageView};
use crate::clock::{now_ms, unix_now};

fn done(message: impl Into<String>) -> ActionResult {
    ActionResult {
        ok: true,
        message: message.into(),
    }
}

fn refused(message: impl Into<String>) -> ActionResult {
    ActionResult {
        ok: false,
        message: message.into(),
    }
}

impl QueueManager {
    /// Every queued message, oldest first.
    pub fn list(&self) -> Vec<MessageView> {
        let table = self.inner.table();
        let mut out: Vec<MessageView> = table
            .entries
            .values()
            .filter(|e| !e.deleted)
            .map(|e| MessageView::of(&e.msg, e.in_flight))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// One message.
    pub fn show(&self, id: &str) -> Option<MessageView> {
        let table = self.inner.table();
        table
            .entries
            .get(id)
            .filter(|e| !e.deleted)
            .map(|e| MessageView::of(&e.msg, e.in_flight))
    }

    /// Attempts `id` now (every pending recipient).
    pub fn retry(&self, id: &str) -> ActionResult {
        let mut table = self.inner.table();
        let Some(entry) = table.entries.get_mut(id).filter(|e| !e.deleted) else {
            return refused(format!("no message {id} in the queue"));
        };
        if entry.msg.state.held {
            return refused(format!("{id} is held; release it first"));
        }
        if entry.in_flight {
            return done(format!("{id} is being attempted right now"));
        }
        entry.msg.state.retry_now(unix_now());
        table.schedule(id, Some(now_ms()));
        drop(table);
        self.inner.wake.notify_one();
        done(format!("{id} scheduled for an attempt now"))
    }

    /// Attempts every message that is not held, now.
    pub fn retry_all(&self) -> ActionResult {
        let ids: Vec<String> = self.list().into_iter().map(|m| m.id).collect();
        let scheduled = ids.iter().filter(|id| self.retry(id).ok).count();
        done(format!(
            "{scheduled} message(s) scheduled for an attempt now"
        ))
    }

    /// Holds (`true`) or releases (`false`) a message, recorded in its state.
    pub async fn set_held(&self, id: &str, held: bool) -> ActionResult {
        let Some(io) = self.inner.table().entries.get(id).map(|e| e.io.clone()) else {
            return refused(format!("no message {id} in the queue"));
        };
        let _serial = io.lock().await;
        let state = {
            let mut table = self.inner.table();
            let Some(entry) = table.entries.get_mut(id).filter(|e| !e.deleted) else {
                return refused(format!("no message {id} in the queue"));
            };
            if held {
                entry.msg.state.hold();
            } else {
                entry.msg.state.release();
            }
            let due = if entry.in_flight {
                None
            } else {
                next_due_ms(&entry.msg)
            };
            let state = entry.msg.state.clone();
            table.schedule(id, due);
            state
        };
        let spool = self.inner.spool.clone();
        let owned = id.to_string();
        if let Err(e) = blocking(move || spool.write_state(&owned, &state)).await {
            return refused(format!("cannot record the change for {id}: {e}"));
        }
        self.inner.wake.notify_one();
        if held {
            done(format!("{id} held: no attempts until released"))
        } else {
            done(format!("{id} released"))
        }
    }

    /// Deletes a message; with `bounce`, its sender is told which recipients were not reached.
    pub async fn delete(&self, id: &str, bounce: bool) -> ActionResult {
        let Some(io) = self.inner.table().entries.get(id).map(|e| e.io.clone()) else {
            return refused(format!("no message {id} in the queue"));
        };
        let _serial = io.lock().await;
        let msg = {
            let mut table = self.inner.table();
            let Some(entry) = table.entries.get_mut(id).filter(|e| !e.deleted) else {
                return refused(format!("no message {id} in the queue"));
            };
            entry.deleted = true;
            let msg = entry.msg.clone();
            let in_flight = entry.in_flight;
            table.schedule(id, None);
            if !in_flight {
                table.entries.remove(id);
            }
            msg
        };
        let inner = &self.inner;
        let mut note = String::new();
        if bounce {
            let spool = inner.spool.clone();
            let owned = id.to_string();
            match blocking(move || spool.read_message(&owned)).await {
                Ok(data) => {
                    let failures = operator_failures(&msg.state);
                    let generation = inner.current();
                    match dsn::queue_notice(
                        &generation.cfg,
                        &generation.own,
                        &msg,
                        &data,
                        &failures,
                        Kind::Failed,
                    )
                    .await
                    {
                        Ok(Some(dsn_id)) => {
                            inner.counters.dsn_sent.fetch_add(1, Ordering::Relaxed);
                            note =
                                format!("; bounce {dsn_id} queued to <{}>", msg.envelope.mail_from)
                        }
                        Ok(None) => note = "; no bounce (null sender)".into(),
                        Err(e) => note = format!("; the bounce could not be queued: {e}"),
                    }
                }
                Err(e) => note = format!("; the bounce could not be built: {e}"),
            }
        }
        let spool = inner.spool.clone();
        let owned = id.to_string();
        if let Err(e) = blocking(move || spool.remove(&owned)).await {
            return refused(format!("cannot remove {id}: {e}"));
        }
        tracing::info!(queue_id = %id, bounce, "message deleted by the operator");
        done(format!("{id} deleted{note}"))
    }
}
