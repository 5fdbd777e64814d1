//! [`Node::start`]: builds a running node from a configuration, in the order the module doc
//! gives; the subsystems are started, and registered, in the block marked `SUBSYSTEMS`.

use std::path::Path;
use std::sync::Arc;

use super::backends::Backends;
use super::running::Running;
use super::sockets::Sockets;
use super::{Subsystem, subsystems};
use crate::config::Config;
use crate::events::EventHub;
use crate::mta_sts::StsResolver;
use crate::queue::manager::QueueManager;
use crate::report::TlsReporter;
use crate::report::send::ReportSender;
use crate::signing::Signer;
use crate::tls_policy::TlsSink;

/// Starts herald's subsystems from a configuration.
pub struct Node;

/// What the subsystems are started from (and may keep a clone of).
pub struct Parts {
    /// The configuration file.
    pub path: std::path::PathBuf,
    /// The configuration at start.
    pub cfg: Arc<Config>,
    /// The signing keys.
    pub signer: Arc<Signer>,
    /// Spool, report store, cluster database.
    pub backends: Backends,
    /// Every event about a recipient is emitted here (history, webhooks, guards subscribe).
    pub events: EventHub,
    /// The TLS-RPT reporter: the sink of the TLS outcomes delivery and MTA-STS emit.
    pub reporter: Arc<TlsReporter>,
    /// Mails the TLS-RPT reports.
    pub report_sender: Arc<ReportSender>,
    /// The MTA-STS resolver at start.
    pub sts: Arc<StsResolver>,
    /// The delivery queue.
    pub queue: QueueManager,
    /// The admin endpoint's routes, merged before it starts (so behind its token).
    pub routes: axum::Router,
}

