//! `herald serve`: runs the listeners, the queue and delivery until SIGTERM/SIGINT, then
//! drains both within `[server] grace_period`.
//!
//! Start-up order: configuration, then every listen socket is bound (SMTP, admin, feedback,
//! DNS) so a busy port fails fast with nothing started; then signing keys, spool recovery and
//! delivery; then the listeners start serving, the SMTP ones last: mail is accepted only once
//! delivery runs. "herald ready" is logged once everything accepts work (tests and health
//! checks wait for it).

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
    // Dropped last (declared early): lines logged while shutting down still go out.
    let _log = super::init_server_logging(&cfg.server.log_level, cfg.server.log_format);
    crate::inbound::fds::raise_nofile(&cfg, &config.display().to_string())?;
    // Every listen socket first: a busy port fails here, before any key, certificate, spool
    // recovery or delivery. Bound sockets queue connections in the kernel until served.
    let smtp_sockets = crate::inbound::bind(&cfg).await?;
    let admin_socket = match cfg.admin.listen {
        Some(listen) => Some(crate::admin::bind(listen).await?),
        None => None,
    };
    let feedback_socket = crate::feedback::bind(&cfg).await?;
    let dns_sockets = crate::dns::authority::bind(&cfg).await?;
    let signer = Arc::new(Signer::load(&cfg)?);
    // [cluster] the shared database, its schema brought up to date before anything uses it;
    // the spool is then the cluster's table (messages being received still go to local files).
    // Rate limits and AUTH failures are then counted there too, and the node registers itself.
    let mut cluster_db = None;
    let (spool, arrivals) = match &cfg.cluster {
        Some(cluster) => {
            let db = crate::cluster::open(cluster).await?;
            cluster_db = Some(db.clone());
            let backend = crate::spool::PgBackend::open(db, &cfg.spool_dir())?;
            Spool::open(Arc::new(backend))?
        }
        None => Spool::open_dir(&cfg.spool_dir())?,
    };
    let node_info = match &cluster_db {
        Some(db) => {
            let info = crate::cluster::nodes::NodeInfo::new(config)?;
            crate::cluster::nodes::register(db, &info).await?;
            Some(info)
        }
        None => None,
    };
    let counters = cluster_db.as_ref().map(|db| {
        let limits = Arc::new(crate::cluster::limits::PgLimits::new(db.clone()));
        crate::inbound::ClusterCounters {
            rates: limits.clone(),
            failures: limits,
        }
    });

    // [report] the TLS-RPT reporter is the sink of the TLS events delivery and the MTA-STS
    // resolver emit; the report sender mails its reports every interval (and on
    // POST /report/flush) through herald's own mail path.
    // With [cluster] the counts move to the database and one node sends each report.
    let tls_reporter = Arc::new(match &cluster_db {
        Some(db) => crate::report::TlsReporter::open(&cfg)?.with_cluster(db.clone()),
        None => crate::report::TlsReporter::open(&cfg)?,
    });
    let report_sync = cluster_db
        .as_ref()
        .map(|_| crate::report::cluster::spawn_sync(tls_reporter.clone()));
    let sts = Arc::new(crate::mta_sts::StsResolver::new(&cfg)?.with_reporter(tls_reporter.clone()));
    let sts_in_force = std::sync::Mutex::new(sts.clone());
    let report_sender = Arc::new(crate::report::send::ReportSender::new(
        &cfg,
        spool.clone(),
        signer.clone(),
    )?);
    // Runs while `[report] enabled` (a reload may turn it on or off).
    crate::report::spawn_periodic(tls_reporter.clone(), report_sender.clone());

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
    let feedback =
        crate::feedback::start(cfg.clone(), reports.clone(), feedback_tls, feedback_socket).await?;

    // `herald reload` asks through the admin endpoint; the main loop below does the work.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadReply>(4);

    // [admin] the admin HTTP endpoint (health, metrics, queue API, report flush, records).
    // `/dns` shows the records of the configuration in force (a reload replaces them).
    let dns_records = Arc::new(std::sync::RwLock::new(crate::dns::records::render_json(
        &cfg,
        &signer.published_keys(),
    )));
    if let (Some(listen), Some(socket)) = (cfg.admin.listen, admin_socket) {
        let dns_records = dns_records.clone();
        let router = crate::admin::router(queue.clone())
            .merge(crate::report::routes(
                tls_reporter.clone(),
                report_sender.clone(),
            ))
            .route(
                "/dns",
                axum::routing::get(move || async move {
                    let records = dns_records
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    axum::Json(records)
                }),
            )
            .merge(crate::admin::dmarc::routes(cfg.clone(), reports.clone()))
            .route(
                "/reload",
                axum::routing::post(move || reload_route(reload_tx.clone())),
            );
        crate::admin::start(&cfg, listen, socket, router).await?;
    }

    // [dns_server] the authoritative DNS listener, when configured.
    let dns_listener =
        crate::dns::authority::start(&cfg, &signer.published_keys(), dns_sockets).await?;

    // [inbound] the SMTP listeners, last: mail is accepted only once delivery runs.
    let inbound = crate::inbound::start(
        cfg.clone(),
        &config.display().to_string(),
        signer.clone(),
        spool.clone(),
        smtp_sockets,
        counters,
    )
    .await?;
    let heartbeat = match (&cluster_db, &node_info) {
        (Some(db), Some(info)) => {
            let gauge = inbound.connections();
            let keep = cfg.smtp.auth_failure_window + cfg.smtp.auth_block;
            Some(crate::cluster::nodes::spawn_heartbeat(
                db.clone(),
                info.clone(),
                move || gauge.open(),
                keep,
            ))
        }
        _ => None,
    };

    tracing::info!("herald ready");
    crate::service::notify_ready();
    // SIGTERM/SIGINT: stop accepting and starting deliveries; let submission sessions and
    // deliveries in flight finish within the grace period (both at once), so a restart neither
    // loses a submission nor repeats a delivery that was made.
    // SIGHUP and `herald reload` re-read the file; a bad one is refused and the running kept.
    let mut running_cfg = cfg.clone();
    loop {
        let answer_to = tokio::select! {
            request = signals.next() => match request {
                crate::service::SignalRequest::Shutdown => break,
                crate::service::SignalRequest::Reload => None,
            },
            Some(reply) = reload_rx.recv() => Some(reply),
        };
        crate::service::notify_reloading();
        let parts = Reloadable {
            inbound: &inbound,
            queue: &queue,
            sts: &sts_in_force,
            tls_reporter: &tls_reporter,
            report_sender: &report_sender,
            dns_listener: dns_listener.as_ref(),
            dns_records: &dns_records,
        };
        let outcome = reload(config, &mut running_cfg, &parts);
        if let (Ok(_), Some(info)) = (&outcome, &node_info) {
            // The registry shows the configuration now in force.
            match crate::cluster::nodes::config_digest(config) {
                Ok(d) => *info.config_digest.lock().unwrap_or_else(|p| p.into_inner()) = d,
                Err(e) => tracing::warn!("cluster: config digest: {e:#}"),
            }
        }
        crate::service::notify_ready();
        if let Some(reply) = answer_to {
            let _ = reply.send(outcome);
        }
    }
    crate::service::notify_stopping();
    let grace = running_cfg.server.grace_period;
    tracing::info!(
        grace = %humantime::format_duration(grace),
        "shutting down: no new connections or deliveries; letting those in progress finish"
    );
    let feedback_drained = async {
        if let Some(listener) = feedback {
            listener.shutdown(grace).await;
        }
    };
    tokio::join!(
        inbound.shutdown(grace),
        queue.shutdown(grace),
        feedback_drained
    );
    if let Some(h) = heartbeat {
        h.abort();
    }
    // [report] keep the TLS-RPT counts of the last sessions.
    if let Err(e) = tls_reporter.persist() {
        tracing::error!("tls-rpt: cannot save pending counts: {e}");
    }
    if let Some(sync) = report_sync {
        sync.abort();
        if let Err(e) = tls_reporter.push_to_cluster().await {
            tracing::warn!("tls-rpt: counts kept on this node until it next starts: {e}");
        }
    }
    tracing::info!("herald stopped");
    Ok(ExitCode::SUCCESS)
}

