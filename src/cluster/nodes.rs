//! The node registry: each node records itself in `herald_nodes` at start (id, host, version,
//! config digest, start time) and heartbeats every [`HEARTBEAT`] (last seen, open SMTP
//! connections); `herald cluster status` reads it with each node's share of the queue.
//!
//! The config digest lets an operator see at a glance that one node runs different settings
//! (an app added on one node only, another rate limit, …): a SHA-256 over the settings that
//! must agree across nodes — everything in the config file except what is naturally per node
//! (`[server]` data directory, listen addresses, file and directory paths, `[cluster]`,
//! `[admin]`) and except secrets (any key naming a password or secret other than an argon2
//! `password_hash`, which is compared so a password changed on one node only shows up).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster::Db;
use crate::cluster::db::io_error;

/// How often a node reports itself.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(10);
/// A node not heard from for this long is shown dead.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(30);

/// Keys never part of the digest (per node, or secret), at any depth.
const PER_NODE_KEYS: &[&str] = &[
    "data_dir",
    "dir",
    "listen",
    "submission",
    "submissions",
    "plain",
    "cert",
    "key",
    "file",
    "node_id",
    "log_level",
    "log_format",
];

/// Whole top-level tables never part of the digest.
const PER_NODE_TABLES: &[&str] = &["cluster", "admin"];

