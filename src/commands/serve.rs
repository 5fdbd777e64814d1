//! `herald serve`: runs the listeners, the queue and delivery until SIGTERM/SIGINT.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `herald serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs herald until a shutdown signal.
pub async fn run(config: &Path, _args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    super::init_logging(&cfg.server.log_level);
    anyhow::bail!("serve: not implemented yet")
}
