//! The `herald` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald::commands::Cli::parse();
    herald::commands::run(cli).await
}