/// Where the answer to one `POST /reload` goes: `Ok(summary)` or `Err(why it was refused)`.
type ReloadReply = tokio::sync::oneshot::Sender<Result<String, String>>;

/// What a reload reaches in the running herald.
struct Reloadable<'a> {
    inbound: &'a crate::inbound::Running,
    queue: &'a crate::queue::manager::QueueManager,
    /// The MTA-STS resolver in force; replaced when `[mta_sts]`, `[dns]` or the TLS
    /// requirements of `[delivery]` change (its policy cache is on disk and carries over).
    sts: &'a std::sync::Mutex<Arc<crate::mta_sts::StsResolver>>,
    tls_reporter: &'a Arc<crate::report::TlsReporter>,
    report_sender: &'a Arc<crate::report::send::ReportSender>,
    dns_listener: Option<&'a crate::dns::authority::DnsListener>,
    dns_records: &'a std::sync::RwLock<serde_json::Value>,
}

/// Re-reads the config file and applies it to new sessions, deliveries, reports and the DNS
/// listener. Everything that can fail is put together first; only when all of it succeeded is
/// any of it put in force, so on any error nothing changes.
fn reload(
    config: &Path,
    running: &mut Arc<crate::config::Config>,
    to: &Reloadable<'_>,
) -> Result<String, String> {
    let attempt = || -> anyhow::Result<(Arc<crate::config::Config>, crate::reload::Changes)> {
        let new = Arc::new(super::load_config(config)?);
        let signer = Arc::new(Signer::load(&new)?);
        let changes = crate::reload::diff(running, &new);
        let reporter: Arc<dyn crate::tls_policy::TlsSink> = to.tls_reporter.clone();
        let current_sts = to.sts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let sts = if crate::reload::sts_changed(running, &new) {
            Arc::new(crate::mta_sts::StsResolver::new(&new)?.with_reporter(reporter.clone()))
        } else {
            current_sts
        };
        let delivery =
            to.queue
                .prepare_reload(new.clone(), signer.clone(), sts.clone(), reporter)?;
        let sender = to.report_sender.prepare_reload(&new, signer.clone())?;
        let keys = signer.published_keys();
        let zones = match to.dns_listener {
            Some(listener) => Some((listener, listener.prepare_reload(&new, &keys)?)),
            None => None,
        };
        let records = crate::dns::records::render_json(&new, &keys);
        // The last step that can fail; it puts the new sessions' settings in force itself.
        to.inbound.reload(new.clone(), signer)?;
        // From here on nothing fails.
        *to.sts.lock().unwrap_or_else(|p| p.into_inner()) = sts;
        to.queue.apply_reload(delivery);
        to.report_sender.apply_reload(sender);
        to.tls_reporter.reload(&new);
        if let Some((listener, zones)) = zones {
            listener.apply_reload(zones);
        }
        *to.dns_records.write().unwrap_or_else(|p| p.into_inner()) = records;
        Ok((new, changes))
    };
    match attempt() {
        Ok((new, changes)) => {
            *running = new;
            for key in &changes.need_restart {
                tracing::warn!(setting = %key, "changed in the file; takes effect after a restart");
            }
            let summary = changes.summary();
            tracing::info!(changes = %summary, "configuration reloaded");
            crate::metrics::reload("applied");
            Ok(summary)
        }
        Err(e) => {
            let why = format!("{e:#}");
            tracing::error!(error = %why, "reload refused: the running configuration is kept");
            crate::metrics::reload("refused");
            Err(why)
        }
    }
}

/// `POST /reload`: hands the request to the main loop and answers with its outcome.
async fn reload_route(tx: tokio::sync::mpsc::Sender<ReloadReply>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let outcome = match tx.send(reply).await {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| Err("herald is shutting down".into())),
        Err(_) => Err("herald is shutting down".into()),
    };
    let (status, ok, message) = match outcome {
        Ok(m) => (axum::http::StatusCode::OK, true, m),
        Err(m) => (axum::http::StatusCode::CONFLICT, false, m),
    };
    (
        status,
        axum::Json(serde_json::json!({ "ok": ok, "message": message })),
    )
        .into_response()
}
