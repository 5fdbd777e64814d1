//! `herald sts`: the MTA-STS policies herald applies.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::clock::unix_now;
use crate::mta_sts::cache::CachedPolicy;
use crate::mta_sts::discover::{self, Discovery};
use crate::mta_sts::policy::mode_name;
use crate::mta_sts::{Resolution, Source, StsResolver, fetch};
use crate::tls_policy::TlsDirective;

/// `herald sts` subcommands.
#[derive(Debug, Subcommand)]
pub enum StsCommand {
    /// Print the policy in force for a domain (fetched or cached).
    Show {
        /// Recipient domain.
        domain: String,
        /// Only read the cache: no DNS look-up, no fetch.
        #[arg(long)]
        cached: bool,
    },
}

/// Runs an `herald sts` subcommand.
pub async fn run(config: &Path, cmd: StsCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    match cmd {
        StsCommand::Show { domain, cached } => {
            let mut dns_failed = None;
            let resolver = StsResolver::new(&cfg)?;
            let resolution = if cached {
                let entry = resolver.cached(&domain);
                let source = match &entry {
                    Some(_) => Source::Cache,
                    None => Source::NoPolicy("nothing cached".into()),
                };
                Resolution {
                    domain: domain.trim_end_matches('.').to_ascii_lowercase(),
                    entry,
                    source,
                }
            } else {
                // The resolver folds a failed `_mta-sts` look-up into "no policy" (delivery goes
                // on opportunistically); the operator must hear that DNS did not answer, so ask
                // again alongside and exit 1 when it failed.
                let auth = crate::resolver::authenticator(&cfg.dns)?;
                let name = domain.trim_end_matches('.').to_ascii_lowercase();
                let (resolution, discovery) =
                    tokio::join!(resolver.resolve(&domain), discover::discover(&auth, &name));
                if let Discovery::Failed(why) = discovery
                    && matches!(
                        resolution.source,
                        Source::NoPolicy(_) | Source::CacheWithoutTxt(_)
                    )
                {
                    dns_failed = Some(why);
                }
                resolution
            };
            let directive = resolver.directive_from(&resolution);
            print!(
                "{}",
                render(&resolution, &directive, cfg.mta_sts.port, unix_now())
            );
            if let Some(why) = &dns_failed {
                println!("dns:      the look-up failed ({why}); the policy could not be checked");
                eprintln!(
                    "herald: DNS did not answer for _mta-sts.{}; check [dns] servers",
                    resolution.domain
                );
            }
            Ok(match resolution.source {
                Source::Failed(_) => ExitCode::from(1),
                _ if dns_failed.is_some() => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            })
        }
    }
}

/// The text `herald sts show` prints.
pub fn render(r: &Resolution, directive: &TlsDirective, port: u16, now: u64) -> String {
    let url = fetch::policy_url(&r.domain, port);
    let mut out = String::new();
    let _ = writeln!(out, "domain:   {}", r.domain);
    let source = match &r.source {
        Source::Cache => "cached (the TXT id is unchanged)".to_string(),
        Source::Fetched => format!("fetched now from {url}"),
        Source::CacheWithoutTxt(why) => format!("cached ({why})"),
        Source::CacheAfterFailedFetch(e) => format!(
            "cached; fetching the changed policy failed ({}): {}",
            result_name(e.result_type),
            e.detail
        ),
        Source::NoPolicy(why) => format!("no policy: {why}"),
        Source::Failed(e) => format!(
            "announced but not fetchable ({}): {}",
            result_name(e.result_type),
            e.detail
        ),
    };
    let _ = writeln!(out, "source:   {source}");
    if let Some(entry) = &r.entry {
        write_entry(&mut out, entry, now);
    }
    let delivery = match directive {
        TlsDirective::Sts { policy, .. } if directive.requires_verified_tls() => format!(
            "mta-sts enforce: only MX hosts matching {}, STARTTLS with a verified certificate, \
             never in clear",
            policy.mx.join(" ")
        ),
        TlsDirective::Sts { .. } => {
            "mta-sts testing: opportunistic TLS, failures reported to TLS-RPT".to_string()
        }
        TlsDirective::Required => {
            "required ([delivery] require_tls): STARTTLS with a verified certificate".to_string()
        }
        TlsDirective::StsFailed { .. } => {
            "opportunistic TLS; the fetch failure is reported to TLS-RPT".to_string()
        }
        TlsDirective::Opportunistic => "opportunistic TLS".to_string(),
        TlsDirective::Dane { .. } => {
            "dane: STARTTLS required, the chain must match the TLSA records".to_string()
        }
    };
    let _ = writeln!(out, "delivery: {delivery}");
    out
}

fn write_entry(out: &mut String, entry: &CachedPolicy, now: u64) {
    let p = &entry.policy;
    let _ = writeln!(out, "id:       {}", p.id);
    let _ = writeln!(out, "mode:     {}", mode_name(p.mode));
    for (i, mx) in p.mx.iter().enumerate() {
        let label = if i == 0 { "mx:" } else { "" };
        let _ = writeln!(out, "{label:<9} {mx}");
    }
    let _ = writeln!(
        out,
        "max_age:  {} ({})",
        p.max_age,
        humantime::format_duration(std::time::Duration::from_secs(p.max_age))
    );
    let _ = writeln!(out, "fetched:  {}", timestamp(entry.fetched_at));
    let left = if entry.is_fresh(now) {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(entry.expires_at - now))
        )
    } else {
        "expired: no longer applied".to_string()
    };
    let _ = writeln!(out, "expires:  {} ({left})", timestamp(entry.expires_at));
}

fn timestamp(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

fn result_name(t: mail_auth::report::tlsrpt::ResultType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{t:?}"))
}
