//! `herald sts`: the MTA-STS policies herald applies.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `herald sts` subcommands.
#[derive(Debug, Subcommand)]
pub enum StsCommand {
    /// Print the policy in force for a domain (fetched or cached).
    Show {
        /// Recipient domain.
        domain: String,
    },
}

/// Runs an `herald sts` subcommand.
pub async fn run(_config: &Path, _cmd: StsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sts: not implemented yet")
}
