//! Hidden commands the Debian package build runs: man pages and shell completions generated
//! from the clap definition itself, so they never drift from what `herald --help` says.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};

/// Arguments of `herald generate-man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `herald.1` and one `herald-SUBCOMMAND.1` per subcommand into.
    pub dir: PathBuf,
}

/// Arguments of `herald completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Writes the man pages (section 1) into `args.dir`.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", args.dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the man pages: {e}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "herald", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
