//! The database handle of a cluster node: a pool of PostgreSQL connections (deadpool), TLS to
//! the server through rustls, and the node's identity. Cheap to clone; every shared piece of
//! herald (spool, and later limits and reports) takes one.
//!
//! The password never appears in the configuration or the logs: it is read from
//! `password_file` or `PGPASSWORD` when the pool is built.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::config::SslMode;

use crate::config::{ClusterConfig, ClusterTls};

/// A pooled connection to the cluster's database.
pub(crate) type Client = deadpool_postgres::Object;

/// Why the cluster's database could not do something, typed so that the spool and the stores
/// keep it in their own errors and their callers choose the reply (a `451`, a log line).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// No connection: the server is down or unreachable, or the pool stayed exhausted past
    /// `connect_timeout`.
    #[error("cluster database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed (with the server's words).
    #[error("{context}: {detail}")]
    Query {
        /// What herald was doing, e.g. `storing messages`.
        context: &'static str,
        /// The driver's error with its causes.
        detail: String,
    },
    /// No answer within the operation's deadline.
    #[error("cluster database did not answer in time")]
    Timeout,
}

impl DbError {
    /// A failed statement, with what herald was doing.
    pub fn query(context: &'static str, e: tokio_postgres::Error) -> DbError {
        DbError::Query {
            context,
            detail: describe(&e),
        }
    }

    /// A closure for `map_err`: `.map_err(DbError::doing("storing messages"))`.
    pub fn doing(context: &'static str) -> impl Fn(tokio_postgres::Error) -> DbError {
        move |e| DbError::query(context, e)
    }
}

impl From<DbError> for std::io::Error {
    fn from(e: DbError) -> std::io::Error {
        let kind = match e {
            DbError::Timeout => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e.to_string())
    }
}

/// The cluster's database: a connection pool and this node's id.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    node_id: Arc<str>,
    lease: Duration,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Db {
    /// Builds the pool (connections are opened on first use, so a database that is down at
    /// this moment is reported by the first query, not here).
    pub fn connect(cfg: &ClusterConfig) -> anyhow::Result<Db> {
        let node_id = cfg.node_id();
        let mut pg: tokio_postgres::Config = cfg
            .database_url
            .parse()
            .map_err(|e| anyhow::anyhow!("cluster.database_url: {e}"))?;
        if let Some(password) = password(cfg)? {
            pg.password(password);
        }
        pg.connect_timeout(cfg.connect_timeout);
        pg.application_name(format!("herald {node_id}"));
        pg.ssl_mode(match cfg.tls {
            ClusterTls::Disable => SslMode::Disable,
            ClusterTls::Prefer => SslMode::Prefer,
            ClusterTls::Require => SslMode::Require,
        });
        // Detect a vanished server on an idle connection within about a minute.
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(cfg)?);
        let manager = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(cfg.connect_timeout),
                create: Some(cfg.connect_timeout),
                recycle: Some(cfg.connect_timeout),
            })
            .build()
            .map_err(|e| anyhow::anyhow!("cluster: cannot build the connection pool: {e}"))?;
        Ok(Db {
            pool,
            node_id: node_id.into(),
            lease: cfg.lease,
        })
    }

    /// A connection from the pool; [`DbError::Unavailable`] when the database is unreachable
    /// or the pool stayed exhausted past `connect_timeout`.
    pub async fn client(&self) -> Result<Client, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(describe(&e)))
    }

    /// This node's id (`[cluster] node_id`, else the host name).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How long a lease on queued mail lasts without renewal (`[cluster] lease`).
    pub fn lease(&self) -> Duration {
        self.lease
    }
}

/// A pool error with its cause (tokio-postgres errors keep the interesting part in source()).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// An error from a query, as an [`std::io::Error`] with its cause.
pub(crate) fn io_error(context: &str, e: tokio_postgres::Error) -> std::io::Error {
    std::io::Error::other(format!("{context}: {}", describe(&e)))
}

/// The password: `password_file` (first line), else `PGPASSWORD`, else none (trust, peer or
/// certificate authentication).
fn password(cfg: &ClusterConfig) -> anyhow::Result<Option<String>> {
    if let Some(path) = &cfg.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cluster.password_file: cannot read {}: {e}", path.display())
        })?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            anyhow::bail!("cluster.password_file: {} is empty", path.display());
        }
        return Ok(Some(line.to_string()));
    }
    Ok(std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()))
}

/// rustls for the database: web PKI roots plus `tls_ca_file`, herald's crypto provider.
fn tls_config(cfg: &ClusterConfig) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.tls_ca_file {
        let certs = crate::trust::load_certs(path)
            .map_err(|e| anyhow::anyhow!("cluster.tls_ca_file: {e}"))?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(
                    "cluster.tls_ca_file: {} holds an unusable CA: {e}",
                    path.display()
                )
            })?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crate::trust::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("cluster: TLS set-up: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
