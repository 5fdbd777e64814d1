//! The [`Subsystem`] of each part of the node: how it follows a reload (prepare, then apply)
//! and how it stops. A new subsystem adds its impl here (a few lines; see the module doc).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::backends::ClusterBackend;
use super::{Apply, BoxFuture, Next, Parts, Subsystem};
use crate::config::Config;
use crate::report::TlsReporter;
use crate::report::send::ReportSender;
use crate::signing::Signer;

/// TLS-RPT: the reporter (counts), the sender (mails reports every interval), and with
/// `[cluster]` the task moving counts to the database.
pub(super) struct Reports {
    reporter: Arc<TlsReporter>,
    sender: Arc<ReportSender>,
    sync: Option<tokio::task::JoinHandle<()>>,
}

impl Reports {
    /// Starts the periodic flush (while `[report] enabled`) and the cluster sync.
    pub(super) fn start(
        reporter: Arc<TlsReporter>,
        sender: Arc<ReportSender>,
        cluster: bool,
    ) -> Reports {
        crate::report::spawn_periodic(reporter.clone(), sender.clone());
        let sync = cluster.then(|| crate::report::cluster::spawn_sync(reporter.clone()));
        Reports {
            reporter,
            sender,
            sync,
        }
    }
}

impl Subsystem for Reports {
    fn name(&self) -> &'static str {
        "report"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let sender = self.sender.prepare_reload(&next.cfg, next.signer.clone())?;
        let (this, reporter, cfg) = (self.sender.clone(), self.reporter.clone(), next.cfg.clone());
        Ok(Apply::new(move || {
            this.apply_reload(sender);
            reporter.reload(&cfg);
        }))
    }

    /// Keeps the counts of the last sessions (on disk; with `[cluster]` in the database).
    fn finish(&self) -> BoxFuture<'_> {
        Box::pin(async move {
            if let Err(e) = self.reporter.persist() {
                tracing::error!("tls-rpt: cannot save pending counts: {e}");
            }
            if let Some(sync) = &self.sync {
                sync.abort();
                if let Err(e) = self.reporter.push_to_cluster().await {
                    tracing::warn!("tls-rpt: counts kept on this node until it next starts: {e}");
                }
            }
        })
    }
}

/// The delivery queue (`sink`: where its deliveries report TLS outcomes).
pub(super) struct Queue {
    pub(super) queue: crate::queue::manager::QueueManager,
    pub(super) sink: Arc<dyn crate::tls_policy::TlsSink>,
}

impl Subsystem for Queue {
    fn name(&self) -> &'static str {
        "queue"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let generation = self.queue.prepare_reload(
            next.cfg.clone(),
            next.signer.clone(),
            next.sts.clone(),
            self.sink.clone(),
        )?;
        let queue = self.queue.clone();
        Ok(Apply::new(move || queue.apply_reload(generation)))
    }

    fn drain(&self, grace: Duration) -> BoxFuture<'_> {
        Box::pin(self.queue.shutdown(grace))
    }
}

/// The SMTP submission listeners.
pub(super) struct Inbound(pub(super) Arc<crate::inbound::Running>);

impl Subsystem for Inbound {
    fn name(&self) -> &'static str {
        "inbound"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let sessions = self
            .0
            .prepare_reload(next.cfg.clone(), next.signer.clone())?;
        let listeners = self.0.clone();
        Ok(Apply::new(move || listeners.apply_reload(sessions)))
    }

    fn drain(&self, grace: Duration) -> BoxFuture<'_> {
        Box::pin(async move {
            self.0.shutdown(grace).await;
        })
    }
}