impl Node {
    /// Binds every socket, opens the backends, starts every subsystem; returns once herald
    /// accepts work (logged as `event = "ready"`).
    pub async fn start(path: &Path, cfg: Config) -> anyhow::Result<Running> {
        let cfg = Arc::new(cfg);
        let file = path.display().to_string();
        crate::inbound::fds::raise_nofile(&cfg, &file)?;
        let mut sockets = Sockets::bind(&cfg).await?;
        let signer = Arc::new(Signer::load(&cfg)?);
        let mut backends = Backends::open(&cfg, path).await?;
        let mut node = Vec::<Box<dyn Subsystem>>::new();
        // [history] subscribes to the event hub before anything can emit (the queue may settle
        // recovered mail at once); its /messages pages and the webhooks start below.
        let history =
            crate::history::start(&cfg, backends.cluster.as_ref().map(|c| c.db.clone())).await?;

        // [report] counts TLS outcomes; with [cluster] the counts move to the database and one
        // node sends each report. The sender mails reports every interval through the spool.
        let reporter = Arc::new(match &backends.cluster {
            Some(c) => TlsReporter::open(&cfg)?.with_cluster(c.db.clone()),
            None => TlsReporter::open(&cfg)?,
        });
        let sink: Arc<dyn TlsSink> = reporter.clone();
        let sts = Arc::new(StsResolver::new(&cfg)?.with_reporter(sink.clone()));
        let report_sender = Arc::new(ReportSender::new(
            &cfg,
            backends.spool.clone(),
            signer.clone(),
        )?);
        node.push(Box::new(subsystems::Reports::start(
            reporter.clone(),
            report_sender.clone(),
            backends.cluster.is_some(),
        )));

        // [delivery] the queue recovers the spool, then takes newly stored mail.
        let arrivals = backends
            .arrivals
            .take()
            .ok_or_else(|| anyhow::anyhow!("the spool's arrivals were already taken"))?;
        let queue = QueueManager::start(
            cfg.clone(),
            backends.spool.clone(),
            arrivals,
            signer.clone(),
            sts.clone(),
            sink.clone(),
        )
        .await?;
        if let Some(c) = &backends.cluster {
            // Traffic shaping: push-backs shared by every node (issue 29).
            crate::shaping::shared::start(c.db.clone(), crate::shaping::Shaper::new(&cfg));
        }
        node.push(Box::new(subsystems::Queue {
            queue: queue.clone(),
            sink: sink.clone(),
        }));

        let mut parts = Parts {
            path: path.to_path_buf(),
            routes: crate::admin::router(queue.clone()).merge(crate::report::routes(
                reporter.clone(),
                report_sender.clone(),
            )),
            cfg,
            signer,
            backends,
            events: crate::events::hub().clone(),
            reporter,
            report_sender,
            sts: sts.clone(),
            queue,
        };
        let cfg = parts.cfg.clone();

        // ---- SUBSYSTEMS: start a new one here and `node.push` it (see the module doc). ----
        // [bounce] bounces, complaints, the suppression list and the per-app guard.
        let after = subsystems::start_after_delivery(&parts).await?;
        parts.routes = std::mem::take(&mut parts.routes)
            .merge(crate::suppress::admin::routes(after.suppressions.clone()))
            .merge(crate::guard::admin::routes(
                after.guard.clone(),
                cfg.apps.keys().cloned().collect(),
            ));
        node.push(Box::new(subsystems::AfterDelivery(after.clone())));
        // [web] the public HTTPS listener (ACME certificates, hosted MTA-STS, unsubscribe
        // pages); one-click unsubscribe (recording into the suppression list) is installed
        // before the SMTP listeners add its headers and the feedback listener routes its
        // mailto: address.
        if let Some(web) =
            subsystems::start_web(&parts, sockets.web.take(), after.suppressions.clone()).await?
        {
            node.push(Box::new(web));
        }
        // [feedback] the report listener (DMARC and TLS-RPT reports into the store; bounces
        // and complaints to the after-delivery subsystem).
        if let Some(feedback) =
            subsystems::start_feedback(&parts, sockets.feedback.take(), &after).await?
        {
            node.push(Box::new(feedback));
        }
        // /dmarc pages over the report store; /dns shows the records in force.
        parts.routes = std::mem::take(&mut parts.routes).merge(crate::admin::dmarc::routes(
            cfg.clone(),
            parts.backends.reports.clone(),
        ));
        let records = subsystems::DnsRecords::new(&cfg, &parts.signer);
        parts.routes = std::mem::take(&mut parts.routes).merge(records.routes());
        node.push(Box::new(records));
        // [history] /messages (search, timelines); [webhooks] a sender per app with a webhook.
        parts.routes = std::mem::take(&mut parts.routes)
            .merge(crate::admin::messages::routes(history.clone()));
        if let Some(h) = &history {
            node.push(Box::new(subsystems::Webhooks(crate::webhook::start(
                &cfg, h,
            )?)));
            node.push(Box::new(subsystems::History {
                history: h.clone(),
                grace: cfg.server.grace_period,
            }));
        }
        // ---- end of SUBSYSTEMS ----

        // [admin] the admin endpoint, with every route above and `POST /reload`.
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        if let (Some(listen), Some(socket)) = (cfg.admin.listen, sockets.admin.take()) {
            let routes =
                std::mem::take(&mut parts.routes).merge(super::running::reload_routes(reload_tx));
            crate::admin::start(&cfg, listen, socket, routes).await?;
        }
        // [dns_server] the authoritative DNS listener.
        let keys = parts.signer.published_keys();
        if let Some(dns) = crate::dns::authority::start(&cfg, &keys, sockets.dns.take()).await? {
            node.push(Box::new(subsystems::Dns(Arc::new(dns))));
        }
        // [inbound] the SMTP listeners, last: mail is accepted only once delivery runs.
        let inbound = crate::inbound::start(
            cfg.clone(),
            &file,
            parts.signer.clone(),
            parts.backends.spool.clone(),
            sockets.smtp,
            parts.backends.cluster_counters(),
        )
        .await?;
        inbound.attach_after_delivery(after.clone());
        let gauge = inbound.connections();
        node.push(Box::new(subsystems::Inbound(Arc::new(inbound))));
        // [cluster] the heartbeat: this node's liveness, connections and config digest.
        if let Some(c) = &parts.backends.cluster {
            node.push(Box::new(subsystems::Heartbeat::start(&cfg, c, gauge)));
        }

        tracing::info!(event = "ready", "herald ready");
        crate::service::notify_ready();
        Ok(Running::new(parts, sink, node, reload_rx))
    }
}