/// The digest of the settings in `path` that every node of a cluster should share (see the
/// module documentation), as 16 hex digits (the first 64 bits of a SHA-256).
pub(crate) fn config_digest(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut canonical = String::new();
    for (key, item) in sorted(doc.as_table().iter()) {
        if PER_NODE_TABLES.contains(&key) {
            continue;
        }
        canon_item(key, item, &mut canonical);
    }
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Ok(hash.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn sorted<'a, I>(items: I) -> Vec<(&'a str, &'a toml_edit::Item)>
where
    I: Iterator<Item = (&'a str, &'a toml_edit::Item)>,
{
    let mut v: Vec<_> = items.collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn skipped(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    PER_NODE_KEYS.contains(&k.as_str())
        || k.ends_with("_file")
        || k.ends_with("_dir")
        || k.ends_with("_path")
        || (k.contains("password") && k != "password_hash")
        || k.contains("secret")
}

/// Appends `key = value` in a canonical form (sorted keys, values without formatting).
fn canon_item(key: &str, item: &toml_edit::Item, out: &mut String) {
    if skipped(key) {
        return;
    }
    out.push_str(key);
    out.push('=');
    match item {
        toml_edit::Item::None => {}
        toml_edit::Item::Value(v) => canon_value(v, out),
        toml_edit::Item::Table(t) => {
            out.push('{');
            for (k, i) in sorted(t.iter()) {
                canon_item(k, i, out);
            }
            out.push('}');
        }
        toml_edit::Item::ArrayOfTables(a) => {
            out.push('[');
            for t in a.iter() {
                out.push('{');
                for (k, i) in sorted(t.iter()) {
                    canon_item(k, i, out);
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push(';');
}

fn canon_value(v: &toml_edit::Value, out: &mut String) {
    match v {
        toml_edit::Value::Array(a) => {
            out.push('[');
            for x in a.iter() {
                canon_value(x, out);
                out.push(',');
            }
            out.push(']');
        }
        toml_edit::Value::InlineTable(t) => {
            out.push('{');
            let mut v: Vec<_> = t.iter().collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            for (k, x) in v {
                if skipped(k) {
                    continue;
                }
                out.push_str(k);
                out.push('=');
                canon_value(x, out);
                out.push(';');
            }
            out.push('}');
        }
        // The value alone: comments and layout do not count.
        other => out.push_str(&other.clone().decorated("", "").to_string()),
    }
}

/// What a node says about itself when it registers.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The machine's host name.
    pub host: String,
    /// herald's version.
    pub version: String,
    /// [`config_digest`] of the configuration in force.
    pub config_digest: Arc<Mutex<String>>,
}

impl NodeInfo {
    /// This node, running the configuration in `config_file`.
    pub fn new(config_file: &Path) -> anyhow::Result<NodeInfo> {
        Ok(NodeInfo {
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_digest: Arc::new(Mutex::new(config_digest(config_file)?)),
        })
    }

    fn digest(&self) -> String {
        self.config_digest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Records this node as started now (a restart replaces its previous row).
pub(crate) async fn register(db: &Db, info: &NodeInfo) -> std::io::Result<()> {
    let client = db.client().await?;
    client
        .execute(
            "INSERT INTO herald_nodes (node_id, host, version, config_digest, started_at, last_seen) \
             VALUES ($1, $2, $3, $4, now(), now()) \
             ON CONFLICT (node_id) DO UPDATE SET host = $2, version = $3, config_digest = $4, \
               started_at = now(), last_seen = now(), connections = 0",
            &[&db.node_id(), &info.host, &info.version, &info.digest()],
        )
        .await
        .map_err(|e| io_error("cluster: cannot register this node", e))?;
    Ok(())
}

/// Heartbeats until the task is aborted: last seen, config digest (a reload may change it)
/// and `connections()`; prunes AUTH attempts older than `auth_keep` on the way.
pub(crate) fn spawn_heartbeat(
    db: Db,
    info: NodeInfo,
    connections: impl Fn() -> usize + Send + 'static,
    auth_keep: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let open = i64::try_from(connections()).unwrap_or(i64::MAX);
            let result = async {
                let client = db.client().await?;
                let updated = client
                    .execute(
                        "UPDATE herald_nodes SET last_seen = now(), connections = $2, \
                           config_digest = $3 WHERE node_id = $1",
                        &[&db.node_id(), &open, &info.digest()],
                    )
                    .await
                    .map_err(|e| io_error("cluster: heartbeat", e))?;
                drop(client);
                if updated == 0 {
                    register(&db, &info).await?;
                }
                crate::cluster::limits::prune(&db, auth_keep).await
            }
            .await;
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("cluster: heartbeat recorded again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!("cluster: {e}");
                }
                Err(_) => {}
            }
        }
    })
}

/// One node as `herald cluster status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct NodeStatus {
    /// `[cluster] node_id`.
    pub node_id: String,
    /// Host name.
    pub host: String,
    /// herald version.
    pub version: String,
    /// Config digest.
    pub config_digest: String,
    /// Start time (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since the last heartbeat.
    pub seen_secs_ago: f64,
    /// Heard from within [`DEAD_AFTER`].
    pub alive: bool,
    /// Messages this node holds the lease on (it is delivering them).
    pub leased: i64,
    /// Messages in the queue this node accepted.
    pub accepted_queued: i64,
    /// SMTP connections open at the last heartbeat.
    pub connections: i64,
}

/// What [`forget`] did with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forgotten {
    /// Its registry row is gone.
    Removed,
    /// It heartbeated within [`DEAD_AFTER`]: kept (stop it first).
    Alive,
    /// No such node is registered.
    Unknown,
}

/// Removes a dead node (a machine retired or renamed) from the registry, so `herald cluster
/// status` stops listing it. An alive node is refused. Its queued mail is unaffected: other
/// nodes took its leases over when they expired.
pub(crate) async fn forget(db: &Db, node_id: &str) -> std::io::Result<Forgotten> {
    let client = db.client().await?;
    let removed = client
        .execute(
            "DELETE FROM herald_nodes WHERE node_id = $1 \
               AND last_seen < now() - make_interval(secs => $2)",
            &[&node_id, &DEAD_AFTER.as_secs_f64()],
        )
        .await
        .map_err(|e| io_error("cluster: cannot update the node registry", e))?;
    if removed > 0 {
        return Ok(Forgotten::Removed);
    }
    let known = client
        .query_opt("SELECT 1 FROM herald_nodes WHERE node_id = $1", &[&node_id])
        .await
        .map_err(|e| io_error("cluster: cannot read the node registry", e))?;
    Ok(if known.is_some() {
        Forgotten::Alive
    } else {
        Forgotten::Unknown
    })
}

/// Every registered node, alive ones first, by id.
pub(crate) async fn status(db: &Db) -> std::io::Result<Vec<NodeStatus>> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT n.node_id, n.host, n.version, n.config_digest, \
                    to_char(n.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                    extract(epoch FROM now() - n.last_seen)::float8, n.connections, \
                    (SELECT count(*) FROM herald_messages m WHERE m.lease_owner = n.node_id \
                       AND EXISTS (SELECT 1 FROM herald_node_leases l \
                                   WHERE l.node_id = n.node_id AND l.lease_until > now())), \
                    (SELECT count(*) FROM herald_messages m WHERE m.accepted_by = n.node_id) \
             FROM herald_nodes n ORDER BY n.node_id",
            &[],
        )
        .await
        .map_err(|e| io_error("cluster: cannot read the node registry", e))?;
    let mut nodes: Vec<NodeStatus> = rows
        .iter()
        .map(|r| {
            let seen: f64 = r.get(5);
            NodeStatus {
                node_id: r.get(0),
                host: r.get(1),
                version: r.get(2),
                config_digest: r.get(3),
                started_at: r.get(4),
                seen_secs_ago: seen,
                alive: seen < DEAD_AFTER.as_secs_f64(),
                connections: r.get(6),
                leased: r.get(7),
                accepted_queued: r.get(8),
            }
        })
        .collect();
    nodes.sort_by_key(|n| !n.alive);
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, text).expect("write");
        config_digest(&path).expect("digest")
    }

    #[test]
    fn digest_ignores_per_node_settings_layout_and_secrets_but_not_shared_ones() {
        let a = digest(
            "[server]\nhostname = \"h\"\ndata_dir = \"/a\"\n[cluster]\nnode_id = \"a\"\n\
             [apps.x]\nrate_limit = 5\npassword_hash = \"$argon2id$1\"\n",
        );
        let b = digest(
            "# node b\n[apps.x]\npassword_hash = \"$argon2id$1\"\nrate_limit   =   5\n\
             [server]\ndata_dir = \"/b\"\nhostname = \"h\"\n[cluster]\nnode_id = \"b\"\n",
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        let c = digest(
            "[server]\nhostname = \"h\"\ndata_dir = \"/a\"\n[apps.x]\nrate_limit = 6\n\
             password_hash = \"$argon2id$1\"\n",
        );
        assert_ne!(a, c, "a different rate limit is a different digest");
    }
}
