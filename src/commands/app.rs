//! `herald app`: credentials for the apps that submit through herald.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;

use argon2::password_hash::{SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHasher};
use clap::Subcommand;
use rand::Rng;

use super::UsageError;

/// `herald app` subcommands.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Print the argon2id hash of a password: asked for (without echo) at a terminal, else
    /// read from stdin.
    HashPassword,
    /// Print a config block for a new app, with a freshly generated password.
    Add {
        /// The app's user name.
        name: String,
        /// Allowed sender: an address or `@domain` (repeatable).
        #[arg(long = "sender", required = true)]
        senders: Vec<String>,
    },
    /// Each app's delivered, bounced, blocked and complained counts and rates over the last
    /// 24 hours and 7 days, and whether its guard paused it (asks the running herald).
    Stats {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End the pause of an app (its submissions are taken and its held mail is delivered
    /// again; its counts start afresh).
    Resume {
        /// The app's name.
        name: String,
    },
}

/// Runs an `herald app` subcommand.
pub async fn run(config: &Path, cmd: AppCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AppCommand::Stats { json } => return stats(config, json).await,
        AppCommand::Resume { name } => return resume(config, &name).await,
        AppCommand::HashPassword => {
            let password = if std::io::stdin().is_terminal() {
                super::prompt::password_twice()?
            } else {
                let mut input = String::new();
                std::io::stdin().read_to_string(&mut input)?;
                let password = input.strip_suffix('\n').unwrap_or(&input);
                let password = password.strip_suffix('\r').unwrap_or(password);
                if password.is_empty() {
                    return Err(UsageError("no password on stdin".into()).into());
                }
                password.to_string()
            };
            println!("{}", hash_password(&password)?);
        }
        AppCommand::Add { name, senders } => {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(UsageError(format!(
                    "{name:?}: an app name may hold only letters, digits, '-', '_' and '.'"
                ))
                .into());
            }
            if let Some(problem) = senders
                .iter()
                .find_map(|s| crate::config::sender_pattern_problem(s))
            {
                return Err(UsageError(format!("--sender: {problem}")).into());
            }
            if app_exists(config, &name) {
                eprintln!(
                    "herald: warning: app {name:?} already exists in {}; the block below gives it \
                     a new password: replace the existing [apps.{name}] block with it (two blocks \
                     for one app do not load), or pick another name",
                    config.display()
                );
            }
            let password = new_password();
            let hash = hash_password(&password)?;
            let list = senders
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            println!("# App {name}: SMTP user name \"{name}\", password \"{password}\"");
            println!(
                "# (shown only now: put it in the app's SMTP settings; herald keeps the hash)"
            );
            println!("[apps.{name}]");
            println!("password_hash = \"{hash}\"");
            println!("senders = [{list}]");
            println!("rate_limit = 60              # messages per minute; 0 = unlimited");
            println!("# max_message_size = 10485760 # bytes; defaults to smtp.max_message_size");
            println!(
                "# allow_tls_optional = false  # true: honour \"TLS-Required: No\" (RFC 8689) \
                 from this app, delivering despite MTA-STS/DANE"
            );
            println!(
                "# return_path_domain = \"bounces.example.com\"  # herald's own return path \
                 (VERP): MX to herald's feedback listener"
            );
            println!("# forward_bounces = true      # pass bounces on to the app's MAIL FROM too");
            println!("# suppression = true          # refuse suppressed recipients at RCPT");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald app stats`: `GET /apps/stats` of the running herald.
async fn stats(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    let Some(base) = crate::admin::client::base_url(&cfg) else {
        return Err(UsageError(
            "[admin] listen is not set: app stats come from the running herald".into(),
        )
        .into());
    };
    let client = crate::admin::client::http_client(&cfg, std::time::Duration::from_secs(30))?;
    let url = format!("{base}/apps/stats");
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e} (is herald running?)"))?;
    if !resp.status().is_success() {
        anyhow::bail!("{url} answered {}", resp.status());
    }
    let apps: serde_json::Value = serde_json::from_slice(&resp.bytes().await?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>6} {:>9} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}  STATUS",
        "APP", "WINDOW", "SENT", "DELIV", "HARD", "BLOCK", "HARD%", "BLOCK%", "COMPL%"
    );
    for a in apps.as_array().into_iter().flatten() {
        let name = a["app"].as_str().unwrap_or("?");
        let status = match a["paused"].as_str() {
            Some(why) => format!("PAUSED: {why}"),
            None => "flowing".into(),
        };
        for (w, counts, rates) in [("24h", "day", "rates_24h"), ("7d", "week", "rates_7d")] {
            let c = &a[counts];
            let r = &a[rates];
            println!(
                "{:<16} {:>6} {:>9} {:>8} {:>7} {:>7} {:>8.2}% {:>8.2}% {:>8.3}%  {}",
                name,
                w,
                c["sent"].as_u64().unwrap_or(0),
                c["delivered"].as_u64().unwrap_or(0),
                c["hard"].as_u64().unwrap_or(0),
                c["block"].as_u64().unwrap_or(0),
                r["hard_bounce"].as_f64().unwrap_or(0.0),
                r["block"].as_f64().unwrap_or(0.0),
                r["complaint"].as_f64().unwrap_or(0.0),
                if w == "24h" { status.as_str() } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `herald app resume NAME`: records the resume in the store every node reads.
async fn resume(config: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    if !cfg.apps.contains_key(name) {
        return Err(UsageError(format!("no app {name:?} in {}", config.display())).into());
    }
    let list = super::suppress::open(config).await?;
    let was = crate::guard::resume(list.store(), name, crate::clock::unix_now()).await?;
    if was {
        println!(
            "resumed {name}: running herald nodes take it up within {}",
            humantime::format_duration(cfg.bounce.refresh_interval)
        );
    } else {
        println!("{name} was not paused");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the config file at `config` (if it exists and parses) already has `[apps.NAME]`.
fn app_exists(config: &Path, name: &str) -> bool {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| text.parse::<toml_edit::DocumentMut>().ok())
        .is_some_and(|doc| doc.get("apps").and_then(|apps| apps.get(name)).is_some())
}

/// An argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

/// A 24-character random password (letters and digits: ~142 bits).
fn new_password() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{PasswordHash, PasswordVerifier};

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"s3cret", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
        assert_eq!(new_password().len(), 24);
        assert_ne!(new_password(), new_password());
    }
}
