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
    let mut set = records::build(&cfg, &keys, args.domain.as_deref());
    // [web] hosted MTA-STS: the policy id depends on the live MX when none is configured.
    if !cfg.web.mta_sts.is_empty() {
        let resolver = crate::resolver::authenticator(&cfg.dns)?;
        let (mut policies, problems) = crate::web::hosted_sts::all_policies(&cfg, &resolver).await;
        let wanted = args.domain.as_deref().map(records::normalize_name);
        policies.retain(|p| wanted.as_ref().is_none_or(|w| *w == p.domain));
        set.records
            .extend(crate::web::hosted_sts::records(&cfg, &policies));
        set.warnings.extend(problems);
    }
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
