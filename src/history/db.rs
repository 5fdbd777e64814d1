//! The embedded history database: one SQLite file (WAL) holding every event, indexed for
//! search, and the webhook outbox (events waiting for their app's endpoint, and the batches
//! being POSTed). Both connections are opened the way every herald SQLite file is
//! (`store::open_connection`, the directory flushed when the file is new): the writer thread
//! has its own ([`open`]); search, the senders and pruning share one on a thread of its own
//! ([`HistoryDb`], a `store::SqliteThread`).
//!
//! `synchronous=NORMAL` in WAL mode: a committed batch survives herald being killed (kill -9);
//! a power loss may lose the last batches. The spool, not the history, is where mail is made
//! durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use super::search::Query;
use crate::events::{BounceClass, Event, EventKind};
use crate::store::SqliteThread;

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

/// Opens (creating if needed) the history database at `path`, the way every herald SQLite
/// file is opened (`store::open_connection`: the directories and the new file's name flushed, WAL),
/// then relaxed to `synchronous=NORMAL` (see above).
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let mut conn = crate::store::open_connection(path)
        .with_context(|| format!("cannot open the history database {}", path.display()))?;
    setup(&mut conn).with_context(|| format!("cannot create the tables in {}", path.display()))?;
    Ok(conn)
}

/// What every connection to the history does first: `synchronous=NORMAL`, the tables.
fn setup(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)
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

/// Where the writer's events go besides the history: which apps have a webhook, how many
/// events each may have waiting, and how many go in one POST.
pub struct OutboxRules<'a> {
    /// Whether the app has a webhook.
    pub webhook_apps: &'a dyn Fn(&str) -> bool,
    /// How many events the app has waiting (the writer keeps the count, never a `count(*)`).
    pub backlog_of: &'a dyn Fn(&str) -> u64,
    /// `[webhooks] max_backlog`.
    pub max_backlog: usize,
    /// `[webhooks] batch_size`: most events in one POST.
    pub batch_size: usize,
    /// Unix seconds now (the batches' creation time).
    pub now: u64,
}

/// One app's events of a write, as the webhook bodies they go out in.
struct AppOutbox {
    app: String,
    /// Events it may still queue (`max_backlog` less its backlog).
    room: u64,
    /// Events queued now, and events refused because the outbox was full.
    queued: u64,
    overflow: u64,
    /// The body being filled, and how many events it holds.
    body: Vec<u8>,
    in_body: usize,
}

/// Inserts `events` in one transaction. The events of an app with a webhook also go, in the
/// same transaction, into ready-made webhook batches (one row per app and POST, its body
/// written here once) while the app has fewer than `max_backlog` events waiting. Returns,
/// per app, how many events were queued and how many overflowed.
pub fn insert(
    conn: &mut Connection,
    events: &[Arc<Event>],
    rules: &OutboxRules<'_>,
) -> rusqlite::Result<Vec<(String, u64, u64)>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut apps: Vec<AppOutbox> = Vec::new();
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (time, kind, node, app, queue_id, message_id, sender, recipient,
             remote, tls, tls_policy, reply, attempt, class)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let mut batch = tx.prepare_cached(
            "INSERT INTO webhook_batches (webhook_id, app, body, events, created, next_attempt)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
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
            let Some(app) = e.app.as_deref().filter(|a| (rules.webhook_apps)(a)) else {
                continue;
            };
            let i = match apps.iter().position(|o| o.app == app) {
                Some(i) => i,
                None => {
                    apps.push(AppOutbox {
                        app: app.to_string(),
                        room: (rules.max_backlog as u64).saturating_sub((rules.backlog_of)(app)),
                        queued: 0,
                        overflow: 0,
                        body: Vec::new(),
                        in_body: 0,
                    });
                    apps.len() - 1
                }
            };
            let o = &mut apps[i];
            if o.room == 0 {
                o.overflow += 1;
                continue;
            }
            if o.in_body == 0 {
                o.body = super::payload::begin(rules.now);
            } else {
                o.body.push(b',');
            }
            // Serialized by reference straight into the body: no copy of the event (the JSON
            // is what `StoredEvent` gives).
            let stored = StoredRef {
                id: tx.last_insert_rowid(),
                event: e,
            };
            if serde_json::to_writer(&mut o.body, &stored).is_err() {
                o.body.extend_from_slice(b"null");
            }
            o.in_body += 1;
            o.room -= 1;
            o.queued += 1;
            if o.in_body >= rules.batch_size.max(1) {
                seal(&mut batch, o, rules.now)?;
            }
        }
        for o in apps.iter_mut().filter(|o| o.in_body > 0) {
            seal(&mut batch, o, rules.now)?;
        }
    }
    tx.commit()?;
    Ok(apps
        .into_iter()
        .map(|o| (o.app, o.queued, o.overflow))
        .collect())
}

/// Ends `o`'s body and stores it as a new batch, due now.
fn seal(
    batch: &mut rusqlite::CachedStatement<'_>,
    o: &mut AppOutbox,
    now: u64,
) -> rusqlite::Result<()> {
    super::payload::finish(&mut o.body);
    batch.execute(params![
        super::payload::new_webhook_id(),
        o.app,
        o.body,
        o.in_body as i64,
        now as i64,
        now.saturating_mul(1000) as i64
    ])?;
    o.in_body = 0;
    Ok(())
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
    thread: SqliteThread,
}

