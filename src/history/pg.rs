//! The history in the cluster's PostgreSQL (`[cluster]`): every node copies the events it
//! records into one shared table, so `herald log search` and `/messages` on any node see the
//! whole cluster. The table is created on first use (`CREATE … IF NOT EXISTS`); copies are
//! one multi-row `INSERT … SELECT FROM UNNEST` per batch, made by a task of their own so the
//! writer thread never waits on the network. Each node keeps its SQLite history as well (where
//! its writer makes the webhook batches, which the senders then move to the cluster's outbox,
//! `webhook::outbox`).

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::db::StoredEvent;
use super::search::Query;
use crate::cluster::{Db, DbError};
use crate::events::{Event, EventKind};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS herald_events (
    id bigserial PRIMARY KEY,
    time bigint NOT NULL,
    kind text NOT NULL,
    node text NOT NULL,
    app text,
    queue_id text,
    message_id text,
    sender text NOT NULL,
    recipient text NOT NULL,
    remote text,
    tls text,
    tls_policy text,
    reply text,
    attempt integer,
    class text
);
CREATE INDEX IF NOT EXISTS herald_events_time ON herald_events (time);
CREATE INDEX IF NOT EXISTS herald_events_recipient ON herald_events (lower(recipient), time);
CREATE INDEX IF NOT EXISTS herald_events_sender ON herald_events (lower(sender), time);
CREATE INDEX IF NOT EXISTS herald_events_app ON herald_events (app, time);
CREATE INDEX IF NOT EXISTS herald_events_kind ON herald_events (kind, time);
CREATE INDEX IF NOT EXISTS herald_events_queue_id ON herald_events (queue_id);
CREATE INDEX IF NOT EXISTS herald_events_message_id ON herald_events (message_id);
";

/// The shared history table.
#[derive(Clone)]
pub struct PgHistory {
    db: Db,
}

impl PgHistory {
    /// The table in `db`, created if missing.
    pub async fn open(db: Db) -> Result<PgHistory, DbError> {
        let client = db.client().await?;
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(DbError::doing("creating the history table"))?;
        Ok(PgHistory { db })
    }

    /// The cluster's database (the webhook senders keep the cluster's outbox there).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// Copies `events` in one statement.
    pub async fn insert(&self, events: &[Arc<Event>]) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let col = |f: &dyn Fn(&Event) -> Option<String>| -> Vec<Option<String>> {
            events.iter().map(|e| f(e)).collect()
        };
        let time: Vec<i64> = events.iter().map(|e| e.time as i64).collect();
        let kind = col(&|e| Some(e.kind.as_str().into()));
        let node = col(&|e| Some(e.node.clone()));
        let app = col(&|e| e.app.clone());
        let queue_id = col(&|e| e.queue_id.clone());
        let message_id = col(&|e| e.message_id.clone());
        let sender = col(&|e| Some(e.sender.clone()));
        let recipient = col(&|e| Some(e.recipient.clone()));
        let remote = col(&|e| e.remote.clone());
        let tls = col(&|e| e.tls.clone());
        let tls_policy = col(&|e| e.tls_policy.clone());
        let reply = col(&|e| e.reply.clone());
        let attempt: Vec<Option<i32>> =
            events.iter().map(|e| e.attempt.map(|a| a as i32)).collect();
        let class = col(&|e| e.class.map(|c| c.as_str().into()));
        client
            .execute(
                "INSERT INTO herald_events (time, kind, node, app, queue_id, message_id, sender,
                 recipient, remote, tls, tls_policy, reply, attempt, class)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[],
                 $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                 $11::text[], $12::text[], $13::integer[], $14::text[])",
                &[
                    &time,
                    &kind,
                    &node,
                    &app,
                    &queue_id,
                    &message_id,
                    &sender,
                    &recipient,
                    &remote,
                    &tls,
                    &tls_policy,
                    &reply,
                    &attempt,
                    &class,
                ],
            )
            .await
            .map_err(DbError::doing("copying events to the history table"))?;
        Ok(())
    }

    /// Events matching `q`, newest first.
    pub async fn search(&self, q: &Query) -> Result<Vec<StoredEvent>, DbError> {
        let (sql, values) = q.pg_sql();
        let params: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| match v {
                super::search::PgValue::Text(s) => s as &(dyn ToSql + Sync),
                super::search::PgValue::Int(i) => i as &(dyn ToSql + Sync),
            })
            .collect();
        let client = self.db.client().await?;
        let rows = client
            .query(&sql, &params)
            .await
            .map_err(DbError::doing("searching the history"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.get(2);
            let class: Option<String> = r.get(14);
            out.push(StoredEvent {
                id: r.get(0),
                event: Event {
                    time: r.get::<_, i64>(1).max(0) as u64,
                    kind: EventKind::parse(&kind).unwrap_or(EventKind::Refused),
                    node: r.get(3),
                    app: r.get(4),
                    queue_id: r.get(5),
                    message_id: r.get(6),
                    sender: r.get(7),
                    recipient: r.get(8),
                    remote: r.get(9),
                    tls: r.get(10),
                    tls_policy: r.get(11),
                    reply: r.get(12),
                    attempt: r.get::<_, Option<i32>>(13).map(|a| a.max(0) as u32),
                    class: class.as_deref().and_then(super::db::parse_class),
                },
            });
        }
        Ok(out)
    }

    /// Deletes events older than `before` (unix seconds).
    pub async fn prune(&self, before: u64) -> Result<u64, DbError> {
        let client = self.db.client().await?;
        client
            .execute(
                "DELETE FROM herald_events WHERE time < $1",
                &[&(before as i64)],
            )
            .await
            .map_err(DbError::doing("pruning the history table"))
    }
}
