//! `herald dns`: every DNS record an operator must publish.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `herald dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Only the records for this signing domain (plus the include).
    #[arg(long)]
    pub domain: Option<String>,
    /// zone or json.
    #[arg(long, default_value = "zone")]
    pub format: String,
}

/// Prints the records.
pub async fn run(_config: &Path, _args: DnsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dns: not implemented yet")
}
