//! `herald serve`: starts a node ([`crate::node`]) and turns signals and `herald reload` into
//! calls on it, until SIGTERM/SIGINT; then the node drains within `[server] grace_period`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

use crate::node::Node;
use crate::service::{SignalRequest, Signals};

/// Arguments of `herald serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs herald until a shutdown signal.
pub async fn run(config: &Path, _args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before anything else: a SIGHUP or SIGTERM from now on is handled, never fatal.
    let mut signals = Signals::install()?;
    let cfg = super::load_config(config)?;
    // Dropped last (declared early): lines logged while shutting down still go out.
    let _log = super::init_server_logging(&cfg.server.log_level, cfg.server.log_format);
    super::service_files::warn_if_serving_as_other_user(&cfg);
    let mut node = Node::start(config, cfg).await?;
    // SIGHUP and `herald reload` (POST /reload) re-read the file; a bad one is refused and
    // the running configuration kept.
    loop {
        let answer_to = tokio::select! {
            request = signals.next() => match request {
                SignalRequest::Shutdown => break,
                SignalRequest::Reload => None,
            },
            Some(request) = node.reload_requested() => Some(request),
        };
        let outcome = node.reload();
        if let Some(answer_to) = answer_to {
            let _ = answer_to.send(outcome);
        }
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
