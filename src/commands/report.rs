//! `herald report`: TLS-RPT reports.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `herald report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Send every pending TLS-RPT report now.
    Flush,
}

/// Runs an `herald report` subcommand.
pub async fn run(_config: &Path, _cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("report: not implemented yet")
}
