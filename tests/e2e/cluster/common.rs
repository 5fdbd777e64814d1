//! What the cluster tests share: a herald config joined to a test PostgreSQL.

use std::path::Path;

use crate::support::{self, herald, postgres::Postgres};

/// A herald config in `dir` with `[cluster]` pointing at `pg` as node `node_id`.
pub fn node_config(dir: &Path, pg: &Postgres, node_id: &str) -> toml::Table {
    let mut cfg = herald::base_config(dir);
    support::set(&mut cfg, "cluster.database_url", pg.url());
    support::set(
        &mut cfg,
        "cluster.password_file",
        pg.password_file(dir).display().to_string(),
    );
    support::set(&mut cfg, "cluster.tls", "disable");
    support::set(&mut cfg, "cluster.node_id", node_id);
    cfg
}
