//! Where the node keeps its state, decided once: a single node keeps everything in
//! `data_dir` (spool files, SQLite); with `[cluster]` the spool, rate limits, AUTH failure
//! counts, TLS-RPT counts and the report store are the cluster's PostgreSQL, and the node
//! registers itself there. Nothing else in the node asks which of the two it is.

use std::path::Path;
use std::sync::Arc;

use crate::cluster::Db;
use crate::cluster::nodes::NodeInfo;
use crate::config::Config;
use crate::spool::{Arrivals, Spool};
use crate::store::ReportStore;

/// The node's storage, single node or cluster.
pub struct Backends {
    /// The spool (files, or the cluster's table; messages being received are staged in local
    /// files either way).
    pub spool: Spool,
    /// Newly stored messages, for the queue (taken by [`crate::queue::manager::QueueManager`]).
    pub arrivals: Option<Arrivals>,
    /// DMARC/TLS reports received (`[feedback]`) and shown on `/dmarc`.
    pub reports: Arc<dyn ReportStore>,
    /// With `[cluster]`: the database and this node's entry in its registry.
    pub cluster: Option<ClusterBackend>,
}

/// The cluster's shared pieces.
pub struct ClusterBackend {
    /// The connection pool, schema up to date.
    pub db: Db,
    /// This node as registered (its config digest follows reloads).
    pub node: NodeInfo,
}

impl Backends {
    /// Opens the spool and the report store, single node or cluster (with `[cluster]`: the
    /// database first, its schema brought up to date before anything uses it, and this node
    /// registered).
    pub async fn open(cfg: &Config, config_file: &Path) -> anyhow::Result<Backends> {
        let (spool, arrivals, cluster) = match &cfg.cluster {
            Some(settings) => {
                let db = crate::cluster::open(settings).await?;
                let backend = crate::spool::PgBackend::open(db.clone(), &cfg.spool_dir())?;
                let (spool, arrivals) = Spool::open(Arc::new(backend))?;
                let node = NodeInfo::new(config_file)?;
                crate::cluster::nodes::register(&db, &node).await?;
                (spool, arrivals, Some(ClusterBackend { db, node }))
            }
            None => {
                let (spool, arrivals) = Spool::open_dir(&cfg.spool_dir())?;
                (spool, arrivals, None)
            }
        };
        Ok(Backends {
            spool,
            arrivals: Some(arrivals),
            reports: crate::store::open_on(cfg, cluster.as_ref().map(|c| c.db.clone())).await?,
            cluster,
        })
    }

    /// The counts the SMTP listeners share with the other nodes (`None` on a single node).
    pub fn cluster_counters(&self) -> Option<crate::inbound::ClusterCounters> {
        self.cluster.as_ref().map(|c| {
            let limits = Arc::new(crate::cluster::limits::PgLimits::new(c.db.clone()));
            crate::inbound::ClusterCounters {
                rates: limits.clone(),
                failures: limits,
            }
        })
    }
}
