//! The embedded history database: one SQLite file (WAL) holding every event, indexed for
//! search, and the webhook outbox (events waiting for their app's endpoint, and the batches
//! being POSTed). The writer thread has its own connection ([`open`]); search, the senders
//! and pruning share one behind [`HistoryDb`].
//!
//! `synchronous=NORMAL` in WAL mode: a committed batch survives herald being killed (kill -9);
//! a power loss may lose the last batches. The spool, not the history, is where mail is made
//! durable.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use super::search::Query;
use crate::events::{BounceClass, Event, EventKind};

/// Schema version 1. `COLLATE NOCASE` on addresses: a search for `Bob@Example.com` finds
/// `bob@example.com`. One index per search key, each ending in `time` for the newest-first
/// order.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node TEXT NOT NULL,
    app TEXT,
    queue_id TEXT,
    message_id TEXT,
    sender TEXT NOT NULL COLLATE NOCASE,
    recipient TEXT NOT NULL COLLATE NOCASE,
    remote TEXT,
    tls TEXT,
    tls_policy TEXT,
    reply TEXT,
    attempt INTEGER,
    class TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE INDEX IF NOT EXISTS events_recipient ON events(recipient, time);
CREATE INDEX IF NOT EXISTS events_sender ON events(sender, time);
CREATE INDEX IF NOT EXISTS events_app ON events(app, time);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, time);
CREATE INDEX IF NOT EXISTS events_queue_id ON events(queue_id);
CREATE INDEX IF NOT EXISTS events_message_id ON events(message_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_app ON outbox(app, id);
CREATE TABLE IF NOT EXISTS webhook_batches (
    id INTEGER PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    app TEXT NOT NULL,
    body BLOB NOT NULL,
    events INTEGER NOT NULL,
    created INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhook_batches_app ON webhook_batches(app, id);
"#;

/// Opens (creating if needed) the history database at `path`.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let conn = Connection::open(path)
        .with_context(|| format!("cannot open the history database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)
        .with_context(|| format!("cannot create the tables in {}", path.display()))?;
    Ok(conn)
}

/// A [`StoredEvent`] serialized without copying its event (same JSON).
#[derive(Serialize)]
struct StoredRef<'a> {
    id: i64,
    #[serde(flatten)]
    event: &'a Event,
}

/// One stored event: its row id (stable, for de-duplication by receivers) and the event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoredEvent {
    /// The row id in the history.
    pub id: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Inserts `events` in one transaction; each event of an app in `webhook_apps` also goes to
/// that app's outbox while it holds fewer than `max_backlog` events (`backlog_of` tells how
/// many it holds: the writer keeps the count, never a `count(*)` per batch). Returns, per app,
/// how many events were queued and how many overflowed.
pub fn insert(
    conn: &mut Connection,
    events: &[Arc<Event>],
    webhook_apps: &dyn Fn(&str) -> bool,
    backlog_of: &dyn Fn(&str) -> u64,
    max_backlog: usize,
) -> rusqlite::Result<Vec<(String, u64, u64)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut per_app: Vec<(String, u64, u64)> = Vec::new();
    let mut room: Vec<(String, u64)> = Vec::new();
    let mut json = Vec::with_capacity(512);
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (time, kind, node, app, queue_id, message_id, sender, recipient,
             remote, tls, tls_policy, reply, attempt, class)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut outbox = tx.prepare_cached("INSERT INTO outbox (app, event) VALUES (?1, ?2)")?;
        for e in events {
            ins.execute(params![
                e.time as i64,
                e.kind.as_str(),
                e.node,
                e.app,
                e.queue_id,
                e.message_id,
                e.sender,
                e.recipient,
                e.remote,
                e.tls,
                e.tls_policy,
                e.reply,
                e.attempt,
                e.class.map(|c| c.as_str()),
            ])?;
            let Some(app) = e.app.as_deref().filter(|a| webhook_apps(a)) else {
                continue;
            };
            let i = match room.iter().position(|(a, _)| a == app) {
                Some(i) => i,
                None => {
                    let left = (max_backlog as u64).saturating_sub(backlog_of(app));
                    room.push((app.to_string(), left));
                    per_app.push((app.to_string(), 0, 0));
                    room.len() - 1
                }
            };
            if room[i].1 == 0 {
                per_app[i].2 += 1;
                continue;
            }
            // Serialized by reference into one reused buffer: no copy of the event and no
            // allocation per event (the JSON is what `StoredEvent` gives).
            json.clear();
            let stored = StoredRef {
                id: tx.last_insert_rowid(),
                event: e,
            };
            if serde_json::to_writer(&mut json, &stored).is_err() {
                json.clear();
            }
            outbox.execute(params![app, std::str::from_utf8(&json).unwrap_or_default()])?;
            room[i].1 -= 1;
            per_app[i].1 += 1;
        }
    }
    tx.commit()?;
    Ok(per_app)
}

