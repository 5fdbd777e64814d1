//! With `[cluster]`: one certificate for every node. The certificate lives in the cluster's
//! PostgreSQL (`herald_web_certificate`); a node that finds renewal due orders only while it
//! holds an advisory lock (so one node orders at a time), and stores the result there; every
//! other node adopts the stored certificate instead of ordering its own.

use super::certs::Issued;
use crate::cluster::Db;
use crate::cluster::db::io_error;

/// The advisory lock key held while ordering ("herald web" in ASCII, shortened to 63 bits).
const ORDER_LOCK: i64 = 0x6865_7261_6c64_7765;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS herald_web_certificate (
    id INT PRIMARY KEY,
    chain_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    stored_by TEXT NOT NULL,
    stored_at BIGINT NOT NULL
)";

/// The cluster's shared certificate.
#[derive(Clone)]
pub(crate) struct SharedCert {
    db: Db,
}

/// The order lock, held on one pooled connection until [`OrderLock::release`].
pub(crate) struct OrderLock {
    client: deadpool_postgres::Object,
}

impl SharedCert {
    /// The shared certificate of `db` (its table created when missing).
    pub(crate) async fn open(db: Db) -> std::io::Result<SharedCert> {
        let client = db.client().await.map_err(std::io::Error::other)?;
        client
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| io_error("creating herald_web_certificate", e))?;
        Ok(SharedCert { db })
    }

    /// The stored certificate, if any (an unusable one is reported as an error).
    pub(crate) async fn load(&self) -> std::io::Result<Option<Issued>> {
        let client = self.db.client().await.map_err(std::io::Error::other)?;
        let row = client
            .query_opt(
                "SELECT chain_pem, key_pem FROM herald_web_certificate WHERE id = 1",
                &[],
            )
            .await
            .map_err(|e| io_error("reading the shared certificate", e))?;
        let Some(row) = row else { return Ok(None) };
        let (chain, key): (String, String) = (row.get(0), row.get(1));
        Issued::from_pem(&chain, &key)
            .map(Some)
            .map_err(|e| std::io::Error::other(format!("the shared certificate: {e}")))
    }

    /// Stores `issued` for every node.
    pub(crate) async fn store(&self, issued: &Issued) -> std::io::Result<()> {
        let client = self.db.client().await.map_err(std::io::Error::other)?;
        client
            .execute(
                "INSERT INTO herald_web_certificate
                     (id, chain_pem, key_pem, not_after, stored_by, stored_at)
                 VALUES (1, $1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET chain_pem = $1, key_pem = $2, not_after = $3,
                     stored_by = $4, stored_at = $5",
                &[
                    &issued.chain_pem,
                    &issued.key_pem,
                    &issued.not_after,
                    &self.db.node_id(),
                    &crate::store::now(),
                ],
            )
            .await
            .map_err(|e| io_error("storing the shared certificate", e))?;
        Ok(())
    }

    /// The order lock, or `None` while another node holds it.
    pub(crate) async fn try_lock(&self) -> std::io::Result<Option<OrderLock>> {
        let client = self.db.client().await.map_err(std::io::Error::other)?;
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ORDER_LOCK])
            .await
            .map_err(|e| io_error("taking the ACME order lock", e))?;
        Ok(row.get::<_, bool>(0).then_some(OrderLock { client }))
    }
}

impl OrderLock {
    /// Releases the lock (a node that dies releases it with its connection).
    pub(crate) async fn release(self) {
        if let Err(e) = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&ORDER_LOCK])
            .await
        {
            tracing::warn!(
                "web: cannot release the ACME order lock (released when the connection closes): {e}"
            );
        }
    }
}
