//! `herald queue`: see and act on waiting mail, against a running herald or the spool offline.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

/// `herald queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queued messages with each recipient's state.
    List,
    /// Show one message.
    Show {
        /// Queue id.
        id: String,
    },
    /// Attempt delivery now.
    Retry {
        /// Queue id.
        id: Option<String>,
        /// Every queued message.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Delete a message.
    Delete {
        /// Queue id.
        id: String,
        /// Send a bounce to the sender.
        #[arg(long)]
        bounce: bool,
    },
    /// Hold a message: no attempts until released.
    Hold {
        /// Queue id.
        id: String,
    },
    /// Release a held message.
    Release {
        /// Queue id.
        id: String,
    },
}

/// Runs an `herald queue` subcommand.
pub async fn run(_config: &Path, _cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("queue: not implemented yet")
}
