//! The command line: one module per subcommand. `main.rs` only parses and dispatches here.
//!
//! Exit codes: 0 success, 1 a failed check or operation, 2 bad usage or bad configuration.

pub mod app;
pub mod check;
pub mod cluster;
pub mod dkim;
pub mod dkim_activate;
pub mod dmarc;
pub mod dns;
pub mod docs;
pub mod log;
mod prompt;
pub mod queue;
pub mod reload;
pub mod report;
pub mod serve;
pub mod service_files;
pub mod sts;
pub mod suppress;
pub mod tls;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

/// herald — an outbound SMTP relay that signs, queues and delivers your apps' mail.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: config/herald.toml, else /etc/herald/herald.toml (where
    /// the package installs it)].
    #[arg(long, short, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// herald's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay: listeners, queue, delivery.
    Serve(serve::ServeArgs),
    /// Make the running herald re-read its configuration (as SIGHUP does).
    Reload(reload::ReloadArgs),
    /// App credentials: hash a password, add an app.
    #[command(subcommand)]
    App(app::AppCommand),
    /// DKIM keys: generate, list, activate.
    #[command(subcommand)]
    Dkim(dkim::DkimCommand),
    /// Print every DNS record to publish.
    Dns(dns::DnsArgs),
    /// Audit a domain's live DNS (SPF, DKIM, DMARC, MTA-STS, TLS-RPT).
    Check(check::CheckArgs),
    /// Inspect and act on the queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// MTA-STS policies seen.
    #[command(subcommand)]
    Sts(sts::StsCommand),
    /// Transport security per destination: MX, DNSSEC, DANE (TLSA), MTA-STS, what applies.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// TLS-RPT reports.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// DMARC aggregate reports received: summary, sources, import, rejected.
    #[command(subcommand)]
    Dmarc(dmarc::DmarcCommand),
    /// Several nodes on one PostgreSQL: the nodes, their load and configuration.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The message history: what happened to each recipient (search).
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Webhooks to the apps: send a test event, make a secret.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// The suppression list: list, add, remove, import, export (CSV, JSON).
    #[command(subcommand)]
    Suppress(suppress::SuppressCommand),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    GenerateMan(docs::ManArgs),
    /// Print a shell completion script (for packaging).
    #[command(hide = true)]
    Completions(docs::CompletionsArgs),
}

/// A usage error: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the parsed command line and maps errors to exit codes.
pub async fn run(cli: Cli) -> ExitCode {
    let config = cli.config.clone().unwrap_or_else(default_config_path);
    let result = match cli.command {
        Command::Serve(args) => serve::run(&config, args).await,
        Command::Reload(args) => reload::run(&config, args).await,
        Command::App(cmd) => app::run(&config, cmd).await,
        Command::Dkim(cmd) => dkim::run(&config, cmd).await,
        Command::Dns(args) => dns::run(&config, args).await,
        Command::Check(args) => check::run(&config, args).await,
        Command::Queue(cmd) => queue::run(&config, cmd).await,
        Command::Sts(cmd) => sts::run(&config, cmd).await,
        Command::Tls(cmd) => tls::run(&config, cmd).await,
        Command::Report(cmd) => report::run(&config, cmd).await,
        Command::Dmarc(cmd) => dmarc::run(&config, cmd).await,
        Command::Cluster(cmd) => cluster::run(&config, cmd).await,
        Command::Log(cmd) => log::run(&config, cmd).await,
        Command::Webhook(cmd) => webhook::run(&config, cmd).await,
        Command::Suppress(cmd) => suppress::run(&config, cmd).await,
        Command::GenerateMan(args) => docs::man(args),
        Command::Completions(args) => docs::completions(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herald: {e:#}");
            if let Some(hint) = hint_for(&format!("{e:#}")) {
                eprintln!("  fix: {hint}");
            }
            if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The configuration file when none is named: `config/herald.toml` in the current directory
/// (a checkout), else the package's `/etc/herald/herald.toml` when it exists.
fn default_config_path() -> PathBuf {
    let local = PathBuf::from(DEFAULT_CONFIG_PATH);
    let packaged = PathBuf::from(crate::config::PACKAGED_CONFIG_PATH);
    if !local.exists() && packaged.exists() {
        packaged
    } else {
        local
    }
}

/// What to do about an error the operating system gave, when its text alone would not say.
fn hint_for(error: &str) -> Option<&'static str> {
    let listening = error.contains("cannot listen") || error.contains("cannot bind");
    if listening && error.contains("Permission denied") {
        return Some(
            "ports below 1024 need the CAP_NET_BIND_SERVICE capability: the shipped systemd \
             unit grants it (AmbientCapabilities=CAP_NET_BIND_SERVICE); when starting herald \
             by hand, run `setcap cap_net_bind_service=+ep \"$(command -v herald)\"` once, or \
             listen on a port from 1024 up",
        );
    }
    if listening && error.contains("Address already in use") {
        return Some(
            "another program (or another herald) listens there: `ss -ltnp` shows which; stop \
             it or change the address in the config",
        );
    }
    None
}

/// Loads the configuration; a [`ConfigError`] inside the error makes the exit status 2.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// Starts logging to stderr at `level` (overridden by `RUST_LOG`) as text lines.
pub fn init_logging(level: &str) {
    init_logging_as(level, crate::config::LogFormat::Text);
}

/// Starts logging to stderr at `level` (overridden by `RUST_LOG`), as text lines or one JSON
/// object per line (`server.log_format`).
pub fn init_logging_as(level: &str, format: crate::config::LogFormat) {
    install_logging(level, format, std::io::stderr);
}

/// Log lines queued for the log thread before logging waits for it: seconds of the busiest
/// traffic (two lines per message). The queue's slots are allocated up front (~32 bytes
/// each; tracing-appender's default of 128 000 cost 4 MB of RSS).
pub const QUEUED_LOG_LINES: usize = 16 * 1024;

/// Starts `herald serve`'s logging: as [`init_logging_as`], but the lines go out through a
/// thread of their own, so a session or delivery never waits on stderr (a pipe to journald,
/// Docker or a terminal; one `write` per line used to cost an eighth of the async threads'
/// CPU per message, waking the reader each time). Lines queued together leave in one write;
/// none is dropped (past [`QUEUED_LOG_LINES`], logging waits). Keep the guard until serving
/// ends: dropping it writes out what is queued.
pub fn init_server_logging(
    level: &str,
    format: crate::config::LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LOG_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    install_logging(level, format, writer);
    guard
}

/// Installs the global subscriber writing to `writer` (once per process; later calls keep
/// the first).
fn install_logging<W>(level: &str, format: crate::config::LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // hickory-server logs every query it answers at info; keep that out of herald's log.
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(format!("{level},hickory_server=warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init(),
    };
}
