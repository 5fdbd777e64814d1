//! `herald check DOMAIN` / `herald check --app NAME`: audits a domain's live mail DNS and says
//! whether Gmail, Yahoo and Microsoft will take the mail herald sends for it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::UsageError;
use crate::config::Config;
use crate::dns::check::{self, readiness::Observed};
use crate::signing::Signer;

/// Arguments of `herald check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The domain to check (with `--app`: only this one of the app's domains).
    #[arg(required_unless_present = "app")]
    pub domain: Option<String>,
    /// Judge the mail of this app (`[apps.NAME]`): every domain its senders use.
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks; exit 0 when all required ones pass, 1 otherwise.
pub async fn run(config: &Path, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let domain = match &args.domain {
        Some(d) => {
            let domain = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(&domain) {
                return Err(UsageError(format!(
                    "{d:?} is not a domain name (expected e.g. example.com)"
                ))
                .into());
            }
            Some(domain)
        }
        None => None,
    };
    let cfg = super::load_config(config)?;
    let domains = match (&args.app, domain) {
        (None, Some(d)) => vec![d],
        (Some(app), domain) => {
            let Some(a) = cfg.apps.get(app) else {
                return Err(UsageError(format!("no app {app:?} in {}", config.display())).into());
            };
            let own = check::readiness::sender_domains(a);
            match domain {
                Some(d) => vec![d],
                None if own.is_empty() => {
                    return Err(UsageError(format!(
                        "app {app:?} has no senders, so no domain to check"
                    ))
                    .into());
                }
                None => own,
            }
        }
        (None, None) => return Err(UsageError("name a DOMAIN or --app NAME".into()).into()),
    };
    let keys = Signer::load(&cfg)?.published_keys();
    let auth = crate::resolver::authenticator(&cfg.dns)?;
    let observed = observe(&cfg).await;
    let mut reports = Vec::new();
    for d in &domains {
        reports.push(check::run_for(&cfg, &auth, &keys, d, args.app.as_deref(), &observed).await);
    }
    let ok = reports.iter().all(|r| r.ok);
    match (&args.app, args.json) {
        (Some(app), true) if args.domain.is_none() => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "app": app,
                "ok": ok,
                "reports": reports,
            }))?
        ),
        (_, true) => {
            for r in &reports {
                println!("{}", serde_json::to_string_pretty(r)?);
            }
        }
        (_, false) => {
            for (i, r) in reports.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", r.render_text());
            }
        }
    }
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}

/// Complaint rates and receivers' replies from the running herald's admin endpoint, or why
/// they are not known. The check never fails for want of them.
async fn observe(cfg: &Config) -> Observed {
    let Some(base) = crate::admin::client::base_url(cfg) else {
        return Observed {
            complaints: Err(
                "[admin] listen is not set, so the running herald cannot be asked".into(),
            ),
            replies: Vec::new(),
        };
    };
    let client = match crate::admin::client::http_client(cfg, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            return Observed {
                complaints: Err(format!("no admin client: {e}")),
                replies: Vec::new(),
            };
        }
    };
    let get = |path: &str| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = client
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{url}: {e} (is herald running?)"))?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| format!("{url}: {e}"))
        }
    };
    let complaints = get("/apps/stats").await.map(|apps| {
        apps.as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| {
                Some((
                    a["app"].as_str()?.to_string(),
                    (
                        a["rates_24h"]["complaint"].as_f64().unwrap_or(0.0),
                        a["day"]["sent"].as_u64().unwrap_or(0),
                    ),
                ))
            })
            .collect::<BTreeMap<_, _>>()
    });
    let replies = get("/queue")
        .await
        .map(|queue| {
            queue
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["recipients"].as_array().cloned().unwrap_or_default())
                .filter_map(|r| r["last_reply"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Observed {
        complaints,
        replies,
    }
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