/// Events of `app` waiting: in the outbox and in unacknowledged batches.
fn backlog_in(conn: &Connection, app: &str) -> rusqlite::Result<u64> {
    let outbox: i64 = conn.query_row(
        "SELECT count(*) FROM outbox WHERE app = ?1",
        params![app],
        |r| r.get(0),
    )?;
    let batched: i64 = conn.query_row(
        "SELECT coalesce(sum(events), 0) FROM webhook_batches WHERE app = ?1",
        params![app],
        |r| r.get(0),
    )?;
    Ok((outbox + batched).max(0) as u64)
}

/// A batch of events for one app, as it is POSTed (the same body and id on every retry).
#[derive(Debug, Clone)]
pub struct Batch {
    /// The row id.
    pub id: i64,
    /// The `webhook-id` header: the same on every retry, so receivers can de-duplicate.
    pub webhook_id: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// Events in it.
    pub events: u64,
    /// Unix seconds when it was made (it is dropped `give_up_after` later).
    pub created: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When its next attempt is due, in unix milliseconds.
    pub next_attempt: u64,
}

/// The history database shared by search, the webhook senders and pruning.
pub struct HistoryDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl HistoryDb {
    /// Opens the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<HistoryDb> {
        Ok(HistoryDb {
            path: path.to_path_buf(),
            conn: Mutex::new(open(path)?),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, off the async threads.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = me.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .context("history database task failed")?
        .with_context(|| format!("history database {}", self.path.display()))
    }

    /// Runs `f` on the connection on this thread (commands).
    pub fn call_now<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> anyhow::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn).with_context(|| format!("history database {}", self.path.display()))
    }
}

/// Events matching `q`, newest first.
pub fn search(conn: &Connection, q: &Query) -> rusqlite::Result<Vec<StoredEvent>> {
    let (sql, values) = q.sql();
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(values.iter()), row_event)?;
    rows.collect()
}

/// One row of `SELECT id, <columns>`.
fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let kind: String = r.get(2)?;
    let class: Option<String> = r.get(14)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        event: Event {
            time: r.get::<_, i64>(1)?.max(0) as u64,
            kind: EventKind::parse(&kind).unwrap_or(EventKind::Refused),
            node: r.get(3)?,
            app: r.get(4)?,
            queue_id: r.get(5)?,
            message_id: r.get(6)?,
            sender: r.get(7)?,
            recipient: r.get(8)?,
            remote: r.get(9)?,
            tls: r.get(10)?,
            tls_policy: r.get(11)?,
            reply: r.get(12)?,
            attempt: r.get(13)?,
            class: class.as_deref().and_then(parse_class),
        },
    })
}

/// The class named `s`.
pub fn parse_class(s: &str) -> Option<BounceClass> {
    [
        BounceClass::Hard,
        BounceClass::Soft,
        BounceClass::Block,
        BounceClass::Throttle,
        BounceClass::Other,
    ]
    .into_iter()
    .find(|c| c.as_str() == s)
}

/// Deletes events older than `before` (unix seconds), a chunk at a time so writers are never
/// held up long; returns how many went.
pub fn prune(conn: &Connection, before: u64) -> rusqlite::Result<u64> {
    let mut total = 0;
    loop {
        let n = conn.execute(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ?1 LIMIT 5000)",
            params![before as i64],
        )?;
        total += n as u64;
        if n < 5000 {
            return Ok(total);
        }
    }
}