impl HistoryDb {
    /// Opens the database at `path` on a thread of its own (`sqlite-history`). Not at the
    /// writer's lower priority: measured, delivery with webhooks on kept less of its
    /// throughput that way (this thread takes the write lock for a sender's next batch;
    /// preempted while holding it, it likely holds the writer up).
    pub async fn open(path: &Path) -> anyhow::Result<HistoryDb> {
        let thread = SqliteThread::open(path, "history", setup)
            .await
            .with_context(|| format!("cannot open the history database {}", path.display()))?;
        Ok(HistoryDb {
            path: path.to_path_buf(),
            thread,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection, on the database's thread.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.thread
            .call(move |c| Ok(f(c)?))
            .await
            .with_context(|| format!("history database {}", self.path.display()))
    }

    /// Runs `f` on the connection on the database's thread, blocking this one until it is
    /// done (a reload's first phase, which is synchronous).
    pub fn call_now<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.thread
            .call_blocking(move |c| Ok(f(c)?))
            .with_context(|| format!("history database {}", self.path.display()))
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

/// Removes the batch `done` (acknowledged, or given up), if any, and returns the oldest batch
/// of `app` (due or not), in one transaction: one trip to the database per POST. The writer
/// makes the batches; if there is none, one is made from up to `size` rows of the per-event
/// `outbox` table that herald versions before 2026-12-07 filled (moved out of it in the same
/// transaction), or `None` when that is empty too.
pub fn next_batch(
    conn: &mut Connection,
    app: &str,
    done: Option<i64>,
    size: usize,
    now: u64,
) -> rusqlite::Result<Option<Batch>> {
    // IMMEDIATE: this reads then writes; a deferred transaction would fail with
    // SQLITE_BUSY(_SNAPSHOT) instead of waiting when the writer thread committed in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if let Some(id) = done {
        tx.execute("DELETE FROM webhook_batches WHERE id = ?1", params![id])?;
    }
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
        tx.commit()?;
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
        tx.commit()?;
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

/// Records a failed attempt and when to try again (unix milliseconds).
pub fn retry_batch(conn: &Connection, id: i64, next_ms: u64, error: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE webhook_batches SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3
         WHERE id = ?1",
        params![id, next_ms as i64, error],
    )?;
    Ok(())
}

/// Removes batch `id` (moved to the cluster's outbox).
pub fn remove_batch(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM webhook_batches WHERE id = ?1", params![id])?;
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
        let per_app = insert(&mut conn, &events, &rules(&|a| a == "shop", 2, 10)).unwrap();
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

        let b = next_batch(&mut conn, "shop", None, 10, 100)
            .unwrap()
            .unwrap();
        assert_eq!(b.events, 2);
        assert_eq!(backlog(&conn, "shop").unwrap(), 2);
        let again = next_batch(&mut conn, "shop", None, 10, 200)
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.id, &again.webhook_id, &again.body),
            (b.id, &b.webhook_id, &b.body)
        );
        retry_batch(&conn, b.id, 5_000, "down").unwrap();
        assert_eq!(
            next_batch(&mut conn, "shop", None, 10, 300)
                .unwrap()
                .unwrap()
                .attempts,
            1
        );
        assert!(
            next_batch(&mut conn, "shop", Some(b.id), 10, 400)
                .unwrap()
                .is_none()
        );
        assert_eq!(backlog(&conn, "shop").unwrap(), 0);
        assert_eq!(prune(&conn, 12).unwrap(), 2);
    }

    fn rules<'a>(
        apps: &'a dyn Fn(&str) -> bool,
        max_backlog: usize,
        batch_size: usize,
    ) -> OutboxRules<'a> {
        OutboxRules {
            webhook_apps: apps,
            backlog_of: &|_| 0,
            max_backlog,
            batch_size,
            now: 100,
        }
    }

    #[test]
    fn the_writer_makes_batches_of_batch_size_in_order_and_old_outbox_rows_still_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("h.sqlite")).unwrap();
        // A row of the per-event outbox an older herald left behind.
        conn.execute(
            "INSERT INTO outbox (app, event) VALUES ('shop', '{\"id\":0}')",
            [],
        )
        .unwrap();
        let events: Vec<_> = (1..=5)
            .map(|t| {
                ev(
                    EventKind::Delivered,
                    t,
                    &format!("r{t}@example.net"),
                    "shop",
                )
            })
            .collect();
        let per_app = insert(&mut conn, &events, &rules(&|_| true, 100, 2)).unwrap();
        assert_eq!(per_app, vec![("shop".to_string(), 5, 0)]);
        assert_eq!(backlog(&conn, "shop").unwrap(), 6);
        let mut times = Vec::new();
        let mut done = None;
        while let Some(b) = next_batch(&mut conn, "shop", done, 2, 100).unwrap() {
            let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
            let events = v["data"]["events"].as_array().unwrap();
            assert_eq!(events.len() as u64, b.events);
            times.push(
                events
                    .iter()
                    .map(|e| e["time"].as_u64())
                    .collect::<Vec<_>>(),
            );
            done = Some(b.id);
        }
        assert_eq!(
            times,
            vec![
                vec![Some(1), Some(2)],
                vec![Some(3), Some(4)],
                vec![Some(5)],
                vec![None]
            ]
        );
        assert_eq!(backlog(&conn, "shop").unwrap(), 0);
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
