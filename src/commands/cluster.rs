//! `herald cluster status`: the nodes registered on the cluster's database, alive or dead by
//! their last heartbeat, their load, and a warning when their configurations differ.
//! `herald cluster forget NODE`: takes a retired node off that list.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::cluster::nodes::{DEAD_AFTER, Forgotten, NodeStatus};

/// `herald cluster …`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List the nodes: alive or dead, version, config digest, load. Exits 1 when the alive
    /// nodes' config digests differ.
    Status {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a dead node (retired or renamed machine) from the registry; refused while it
    /// still sends heartbeats. Its queued mail is delivered by the others either way.
    Forget {
        /// The node's id (`[cluster] node_id`), as `herald cluster status` lists it.
        node: String,
    },
}

/// Runs a `herald cluster` subcommand.
pub async fn run(config: &Path, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    let Some(cluster) = &cfg.cluster else {
        return Err(super::UsageError(
            "herald cluster: this configuration has no [cluster] section; a single node has \
             no cluster to show"
                .into(),
        )
        .into());
    };
    let db = crate::cluster::open(cluster).await?;
    let json = match cmd {
        ClusterCommand::Status { json } => json,
        ClusterCommand::Forget { node } => {
            return match crate::cluster::nodes::forget(&db, &node).await? {
                Forgotten::Removed => {
                    println!("{node}: removed from the node registry");
                    Ok(ExitCode::SUCCESS)
                }
                Forgotten::Alive => {
                    eprintln!(
                        "herald cluster forget: {node} sent a heartbeat within the last {} s; \
                         stop it first",
                        DEAD_AFTER.as_secs()
                    );
                    Ok(ExitCode::from(1))
                }
                Forgotten::Unknown => {
                    eprintln!("herald cluster forget: no node {node:?} is registered");
                    Ok(ExitCode::from(1))
                }
            };
        }
    };
    let nodes = crate::cluster::nodes::status(&db).await?;
    let warning = digest_warning(&nodes);
    if json {
        let out = serde_json::json!({ "nodes": nodes, "config_warning": warning });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&nodes);
        if let Some(w) = &warning {
            println!();
            println!("warning: {w}");
        }
    }
    Ok(if warning.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(nodes: &[NodeStatus]) {
    if nodes.is_empty() {
        println!("no node has registered on this database yet (nodes register when they start)");
        return;
    }
    println!(
        "{:<16} {:<6} {:>10} {:<10} {:<17} {:>7} {:>7} {:>6}  {:<20} HOST",
        "NODE",
        "STATE",
        "LAST SEEN",
        "VERSION",
        "CONFIG DIGEST",
        "LEASED",
        "QUEUED",
        "CONNS",
        "STARTED"
    );
    for n in nodes {
        println!(
            "{:<16} {:<6} {:>10} {:<10} {:<17} {:>7} {:>7} {:>6}  {:<20} {}",
            n.node_id,
            if n.alive { "alive" } else { "dead" },
            format!("{}s ago", n.seen_secs_ago.max(0.0).round() as u64),
            n.version,
            n.config_digest,
            n.leased,
            n.accepted_queued,
            n.connections,
            n.started_at,
            n.host
        );
    }
    let dead = nodes.iter().filter(|n| !n.alive).count();
    if dead > 0 {
        println!(
            "\n{dead} node(s) dead: no heartbeat for over {} s; their leased mail is taken over \
             by the others once the leases expire",
            DEAD_AFTER.as_secs()
        );
    }
}

/// A warning naming the nodes whose config digest differs from the most common one among the
/// alive nodes, if any does.
fn digest_warning(nodes: &[NodeStatus]) -> Option<String> {
    let mut by_digest: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in nodes.iter().filter(|n| n.alive) {
        by_digest
            .entry(n.config_digest.as_str())
            .or_default()
            .push(n.node_id.as_str());
    }
    if by_digest.len() < 2 {
        return None;
    }
    let (common, _) = by_digest.iter().max_by_key(|(_, v)| v.len())?;
    let common = *common;
    let odd: Vec<String> = by_digest
        .iter()
        .filter(|(d, _)| **d != common)
        .map(|(d, v)| format!("{} (digest {d})", v.join(", ")))
        .collect();
    Some(format!(
        "config digests differ: {} run other settings than the rest (digest {common}); \
         compare their config files (apps, keys, limits, delivery policy) and make them agree",
        odd.join("; ")
    ))
}
