//! Where the suppression list and the guard's pause list are kept: SQLite in `data_dir` for a
//! single node (one connection on a thread of its own, [`SqliteThread`]; WAL, so the CLI can
//! write while herald runs), or the cluster's PostgreSQL (one list for all nodes).
//!
//! Every write takes a new sequence number, and a removal leaves a tombstone, so a reader can
//! ask for the changes since the last number it saw ([`Store::changes_since`]). In PostgreSQL a
//! row can commit after a later number was read; readers ask again from a little before the
//! last number seen ([`OVERLAP`]), and applying a change twice is harmless.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::index::Change;
use super::{Entry, Reason};
use crate::cluster::{Db, DbError};
use crate::config::Config;
use crate::store::{SqliteThread, StoreError};

/// How far before the last sequence number seen a PostgreSQL reader asks again.
const OVERLAP: i64 = 1000;

const SQLITE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS suppressions (
    domain TEXT NOT NULL,
    app TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    count INTEGER NOT NULL,
    expires_at INTEGER,
    removed INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL,
    PRIMARY KEY (domain, app, address)
);
CREATE INDEX IF NOT EXISTS suppressions_seq ON suppressions(seq);
CREATE TABLE IF NOT EXISTS app_pauses (
    app TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
"#;

const PG_SCHEMA: &str = r#"
CREATE SEQUENCE IF NOT EXISTS herald_suppress_seq;
CREATE TABLE IF NOT EXISTS suppressions (
    domain TEXT NOT NULL,
    app TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL,
    count BIGINT NOT NULL,
    expires_at BIGINT,
    removed BOOLEAN NOT NULL DEFAULT FALSE,
    seq BIGINT NOT NULL,
    PRIMARY KEY (domain, app, address)
);
CREATE INDEX IF NOT EXISTS suppressions_seq ON suppressions(seq);
CREATE TABLE IF NOT EXISTS app_pauses (
    app TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
"#;

/// The SQLite file of a single node.
pub fn sqlite_path(cfg: &Config) -> PathBuf {
    cfg.bounce
        .database
        .clone()
        .unwrap_or_else(|| cfg.server.data_dir.join("suppress.sqlite"))
}

/// One app's pause, as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    /// The app.
    pub app: String,
    /// Paused (true) or resumed.
    pub paused: bool,
    /// Why it was paused, or who resumed it.
    pub reason: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The suppression and pause tables, in SQLite or PostgreSQL.
#[derive(Clone)]
pub enum Store {
    /// A single node's file.
    Sqlite(SqliteThread),
    /// The cluster's database.
    Postgres(Db),
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Entry, bool)> {
    let reason: String = r.get(3)?;
    Ok((
        Entry {
            domain: r.get(0)?,
            app: r.get(1)?,
            address: r.get(2)?,
            reason: Reason::parse(&reason).unwrap_or(Reason::Manual),
            detail: r.get(4)?,
            first_at: r.get(5)?,
            last_at: r.get(6)?,
            count: r.get(7)?,
            expires_at: r.get(8)?,
        },
        r.get::<_, i64>(9)? != 0,
    ))
}

fn pg_entry(r: &tokio_postgres::Row) -> (Entry, bool) {
    let reason: String = r.get(3);
    (
        Entry {
            domain: r.get(0),
            app: r.get(1),
            address: r.get(2),
            reason: Reason::parse(&reason).unwrap_or(Reason::Manual),
            detail: r.get(4),
            first_at: r.get(5),
            last_at: r.get(6),
            count: r.get(7),
            expires_at: r.get(8),
        },
        r.get(9),
    )
}

/// The next sequence number of a SQLite store (each side's MAX uses its index).
fn next_seq(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(seq) FROM suppressions), 0), \
         COALESCE((SELECT MAX(seq) FROM app_pauses), 0)) + 1",
        [],
        |r| r.get(0),
    )
}

/// Inserts or bumps one entry inside `tx`; the entry as stored.
fn sqlite_upsert(tx: &rusqlite::Transaction<'_>, e: &Entry) -> rusqlite::Result<Entry> {
    let seq = next_seq(tx)?;
    tx.execute(
        "INSERT INTO suppressions (domain, app, address, reason, detail, first_at, \
         last_at, count, expires_at, removed, seq) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, 0, ?9) \
         ON CONFLICT (domain, app, address) DO UPDATE SET \
         reason = excluded.reason, detail = excluded.detail, \
         last_at = excluded.last_at, expires_at = excluded.expires_at, seq = excluded.seq, \
         count = CASE WHEN removed = 1 THEN 1 ELSE count + 1 END, \
         first_at = CASE WHEN removed = 1 THEN excluded.first_at ELSE first_at END, \
         removed = 0",
        params![
            e.domain,
            e.app,
            e.address,
            e.reason.as_str(),
            e.detail,
            e.first_at,
            e.last_at,
            e.expires_at,
            seq
        ],
    )?;
    let row = tx.query_row(
        &format!(
            "SELECT {COLUMNS} FROM suppressions WHERE domain = ?1 AND app = ?2 AND address = ?3"
        ),
        params![e.domain, e.app, e.address],
        row_entry,
    )?;
    Ok(row.0)
}

