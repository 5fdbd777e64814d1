//! Inbound: the submission listeners, the SMTP session, authentication and sender policy.
//!
//! [`bind`] binds every configured listener (before anything else starts, so a busy port
//! fails fast); [`start`] starts accepting on them and returns [`Running`]; `herald serve` calls
//! [`Running::shutdown`] on SIGTERM/SIGINT (through [`crate::node`]) to stop accepting and let sessions finish.

pub(crate) mod auth;
pub(crate) mod auth_cache;
pub(crate) mod fds;
pub(crate) mod hygiene;
mod listener;
mod login;
pub(crate) mod mailbox;
pub(crate) mod policy;
pub(crate) mod rawcheck;
mod requiretls;
mod session;
mod submit;
pub(crate) mod throttle;
pub(crate) mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{AppConfig, Config};
use crate::signing::Signer;
use crate::smtp_server::{Admission, Limit, Sessions, Slot};
use crate::spool::Spool;

/// Which door a client came through; it decides TLS and AUTH rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    /// Port 587 style: plain until STARTTLS, AUTH only after TLS.
    Submission,
    /// Port 465 style: TLS from the first byte.
    Submissions,
    /// No AUTH, for allow-listed networks only.
    Plain,
}

impl ListenerKind {
    fn name(self) -> &'static str {
        match self {
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
            ListenerKind::Plain => "plain",
        }
    }
}

/// Everything sessions share.
pub(crate) struct Shared {
    cfg: Arc<Config>,
    apps: Arc<HashMap<String, AppConfig>>,
    signer: Arc<Signer>,
    spool: Spool,
    tls: Option<TlsAcceptor>,
    // Kept across reloads (counts and limits in force), hence shared between generations.
    throttle: Arc<throttle::Throttle>,
    rates: Arc<crate::ratelimit::AppLimits>,
    admission: Admission,
    // A new one per loaded configuration: a reload invalidates every cached login.
    auth_cache: auth_cache::AuthCache,
    shutdown: watch::Receiver<bool>,
    /// Suppression list and app pauses (issue 24), once plugged in; kept across reloads.
    after: Arc<std::sync::OnceLock<crate::bounce::AfterDelivery>>,
}

impl Shared {
    /// Takes a connection slot, or says which limit is reached.
    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        self.admission.admit(
            ip,
            Limit {
                max: self.cfg.smtp.max_connections,
                setting: "smtp.max_connections",
            },
            Limit {
                max: self.cfg.smtp.max_connections_per_ip,
                setting: "smtp.max_connections_per_ip",
            },
        )
    }
}

/// Counts shared with the other nodes of a cluster (`[cluster]`): per-app rate limits and
/// failed-AUTH counts (implemented on the cluster's database by `crate::cluster::limits`).
pub struct ClusterCounters {
    /// The per-app rate-limit buckets.
    pub rates: Arc<dyn crate::ratelimit::SharedBuckets>,
    /// The failed-AUTH counts.
    pub failures: Arc<dyn throttle::SharedFailures>,
}

/// The number of SMTP connections open on this node, readable while herald runs (the
/// cluster's node registry reports it).
#[derive(Clone)]
pub(crate) struct ConnectionGauge(Admission);

impl ConnectionGauge {
    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.0.open()
    }
}

/// The running listeners and the sessions they started.
pub(crate) struct Running {
    /// The settings new sessions start with; a reload replaces them, sessions in flight keep
    /// theirs.
    current: watch::Sender<Arc<Shared>>,
    config_file: String,
    sessions: Sessions,
}

/// The settings of new sessions after a reload, prepared but not yet in force.
pub(crate) struct NextSessions(Arc<Shared>);

/// The SMTP listen sockets, bound but not yet accepting: connections wait in the kernel
/// backlog until [`start`].
pub(crate) struct Bound(Vec<(ListenerKind, std::net::SocketAddr, TcpListener)>);

/// Binds every configured SMTP listener (`[smtp] submission`, `submissions`, `plain`). Fails
/// with the setting, the address and the OS error when an address cannot be bound.
pub(crate) async fn bind(cfg: &Config) -> anyhow::Result<Bound> {
    let mut bound = Vec::new();
    for (kind, addr) in [
        (ListenerKind::Submission, cfg.smtp.submission),
        (ListenerKind::Submissions, cfg.smtp.submissions),
        (ListenerKind::Plain, cfg.smtp.plain),
    ] {
        let Some(addr) = addr else { continue };
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (smtp.{}): {e}", kind.name()))?;
        bound.push((kind, addr, socket));
    }
    Ok(Bound(bound))
}

