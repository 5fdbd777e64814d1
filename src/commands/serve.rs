//! `herald serve`: runs the listeners, the queue and delivery until SIGTERM/SIGINT, then
//! drains both within `[server] grace_period`.
//!
//! Start-up order: configuration, signing keys, spool recovery, delivery, admin, DNS listener,
//! then the SMTP listeners; "herald ready" is logged once everything accepts work (tests and
//! health checks wait for it).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::signing::Signer;
use crate::spool::Spool;

/// Arguments of `herald serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

/// Runs herald until a shutdown signal.
pub async fn run(config: &Path, _args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before anything else: a SIGHUP or SIGTERM from now on is handled, never fatal.
    let mut signals = crate::service::Signals::install()?;
    let cfg = Arc::new(super::load_config(config)?);
    super::init_logging_as(&cfg.server.log_level, cfg.server.log_format);
    crate::inbound::fds::raise_nofile(&cfg, &config.display().to_string())?;
    let signer = Arc::new(Signer::load(&cfg)?);
    let (spool, arrivals) = Spool::open_dir(&cfg.spool_dir())?;

    // [report] the TLS-RPT reporter is the sink of the TLS events delivery and the MTA-STS
    // resolver emit; the report sender mails its reports every interval (and on
    // POST /report/flush) through herald's own mail path.
    let tls_reporter = Arc::new(crate::report::TlsReporter::open(&cfg)?);
    let sts = Arc::new(crate::mta_sts::StsResolver::new(&cfg)?.with_reporter(tls_reporter.clone()));
    let report_sender = Arc::new(crate::report::send::ReportSender::new(
        &cfg,
        spool.clone(),
        signer.clone(),
    )?);
    if cfg.report.enabled {
        crate::report::spawn_periodic(
            tls_reporter.clone(),
            report_sender.clone(),
            cfg.report.interval,
        );
    }

    // [delivery] the queue: recovers the spool, then takes newly stored mail from `arrivals`.
    let queue = crate::queue::manager::QueueManager::start(
        cfg.clone(),
        spool.clone(),
        arrivals,
        signer.clone(),
        sts.clone(),
        tls_reporter.clone(),
    )
    .await?;

    // [feedback] the report store, shared by the report listener and the /dmarc pages.
    let reports = crate::store::open(&cfg)?;
    let feedback_tls = match cfg.feedback.listen {
        Some(_) if cfg.tls.cert.exists() || cfg.tls.allow_dev_certs => Some(
            crate::inbound::tls::acceptor(&cfg, &config.display().to_string())?,
        ),
        _ => None,
    };
    let _feedback = crate::feedback::start(cfg.clone(), reports.clone(), feedback_tls).await?;

    // [admin] the admin HTTP endpoint (health, metrics, queue API, report flush, records).
    if let Some(listen) = cfg.admin.listen {
        let dns_records = crate::dns::records::render_json(&cfg, &signer.published_keys());
        let router = crate::admin::router(queue.clone())
            .merge(crate::report::routes(
                tls_reporter.clone(),
                report_sender.clone(),
            ))
            .route(
                "/dns",
                axum::routing::get(move || async move { axum::Json(dns_records) }),
            )
            .merge(crate::admin::dmarc::routes(cfg.clone(), reports.clone()));
        crate::admin::start(&cfg, listen, router).await?;
    }

    // [dns_server] the authoritative DNS listener, when configured.
    let _dns_listener = crate::dns::authority::start(&cfg, &signer.published_keys()).await?;

    // [inbound] the SMTP listeners, last: mail is accepted only once delivery runs.
    let inbound = crate::inbound::start(
        cfg.clone(),
        &config.display().to_string(),
        signer.clone(),
        spool.clone(),
    )
    .await?;

    tracing::info!("herald ready");
    crate::service::notify_ready();
    // SIGTERM/SIGINT: stop accepting and starting deliveries; let submission sessions and
    // deliveries in flight finish within the grace period (both at once), so a restart neither
    // loses a submission nor repeats a delivery that was made.
    loop {
        match signals.next().await {
            crate::service::SignalRequest::Shutdown => break,
            crate::service::SignalRequest::Reload => {
                crate::service::notify_reloading();
                tracing::warn!(
                    "reload is not implemented yet: the running configuration is kept; restart \
                     herald to apply changes"
                );
                crate::service::notify_ready();
            }
        }
    }
    crate::service::notify_stopping();
    tracing::info!(
        grace = %humantime::format_duration(cfg.server.grace_period),
        "shutting down: no new connections or deliveries; letting those in progress finish"
    );
    tokio::join!(
        inbound.shutdown(cfg.server.grace_period),
        queue.shutdown(cfg.server.grace_period)
    );
    // [report] keep the TLS-RPT counts of the last sessions.
    if let Err(e) = tls_reporter.persist() {
        tracing::error!("tls-rpt: cannot save pending counts: {e}");
    }
    tracing::info!("herald stopped");
    Ok(ExitCode::SUCCESS)
}
