//! `herald reload`: asks the running herald to re-read its configuration, through the admin
//! endpoint (`POST /reload`), the same as `systemctl reload herald` (SIGHUP). The answer says
//! what was applied, what needs a restart, or why the new configuration was refused.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::config::Config;

/// Arguments of `herald reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {}

/// What a reload request came to.
#[derive(Debug)]
pub enum Requested {
    /// The running herald applied the file; the detail says what changed.
    Reloaded(String),
    /// No herald answers on the admin endpoint (the detail says why).
    NotRunning(String),
}

/// The admin endpoint's answer to `POST /reload`.
#[derive(Debug, Deserialize)]
pub struct ReloadAnswer {
    /// Whether the new configuration is in force.
    pub ok: bool,
    /// What was applied, what needs a restart, or why it was refused.
    pub message: String,
}

/// Runs `herald reload`: exit 0 when applied, 1 when the running herald refused it or none
/// answers, 2 when the file does not validate here (then nothing is sent: the running herald
/// would refuse it too, and keeps its configuration).
pub async fn run(config: &Path, _args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let cfg = match super::load_config(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("herald: {e:#}");
            eprintln!(
                "herald: nothing reloaded: the running herald keeps its configuration; fix the \
                 file and run `herald reload` again"
            );
            return Ok(ExitCode::from(2));
        }
    };
    match request(&cfg).await {
        Ok(Requested::Reloaded(message)) => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Requested::NotRunning(why)) => {
            eprintln!(
                "herald: no running herald to reload ({why}); under systemd use `systemctl \
                 reload herald`, otherwise `kill -HUP <pid>`"
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("herald: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Asks the herald behind `[admin] listen` to reload. An error means it answered and refused
/// (the running configuration stays in force).
pub async fn request(cfg: &Config) -> anyhow::Result<Requested> {
    let Some(base) = crate::admin::client::base_url(cfg) else {
        return Ok(Requested::NotRunning("[admin] listen is not set".into()));
    };
    let url = format!("{base}/reload");
    let client = crate::admin::client::http_client(cfg, Duration::from_secs(60))?;
    let resp = match client.post(&url).send().await {
        Ok(resp) => resp,
        Err(e) if e.is_connect() => {
            return Ok(Requested::NotRunning(format!("nothing answers at {url}")));
        }
        Err(e) => anyhow::bail!("{url}: {e}"),
    };
    let status = resp.status();
    let body = resp.bytes().await?;
    let answer: ReloadAnswer = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{url} answered {status} without a reload result: {e}"))?;
    if answer.ok {
        Ok(Requested::Reloaded(answer.message))
    } else {
        anyhow::bail!(
            "reload refused, the running configuration is kept: {}",
            answer.message
        )
    }
}