/// Starts the feedback listener when `[feedback] listen` is set.
pub(super) async fn start_feedback(
    parts: &Parts,
    socket: Option<tokio::net::TcpListener>,
) -> anyhow::Result<Option<Feedback>> {
    let cfg = &parts.cfg;
    let tls = match cfg.feedback.listen {
        Some(_) if cfg.tls.cert.exists() || cfg.tls.allow_dev_certs => Some(
            crate::inbound::tls::acceptor(cfg, &parts.path.display().to_string())?,
        ),
        _ => None,
    };
    // The feedback listener's routing table: recipient address or domain → handler. Add a
    // handler here (bounces to a return-path domain, complaints, a mailto unsubscribe
    // address); see `crate::feedback::routes`.
    let routes = crate::feedback::Routes::reports(cfg, parts.backends.reports.clone());
    let listener = crate::feedback::start(cfg.clone(), routes, tls, socket).await?;
    Ok(listener.map(Feedback))
}

/// The DMARC/TLS-RPT report listener (`[feedback]`; its settings need a restart).
pub(super) struct Feedback(crate::feedback::FeedbackListener);

impl Subsystem for Feedback {
    fn name(&self) -> &'static str {
        "feedback"
    }

    fn drain(&self, grace: Duration) -> BoxFuture<'_> {
        Box::pin(self.0.shutdown(grace))
    }
}

/// The authoritative DNS listener (`[dns_server]`): its records follow reloads.
pub(super) struct Dns(pub(super) Arc<crate::dns::authority::DnsListener>);

impl Subsystem for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let zones = self.0.prepare_reload(&next.cfg, &next.keys)?;
        let listener = self.0.clone();
        Ok(Apply::new(move || listener.apply_reload(zones)))
    }
}

/// The records `GET /dns` shows: those of the configuration in force.
pub(super) struct DnsRecords(Arc<RwLock<serde_json::Value>>);

impl DnsRecords {
    pub(super) fn new(cfg: &Config, signer: &Signer) -> DnsRecords {
        let records = crate::dns::records::render_json(cfg, &signer.published_keys());
        DnsRecords(Arc::new(RwLock::new(records)))
    }

    /// `GET /dns`.
    pub(super) fn routes(&self) -> axum::Router {
        let records = self.0.clone();
        axum::Router::new().route(
            "/dns",
            axum::routing::get(move || async move {
                let now = records.read().unwrap_or_else(|p| p.into_inner()).clone();
                axum::Json(now)
            }),
        )
    }
}

impl Subsystem for DnsRecords {
    fn name(&self) -> &'static str {
        "dns records"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let records = crate::dns::records::render_json(&next.cfg, &next.keys);
        let shared = self.0.clone();
        Ok(Apply::new(move || {
            *shared.write().unwrap_or_else(|p| p.into_inner()) = records;
        }))
    }
}

/// `[cluster]`: this node's heartbeat in the registry (liveness, connections, the digest of
/// the configuration in force).
pub(super) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    digest: Arc<Mutex<String>>,
}

impl Heartbeat {
    pub(super) fn start(
        cfg: &Config,
        cluster: &ClusterBackend,
        gauge: crate::inbound::ConnectionGauge,
    ) -> Heartbeat {
        let keep = cfg.smtp.auth_failure_window + cfg.smtp.auth_block;
        let task = crate::cluster::nodes::spawn_heartbeat(
            cluster.db.clone(),
            cluster.node.clone(),
            move || gauge.open(),
            keep,
        );
        Heartbeat {
            task,
            digest: cluster.node.config_digest.clone(),
        }
    }
}

impl Subsystem for Heartbeat {
    fn name(&self) -> &'static str {
        "cluster heartbeat"
    }

    /// The registry shows the configuration in force (a digest that cannot be computed is
    /// warned about, never a reason to refuse the reload).
    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        match crate::cluster::nodes::config_digest(&next.path) {
            Ok(d) => {
                let digest = self.digest.clone();
                Ok(Apply::new(move || {
                    *digest.lock().unwrap_or_else(|p| p.into_inner()) = d;
                }))
            }
            Err(e) => {
                tracing::warn!("cluster: config digest: {e:#}");
                Ok(Apply::nothing())
            }
        }
    }

    fn finish(&self) -> BoxFuture<'_> {
        self.task.abort();
        Box::pin(async {})
    }
}