/// Starts accepting on the listeners [`bind`] bound. Fails (config error, exit 2) when TLS
/// material is missing.
pub(crate) async fn start(
    cfg: Arc<Config>,
    config_file: &str,
    signer: Arc<Signer>,
    spool: Spool,
    bound: Bound,
    cluster: Option<ClusterCounters>,
) -> anyhow::Result<Running> {
    let needs_tls = cfg.smtp.submission.is_some() || cfg.smtp.submissions.is_some();
    let tls = if needs_tls || cfg.tls.cert.exists() {
        Some(tls::acceptor(&cfg, config_file)?)
    } else {
        None
    };
    let sessions = Sessions::new();
    let shared = Arc::new(Shared {
        apps: Arc::new(cfg.apps.clone().into_iter().collect()),
        throttle: Arc::new(match &cluster {
            Some(c) => throttle::Throttle::new(&cfg.smtp).with_shared(c.failures.clone()),
            None => throttle::Throttle::new(&cfg.smtp),
        }),
        rates: Arc::new(match cluster {
            Some(c) => crate::ratelimit::AppLimits::Shared(c.rates),
            None => crate::ratelimit::AppLimits::Local(policy::RateLimiter::default()),
        }),
        admission: Admission::default(),
        auth_cache: auth_cache::AuthCache::new(cfg.smtp.auth_cache_ttl)?,
        cfg: cfg.clone(),
        signer,
        spool,
        tls,
        shutdown: sessions.stopping(),
        after: Arc::default(),
    });
    let (current, _) = watch::channel(shared.clone());
    for (kind, addr, socket) in bound.0 {
        tracing::info!(listener = kind.name(), %addr, "listening");
        let settings = current.subscribe();
        sessions.accept(socket, kind.name(), move |tcp, peer| {
            listener::connection(tcp, peer.ip(), kind, &settings)
        });
    }
    Ok(Running {
        current,
        config_file: config_file.to_string(),
        sessions,
    })
}

impl Running {
    /// Plugs in the suppression check at RCPT, the pause check at MAIL and the headers of
    /// issue 24 (once; later calls are ignored).
    pub(crate) fn attach_after_delivery(&self, after: crate::bounce::AfterDelivery) {
        let _ = self.current.borrow().after.set(after);
    }

    /// A gauge of the connections open on this node.
    pub(crate) fn connections(&self) -> ConnectionGauge {
        ConnectionGauge(self.current.borrow().admission.clone())
    }

    /// Puts together the settings of new sessions for a reloaded configuration, changing
    /// nothing yet: apps, passwords, senders, rate limits, SMTP limits, DKIM keys (`signer`)
    /// and the certificate. Fails when the new certificate cannot be loaded.
    /// [`Running::apply_reload`] puts them in force.
    pub(crate) fn prepare_reload(
        &self,
        cfg: Arc<Config>,
        signer: Arc<Signer>,
    ) -> anyhow::Result<NextSessions> {
        let old = self.current.borrow().clone();
        let tls = match &old.tls {
            Some(_) => Some(tls::acceptor(&cfg, &self.config_file)?),
            None => None,
        };
        Ok(NextSessions(Arc::new(Shared {
            apps: Arc::new(cfg.apps.clone().into_iter().collect()),
            auth_cache: auth_cache::AuthCache::new(cfg.smtp.auth_cache_ttl)?,
            cfg,
            signer,
            spool: old.spool.clone(),
            tls,
            throttle: old.throttle.clone(),
            rates: old.rates.clone(),
            admission: old.admission.clone(),
            shutdown: old.shutdown.clone(),
            after: old.after.clone(),
        })))
    }

    /// Sessions that start from now on use `next`; those in flight finish with the settings
    /// they started with. Connection counts, AUTH failure counts and rate buckets carry over;
    /// listen addresses are not re-bound (a restart does that).
    pub(crate) fn apply_reload(&self, next: NextSessions) {
        self.current.send_replace(next.0);
    }

    /// Stops accepting, tells idle sessions to leave (`421`), and waits up to `grace` for
    /// sessions in flight. Returns true when every session finished in time.
    pub(crate) async fn shutdown(&self, grace: Duration) -> bool {
        self.sessions.stop_accepting().await;
        tracing::info!(
            event = "listeners_closed",
            "all listeners closed; waiting for sessions in flight"
        );
        let done = self.sessions.wait(grace).await;
        if !done {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "sessions still running after the grace period; closing them"
            );
        }
        done
    }
}
