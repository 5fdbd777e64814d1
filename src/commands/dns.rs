//! `herald dns`: every DNS record an operator must publish.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::UsageError;
use crate::dns::records;
use crate::signing::Signer;

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

/// Prints the records; warnings (guessed addresses, missing settings) also go to stderr.
pub async fn run(config: &Path, args: DnsArgs) -> anyhow::Result<ExitCode> {
    let json = match args.format.as_str() {
        "zone" => false,
        "json" => true,
        other => {
            return Err(UsageError(format!("--format {other:?}: expected zone or json")).into());
        }
    };
    let cfg = super::load_config(config)?;
    let keys = Signer::load(&cfg)?.published_keys();
    let set = records::build(&cfg, &keys, args.domain.as_deref());
    for w in &set.warnings {
        eprintln!("herald: warning: {w}");
    }
    if json {
        let text = serde_json::to_string_pretty(&records::set_to_json(&set))?;
        println!("{text}");
    } else {
        print!("{}", crate::dns::zone::render(&set));
    }
    Ok(ExitCode::SUCCESS)
}
