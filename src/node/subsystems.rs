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
    after: &crate::bounce::AfterDelivery,
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
    let mut routes = crate::feedback::Routes::reports(cfg, parts.backends.reports.clone());
    // Issue 24: bounces to the apps' return-path domains, complaints to the complaint address.
    let bounces: Arc<dyn crate::feedback::MailHandler> = Arc::new(BounceMail(after.clone()));
    for domain in cfg
        .apps
        .values()
        .filter_map(|a| a.return_path_domain.as_deref())
    {
        routes = routes.domain(domain, bounces.clone());
    }
    if let Some(address) = after.complaint_address() {
        routes = routes.address(&address, bounces);
    }
    // [web] the mailto: variant of one-click unsubscribe (installed by `start_web`, first).
    if let Some(oc) = crate::web::unsubscribe::installed()
        && let Some(address) = oc.mailto_address()
    {
        let handler = Arc::new(crate::web::unsubscribe::mailto::MailtoHandler(oc.clone()));
        routes = routes.address(address, handler);
    }
    let listener = crate::feedback::start(cfg.clone(), routes, tls, socket).await?;
    Ok(listener.map(Feedback))
}

/// Starts `[web]` when it has a socket: one-click unsubscribe installed for the SMTP
/// listeners, then the public HTTPS listener and its certificate task.
pub(super) async fn start_web(
    parts: &Parts,
    socket: Option<tokio::net::TcpListener>,
    suppressions: crate::suppress::Suppressions,
) -> anyhow::Result<Option<Web>> {
    let cfg = &parts.cfg;
    let Some(socket) = socket else {
        return Ok(None);
    };
    let one_click = Arc::new(crate::web::unsubscribe::OneClick::open(cfg, suppressions)?);
    crate::web::unsubscribe::install(one_click.clone());
    let cluster = parts.backends.cluster.as_ref().map(|c| c.db.clone());
    Ok(Some(Web(crate::web::start(
        cfg.clone(),
        socket,
        Some(one_click),
        cluster,
    )
    .await?)))
}

/// The public HTTPS listener (`[web]`; its settings need a restart).
pub(super) struct Web(crate::web::Running);

impl Subsystem for Web {
    fn name(&self) -> &'static str {
        "web"
    }

    fn finish(&self) -> BoxFuture<'_> {
        self.0.stop();
        Box::pin(async {})
    }
}

/// Bounces to the return path and ARF complaints (issue 24), on the feedback listener: a VERP
/// address is taken at RCPT only with a valid token.
struct BounceMail(crate::bounce::AfterDelivery);

impl crate::feedback::MailHandler for BounceMail {
    fn accept_rcpt(&self, rcpt: &str) -> Result<(), crate::reply::Reply> {
        match self.0.rcpt(rcpt) {
            Some(Ok(_)) => Ok(()),
            Some(Err(refusal)) => Err(refusal),
            None => Err(crate::reply::Reply::new(
                550,
                "5.1.1",
                format!("<{rcpt}>: no such address here"),
            )),
        }
    }

    fn handle(
        &self,
        mail: crate::feedback::IncomingMail,
    ) -> crate::feedback::routes::HandlerFuture<'_> {
        Box::pin(async move {
            let boxes: Vec<_> = mail
                .rcpts
                .iter()
                .filter_map(|r| self.0.rcpt(r).and_then(Result::ok))
                .collect();
            self.0
                .receive(&mail.client.to_string(), &boxes, &mail.raw)
                .await
        })
    }
}

/// Bounces, complaints, suppression and the guard (issue 24): rules, thresholds and the
/// apps' switches follow reloads.
pub(super) struct AfterDelivery(pub(super) crate::bounce::AfterDelivery);

impl Subsystem for AfterDelivery {
    fn name(&self) -> &'static str {
        "bounce"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let (after, cfg) = (self.0.clone(), next.cfg.clone());
        Ok(Apply::new(move || after.reload(cfg)))
    }
}

/// Starts the after-delivery subsystem and plugs it into the queue (VERP return paths, held
/// apps, classes); bounces are passed on through the spool with the null sender.
pub(super) async fn start_after_delivery(
    parts: &Parts,
) -> anyhow::Result<crate::bounce::AfterDelivery> {
    let cfg = &parts.cfg;
    let node = cfg
        .cluster
        .as_ref()
        .map_or_else(|| cfg.server.hostname.clone(), |c| c.node_id());
    let db = parts.backends.cluster.as_ref().map(|c| c.db.clone());
    let after =
        crate::bounce::AfterDelivery::start(cfg.clone(), db, parts.events.clone(), node).await?;
    parts.queue.attach_after_delivery(after.clone());
    let own = crate::own_mail::OwnMail::new(
        parts.backends.spool.clone(),
        parts.signer.clone(),
        &cfg.server.hostname,
    );
    after.set_forwarder(Arc::new(move |to, raw| {
        let own = own.clone();
        Box::pin(async move {
            own.send(crate::own_mail::Message {
                mail_from: String::new(),
                recipients: vec![to],
                bytes: raw,
                tls_report: false,
                if_unsigned: crate::own_mail::IfUnsigned::SendAnyway,
            })
            .await
            .map(|_| ())
            .map_err(|e| Box::new(e) as crate::bounce::service::ForwardError)
        })
    }));
    Ok(after)
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

/// The message history (`[history]`): at shutdown its writer writes the events still queued.
pub(super) struct History {
    pub(super) history: crate::history::History,
    pub(super) grace: Duration,
}

impl Subsystem for History {
    fn name(&self) -> &'static str {
        "history"
    }

    /// In `finish`, not `drain`: the deliveries and sessions that end during the drain emit
    /// their events up to its last moment; only after it is nothing left to emit.
    fn finish(&self) -> BoxFuture<'_> {
        Box::pin(async move {
            self.history.flush(self.grace).await;
        })
    }
}

/// The webhook senders (`[webhooks]`, each app's `webhook_url` / `webhook_secret`): they
/// follow reloads.
pub(super) struct Webhooks(pub(super) crate::webhook::Webhooks);

impl Subsystem for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
        let prepared = self.0.prepare_reload(&next.cfg)?;
        let hooks = self.0.clone();
        Ok(Apply::new(move || hooks.apply_reload(prepared)))
    }
}