const COLUMNS: &str =
    "domain, app, address, reason, detail, first_at, last_at, count, expires_at, removed";

impl Store {
    /// Opens (creating) the SQLite file at `path`, mode 0600.
    pub async fn sqlite(path: &Path) -> Result<Store, StoreError> {
        let db = SqliteThread::open(path, "suppress", |c| c.execute_batch(SQLITE_SCHEMA)).await?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Store::Sqlite(db))
    }

    /// Uses the cluster's database, creating the tables if needed.
    pub async fn postgres(db: Db) -> Result<Store, StoreError> {
        db.client()
            .await?
            .batch_execute(PG_SCHEMA)
            .await
            .map_err(DbError::doing("creating the suppression tables"))?;
        Ok(Store::Postgres(db))
    }

    /// Inserts `e`, or bumps the count and last time of the entry already there (taking the
    /// new reason, detail and expiry). Returns the entry as stored.
    pub async fn upsert(&self, e: Entry) -> Result<Entry, StoreError> {
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let tx = c.transaction()?;
                    let row = sqlite_upsert(&tx, &e)?;
                    tx.commit().map_err(StoreError::Commit)?;
                    Ok(row)
                })
                .await
            }
            Store::Postgres(db) => pg_upsert(db, e).await,
        }
    }

    /// [`Store::upsert`] for many entries: one transaction (one fsync) on SQLite.
    pub async fn upsert_many(&self, entries: Vec<Entry>) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let tx = c.transaction()?;
                    let mut out = Vec::with_capacity(entries.len());
                    for e in &entries {
                        out.push(sqlite_upsert(&tx, e)?);
                    }
                    tx.commit().map_err(StoreError::Commit)?;
                    Ok(out)
                })
                .await
            }
            Store::Postgres(db) => {
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    out.push(pg_upsert(db, e).await?);
                }
                Ok(out)
            }
        }
    }

    /// Marks the entry removed (a tombstone others see); true when an active one was there.
    pub async fn remove(&self, domain: &str, app: &str, address: &str) -> Result<bool, StoreError> {
        let (domain, app, address) = (domain.to_string(), app.to_string(), address.to_string());
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let tx = c.transaction()?;
                    let seq = next_seq(&tx)?;
                    let n = tx.execute(
                        "UPDATE suppressions SET removed = 1, seq = ?4 \
                         WHERE domain = ?1 AND app = ?2 AND address = ?3 AND removed = 0",
                        params![domain, app, address, seq],
                    )?;
                    tx.commit().map_err(StoreError::Commit)?;
                    Ok(n > 0)
                })
                .await
            }
            Store::Postgres(db) => {
                let n = db
                    .client()
                    .await?
                    .execute(
                        "UPDATE suppressions SET removed = TRUE, seq = nextval('herald_suppress_seq') \
                         WHERE domain = $1 AND app = $2 AND address = $3 AND NOT removed",
                        &[&domain, &app, &address],
                    )
                    .await
                    .map_err(DbError::doing("removing a suppression"))?;
                Ok(n > 0)
            }
        }
    }

    /// Every entry not removed (expired ones included), optionally of one domain.
    pub async fn list(&self, domain: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let domain = domain.map(str::to_string);
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let mut st = c.prepare(&format!(
                        "SELECT {COLUMNS} FROM suppressions WHERE removed = 0 \
                         AND (?1 IS NULL OR domain = ?1) ORDER BY first_at, address"
                    ))?;
                    let rows = st.query_map(params![domain], row_entry)?;
                    Ok(rows
                        .map(|r| r.map(|(e, _)| e))
                        .collect::<rusqlite::Result<_>>()?)
                })
                .await
            }
            Store::Postgres(db) => {
                let rows = db
                    .client()
                    .await?
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM suppressions WHERE NOT removed \
                             AND ($1::TEXT IS NULL OR domain = $1) ORDER BY first_at, address"
                        ),
                        &[&domain],
                    )
                    .await
                    .map_err(DbError::doing("listing the suppressions"))?;
                Ok(rows.iter().map(|r| pg_entry(r).0).collect())
            }
        }
    }

    /// The changes after sequence `since` (from a little before it in PostgreSQL), and the
    /// highest sequence number among them.
    pub async fn changes_since(&self, since: i64) -> Result<(Vec<Change>, i64), StoreError> {
        let to_change = |(e, removed): (Entry, bool)| {
            if removed {
                Change::Removed(e.domain, e.app, e.address)
            } else {
                Change::Put(e)
            }
        };
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let mut st = c.prepare(&format!(
                        "SELECT {COLUMNS}, seq FROM suppressions WHERE seq > ?1 ORDER BY seq"
                    ))?;
                    let mut max = since;
                    let rows = st.query_map(params![since], |r| {
                        Ok((row_entry(r)?, r.get::<_, i64>(10)?))
                    })?;
                    let mut out = Vec::new();
                    for row in rows {
                        let (entry, seq) = row?;
                        max = max.max(seq);
                        out.push(to_change(entry));
                    }
                    Ok((out, max))
                })
                .await
            }
            Store::Postgres(db) => {
                let from = if since == 0 { 0 } else { since - OVERLAP };
                let rows = db
                    .client()
                    .await?
                    .query(
                        &format!(
                            "SELECT {COLUMNS}, seq FROM suppressions WHERE seq > $1 ORDER BY seq"
                        ),
                        &[&from],
                    )
                    .await
                    .map_err(DbError::doing("reading the suppression changes"))?;
                let mut max = since;
                let mut out = Vec::new();
                for r in &rows {
                    max = max.max(r.get::<_, i64>(10));
                    out.push(to_change(pg_entry(r)));
                }
                Ok((out, max))
            }
        }
    }

    /// Records that `app` is paused (with why) or resumed.
    pub async fn set_pause(&self, p: Pause) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(conn) => {
                conn.call(move |c| {
                    let tx = c.transaction()?;
                    let seq = next_seq(&tx)?;
                    tx.execute(
                        "INSERT INTO app_pauses (app, paused, reason, at, seq) VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (app) DO UPDATE SET paused = excluded.paused, \
                         reason = excluded.reason, at = excluded.at, seq = excluded.seq",
                        params![p.app, p.paused as i64, p.reason, p.at, seq],
                    )?;
                    tx.commit().map_err(StoreError::Commit)
                })
                .await
            }
            Store::Postgres(db) => {
                db.client()
                    .await?
                    .execute(
                        "INSERT INTO app_pauses (app, paused, reason, at, seq) \
                         VALUES ($1, $2, $3, $4, nextval('herald_suppress_seq')) \
                         ON CONFLICT (app) DO UPDATE SET paused = excluded.paused, \
                         reason = excluded.reason, at = excluded.at, seq = excluded.seq",
                        &[&p.app, &p.paused, &p.reason, &p.at],
                    )
                    .await
                    .map_err(DbError::doing("storing an app's pause"))?;
                Ok(())
            }
        }
    }

    /// Every app's last pause or resume.
    pub async fn pauses(&self) -> Result<Vec<Pause>, StoreError> {
        match self {
            Store::Sqlite(conn) => {
                conn.call(|c| {
                    let mut st =
                        c.prepare("SELECT app, paused, reason, at FROM app_pauses ORDER BY app")?;
                    let rows = st.query_map([], |r| {
                        Ok(Pause {
                            app: r.get(0)?,
                            paused: r.get::<_, i64>(1)? != 0,
                            reason: r.get(2)?,
                            at: r.get(3)?,
                        })
                    })?;
                    Ok(rows.collect::<rusqlite::Result<_>>()?)
                })
                .await
            }
            Store::Postgres(db) => {
                let rows = db
                    .client()
                    .await?
                    .query(
                        "SELECT app, paused, reason, at FROM app_pauses ORDER BY app",
                        &[],
                    )
                    .await
                    .map_err(DbError::doing("reading the app pauses"))?;
                Ok(rows
                    .iter()
                    .map(|r| Pause {
                        app: r.get(0),
                        paused: r.get(1),
                        reason: r.get(2),
                        at: r.get(3),
                    })
                    .collect())
            }
        }
    }

    /// One app's last pause or resume, if any.
    pub async fn pause_of(&self, app: &str) -> Result<Option<Pause>, StoreError> {
        if let Store::Sqlite(conn) = self {
            let app = app.to_string();
            return conn
                .call(move |c| {
                    c.query_row(
                        "SELECT app, paused, reason, at FROM app_pauses WHERE app = ?1",
                        params![app],
                        |r| {
                            Ok(Pause {
                                app: r.get(0)?,
                                paused: r.get::<_, i64>(1)? != 0,
                                reason: r.get(2)?,
                                at: r.get(3)?,
                            })
                        },
                    )
                    .optional()
                    .map_err(StoreError::from)
                })
                .await;
        }
        Ok(self.pauses().await?.into_iter().find(|p| p.app == app))
    }
}

/// Inserts or bumps one entry in PostgreSQL; the entry as stored.
async fn pg_upsert(db: &Db, e: Entry) -> Result<Entry, StoreError> {
    let client = db.client().await?;
    let row = client
            .query_one(
                &format!(
                    "INSERT INTO suppressions (domain, app, address, reason, detail, first_at, \
                     last_at, count, expires_at, removed, seq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, FALSE, nextval('herald_suppress_seq')) \
                     ON CONFLICT (domain, app, address) DO UPDATE SET \
                     reason = excluded.reason, detail = excluded.detail, \
                     last_at = excluded.last_at, expires_at = excluded.expires_at, seq = excluded.seq, \
                     count = CASE WHEN suppressions.removed THEN 1 ELSE suppressions.count + 1 END, \
                     first_at = CASE WHEN suppressions.removed THEN excluded.first_at ELSE suppressions.first_at END, \
                     removed = FALSE \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &e.domain, &e.app, &e.address, &e.reason.as_str(), &e.detail,
                    &e.first_at, &e.last_at, &e.expires_at,
                ],
            )
            .await
            .map_err(DbError::doing("storing a suppression"))?;
    Ok(pg_entry(&row).0)
}
