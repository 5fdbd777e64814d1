//! `herald webhook`: make a signing secret, and send a signed test event to an app's endpoint
//! now, to check its URL, TLS and signature verification before real events flow.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::webhook::client::Outcome;

/// `herald webhook …`
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// POST one signed `webhook.test` event to the app's webhook_url and show the answer.
    Test(TestArgs),
    /// Print a new secret for `webhook_secret` (whsec_ and 32 random bytes in base64).
    Secret,
}

/// Arguments of `herald webhook test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The app (its name in [apps]).
    pub app: String,
}

/// Runs `herald webhook`.
pub async fn run(config: &Path, cmd: WebhookCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhookCommand::Secret => {
            println!("{}", crate::webhook::sign::new_secret());
            Ok(ExitCode::SUCCESS)
        }
        WebhookCommand::Test(a) => {
            let cfg = super::load_config(config)?;
            let (url, outcome) = crate::webhook::send_test(&cfg, &a.app).await?;
            match outcome {
                Outcome::Accepted(status) => {
                    println!("{url}: accepted ({status})");
                    Ok(ExitCode::SUCCESS)
                }
                Outcome::Failed(why) => {
                    println!("{url}: failed: {why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
