//! Several herald nodes on one PostgreSQL (`[cluster]`): the connection pool every shared
//! piece uses ([`Db`]), the schema migrations applied at start ([`migrate`]), the limits the
//! nodes count together ([`limits`]) and the node registry ([`nodes`]). The spool backend on
//! top of it is [`crate::spool::PgBackend`]. Without `[cluster]` nothing here runs.
//!
//! Layer: above [`crate::config`], below [`crate::spool`]; [`limits`] implements traits
//! defined by [`crate::ratelimit`] and [`crate::inbound::throttle`].

pub(crate) mod db;
pub(crate) mod limits;
pub(crate) mod migrate;
pub(crate) mod nodes;

pub(crate) use db::{Db, DbError};

/// Connects to the cluster's database and brings its schema up to date (see [`migrate`]):
/// what `herald serve` does first when `[cluster]` is set.
pub(crate) async fn open(cfg: &crate::config::ClusterConfig) -> anyhow::Result<Db> {
    let db = Db::connect(cfg)?;
    let version = migrate::apply(&db).await?;
    tracing::info!(
        node = %db.node_id(),
        schema_version = version,
        "cluster: connected to the database; schema up to date"
    );
    Ok(db)
}