/// The oldest batch of `app` (due or not); if there is none, a new one made from up to
/// `size` outbox events (moved out of the outbox in the same transaction), or `None` when
/// the outbox is empty too.
pub fn next_batch(
    conn: &mut Connection,
    app: &str,
    size: usize,
    now: u64,
) -> rusqlite::Result<Option<Batch>> {
    // IMMEDIATE: this reads then writes; a deferred transaction would fail with
    // SQLITE_BUSY(_SNAPSHOT) instead of waiting when the writer thread committed in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let existing = tx
        .query_row(
            "SELECT id, webhook_id, body, events, created, attempts, next_attempt
             FROM webhook_batches WHERE app = ?1 ORDER BY id LIMIT 1",
            params![app],
            |r| {
                Ok(Batch {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    body: r.get(2)?,
                    events: r.get::<_, i64>(3)?.max(0) as u64,
                    created: r.get::<_, i64>(4)?.max(0) as u64,
                    attempts: r.get::<_, i64>(5)?.max(0) as u32,
                    next_attempt: r.get::<_, i64>(6)?.max(0) as u64,
                })
            },
        )
        .optional()?;
    if existing.is_some() {
        return Ok(existing);
    }
    let mut ids = Vec::new();
    let mut events = Vec::new();
    {
        let mut stmt =
            tx.prepare_cached("SELECT id, event FROM outbox WHERE app = ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![app, size as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (id, json) = row?;
            ids.push(id);
            events.push(json);
        }
    }
    let Some(&last) = ids.last() else {
        return Ok(None);
    };
    let body = super::payload::body(&events, now);
    let webhook_id = super::payload::new_webhook_id();
    tx.execute(
        "DELETE FROM outbox WHERE app = ?1 AND id <= ?2",
        params![app, last],
    )?;
    tx.execute(
        "INSERT INTO webhook_batches (webhook_id, app, body, events, created, next_attempt)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            webhook_id,
            app,
            body,
            ids.len() as i64,
            now as i64,
            now.saturating_mul(1000) as i64
        ],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Some(Batch {
        id,
        webhook_id,
        body,
        events: ids.len() as u64,
        created: now,
        attempts: 0,
        next_attempt: now.saturating_mul(1000),
    }))
}

/// Removes a batch (acknowledged, or given up).
pub fn remove_batch(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM webhook_batches WHERE id = ?1", params![id])?;
    Ok(())
}

/// Records a failed attempt and when to try again (unix milliseconds).
pub fn retry_batch(conn: &Connection, id: i64, next_ms: u64, error: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE webhook_batches SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3
         WHERE id = ?1",
        params![id, next_ms as i64, error],
    )?;
    Ok(())
}

/// Events of `app` waiting (outbox and batches), for the backlog gauge.
pub fn backlog(conn: &Connection, app: &str) -> rusqlite::Result<u64> {
    backlog_in(conn, app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, t: u64, rcpt: &str, app: &str) -> Arc<Event> {
        let mut e = Event::new(kind, t, rcpt);
        e.app = Some(app.into());
        e.queue_id = Some(format!("q{t}"));
        Arc::new(e)
    }

    #[test]
    fn events_are_searchable_and_the_outbox_is_bounded_batched_and_drained() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("h.sqlite")).unwrap();
        let events = vec![
            ev(EventKind::Accepted, 10, "Bob@Example.net", "shop"),
            ev(EventKind::Delivered, 11, "bob@example.net", "shop"),
            ev(EventKind::Bounced, 12, "eve@example.net", "shop"),
            ev(EventKind::Delivered, 13, "ann@example.net", "other"),
        ];
        let per_app = insert(&mut conn, &events, &|a| a == "shop", &|_| 0, 2).unwrap();
        assert_eq!(per_app, vec![("shop".to_string(), 2, 1)]);

        let q = Query {
            recipient: Some("BOB@example.net".into()),
            ..Query::default()
        };
        let found = search(&conn, &q).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].event.kind, EventKind::Delivered, "newest first");
        let q = Query {
            status: Some("bounced".into()),
            since: Some(12),
            ..Query::default()
        };
        assert_eq!(
            search(&conn, &q).unwrap()[0].event.recipient,
            "eve@example.net"
        );

        let b = next_batch(&mut conn, "shop", 10, 100).unwrap().unwrap();
        assert_eq!(b.events, 2);
        assert_eq!(backlog(&conn, "shop").unwrap(), 2);
        let again = next_batch(&mut conn, "shop", 10, 200).unwrap().unwrap();
        assert_eq!(
            (again.id, &again.webhook_id, &again.body),
            (b.id, &b.webhook_id, &b.body)
        );
        retry_batch(&conn, b.id, 5_000, "down").unwrap();
        assert_eq!(
            next_batch(&mut conn, "shop", 10, 300)
                .unwrap()
                .unwrap()
                .attempts,
            1
        );
        remove_batch(&conn, b.id).unwrap();
        assert!(next_batch(&mut conn, "shop", 10, 400).unwrap().is_none());
        assert_eq!(backlog(&conn, "shop").unwrap(), 0);
        assert_eq!(prune(&conn, 12).unwrap(), 2);
    }

    #[test]
    fn the_outbox_json_is_the_stored_events_json() {
        let e = ev(EventKind::Delivered, 11, "bob@example.net", "shop");
        let by_ref = serde_json::to_string(&StoredRef { id: 7, event: &e }).unwrap();
        let owned = serde_json::to_string(&StoredEvent {
            id: 7,
            event: (*e).clone(),
        })
        .unwrap();
        assert_eq!(by_ref, owned);
    }
}
