//! Schema migrations, applied by every node at start: versioned, idempotent, one transaction
//! under an advisory lock (so nodes starting together apply each migration once), recorded in
//! `herald_schema`. A node refuses to start against a schema newer than it knows: an older
//! binary must not write rows a newer one reads differently.
//!
//! A migration is a numbered SQL file in `src/cluster/migrations/` (`0002_limits.sql`, …),
//! listed in [`MIGRATIONS`]; a released one is never edited, only followed by a new one.

use crate::cluster::Db;
use crate::cluster::db::io_error;

/// One schema step: its version (strictly increasing from 1), name and SQL.
pub(crate) struct Migration {
    /// The schema version this step brings the database to.
    pub version: i32,
    /// A short name, recorded beside the version.
    pub name: &'static str,
    /// The statements (run inside the migration transaction).
    pub sql: &'static str,
}

/// Every migration this herald knows, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "spool",
        sql: include_str!("migrations/0001_spool.sql"),
    },
    Migration {
        version: 2,
        name: "shared_state",
        sql: include_str!("migrations/0002_shared_state.sql"),
    },
    Migration {
        version: 3,
        name: "dmarc_verified",
        sql: include_str!("migrations/0003_dmarc_verified.sql"),
    },
    Migration {
        version: 4,
        name: "dmarc_totals",
        sql: include_str!("migrations/0004_dmarc_totals.sql"),
    },
    Migration {
        version: 5,
        name: "webhook_outbox",
        sql: include_str!("migrations/0005_webhook_outbox.sql"),
    },
    Migration {
        version: 6,
        name: "node_leases",
        sql: include_str!("migrations/0006_node_leases.sql"),
    },
    Migration {
        version: 7,
        name: "shaping",
        sql: include_str!("migrations/0007_shaping.sql"),
    },
    Migration {
        version: 8,
        name: "queue_summary",
        sql: include_str!("migrations/0008_queue_summary.sql"),
    },
];

/// The advisory lock key held while migrating ("herald" in ASCII).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

/// The newest schema version this binary knows.
pub(crate) fn latest() -> i32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Brings the database's schema up to [`latest`] and returns the version; refuses a database
/// whose schema is newer.
pub(crate) async fn apply(db: &Db) -> anyhow::Result<i32> {
    let mut client = db.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| io_error("cluster: cannot begin the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| io_error("cluster: cannot take the migration lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_schema (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             applied_by text NOT NULL
         )",
    )
    .await
    .map_err(|e| io_error("cluster: cannot create herald_schema", e))?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM herald_schema", &[])
        .await
        .map_err(|e| io_error("cluster: cannot read the schema version", e))?
        .get(0);
    if current > latest() {
        anyhow::bail!(
            "cluster: the database schema is at version {current}, newer than this herald knows \
             ({}); a newer herald has migrated it. Upgrade this node to the same release as \
             the others",
            latest()
        );
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            io_error(
                &format!("cluster: migration {:04}_{} failed", m.version, m.name),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO herald_schema (version, name, applied_by) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &db.node_id()],
        )
        .await
        .map_err(|e| io_error("cluster: cannot record the migration", e))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "cluster: schema migration applied"
        );
    }
    tx.commit()
        .await
        .map_err(|e| io_error("cluster: cannot commit the migration", e))?;
    Ok(latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
    }
}
