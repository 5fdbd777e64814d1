//! `herald dkim`: generate and list DKIM keys.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `herald dkim` subcommands.
#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Generate key files and print the config block and DNS records to publish.
    Generate {
        /// Signing domain.
        #[arg(long)]
        domain: String,
        /// Selector (default: dated, e.g. s202611).
        #[arg(long)]
        selector: Option<String>,
        /// rsa, ed25519 or both.
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size (2048 or 4096).
        #[arg(long, default_value_t = 2048)]
        bits: u32,
    },
    /// List every configured key.
    List,
}

/// Runs an `herald dkim` subcommand.
pub async fn run(_config: &Path, _cmd: DkimCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("dkim: not implemented yet")
}
