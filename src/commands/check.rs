//! `herald check DOMAIN`: audits a domain's live mail DNS.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use super::UsageError;
use crate::dns::check;
use crate::signing::Signer;

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
pub async fn run(config: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let domain = args
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !valid_domain(&domain) {
        return Err(UsageError(format!(
            "{:?} is not a domain name (expected e.g. example.com)",
            args.domain
        ))
        .into());
    }
    let cfg = super::load_config(config)?;
    let keys = Signer::load(&cfg)?.published_keys();
    let auth = crate::resolver::authenticator(&cfg.dns)?;
    let report = check::run(&cfg, &auth, &keys, &domain).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// A syntactically valid host name with at least two labels.
fn valid_domain(d: &str) -> bool {
    d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
