//! `herald app`: credentials for the apps that submit through herald.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `herald app` subcommands.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Read a password on stdin and print its argon2id hash.
    HashPassword,
    /// Print a config block for a new app, with a freshly generated password.
    Add {
        /// The app's user name.
        name: String,
        /// Allowed sender: an address or `@domain` (repeatable).
        #[arg(long = "sender", required = true)]
        senders: Vec<String>,
    },
}

/// Runs an `herald app` subcommand.
pub async fn run(_config: &Path, _cmd: AppCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("app: not implemented yet")
}
