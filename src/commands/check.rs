//! `herald check DOMAIN`: audits a domain's live mail DNS.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `herald check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The domain to check.
    pub domain: String,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks; exit 0 when all required ones pass, 1 otherwise.
pub async fn run(_config: &Path, _args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: not implemented yet")
}
