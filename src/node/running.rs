//! [`Running`]: the started node, reloaded and stopped as one.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Apply, Next, Parts, Subsystem};
use crate::config::Config;
use crate::mta_sts::StsResolver;
use crate::reload::Changes;
use crate::signing::Signer;
use crate::tls_policy::TlsSink;

/// Why a reload was refused; the running configuration is kept whole.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ReloadRefused {
    /// What is wrong (the file, key and problem, or the part that could not be prepared).
    pub reason: String,
}

/// A `POST /reload` waiting for its answer.
pub(super) type ReloadRequest = oneshot::Sender<Result<Changes, ReloadRefused>>;

/// The running node.
pub struct Running {
    path: PathBuf,
    cfg: Arc<Config>,
    /// The MTA-STS resolver in force; rebuilt when `[mta_sts]`, `[dns]` or the TLS
    /// requirements of `[delivery]` change (its policy cache is on disk and carries over).
    sts: Arc<StsResolver>,
    /// Where a rebuilt resolver reports TLS failures.
    sink: Arc<dyn TlsSink>,
    /// In start order.
    subsystems: Vec<Box<dyn Subsystem>>,
    reload_requests: mpsc::Receiver<ReloadRequest>,
    parts: Parts,
}

impl Running {
    pub(super) fn new(
        parts: Parts,
        sink: Arc<dyn TlsSink>,
        subsystems: Vec<Box<dyn Subsystem>>,
        reload_requests: mpsc::Receiver<ReloadRequest>,
    ) -> Running {
        Running {
            path: parts.path.clone(),
            cfg: parts.cfg.clone(),
            sts: parts.sts.clone(),
            sink,
            subsystems,
            reload_requests,
            parts,
        }
    }

    /// What the node was started from (its queue, backends, event hub, …).
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// The next `POST /reload` (`None` once the admin endpoint is gone); answer it with
    /// [`Running::reload`]'s outcome.
    pub async fn reload_requested(&mut self) -> Option<ReloadRequest> {
        self.reload_requests.recv().await
    }

    /// Re-reads the configuration file and puts it in force for new sessions, deliveries,
    /// reports and DNS answers, all or nothing: every subsystem prepares first; only when
    /// all succeeded is each applied. Logged as `event = "reloaded"` or
    /// `event = "reload_refused"`.
    pub fn reload(&mut self) -> Result<Changes, ReloadRefused> {
        crate::service::notify_reloading();
        let outcome = self.try_reload();
        match &outcome {
            Ok(changes) => {
                for key in &changes.need_restart {
                    tracing::warn!(setting = %key, "changed in the file; takes effect after a restart");
                }
                let summary = changes.summary();
                tracing::info!(event = "reloaded", changes = %summary, "configuration reloaded");
                crate::metrics::reload("applied");
            }
            Err(e) => {
                tracing::error!(event = "reload_refused", error = %e.reason,
                    "reload refused: the running configuration is kept");
                crate::metrics::reload("refused");
            }
        }
        crate::service::notify_ready();
        outcome
    }

    fn try_reload(&mut self) -> Result<Changes, ReloadRefused> {
        let refused = |e: anyhow::Error| ReloadRefused {
            reason: format!("{e:#}"),
        };
        let cfg = Arc::new(crate::config::Config::load(&self.path).map_err(|e| refused(e.into()))?);
        let signer = Arc::new(Signer::load(&cfg).map_err(refused)?);
        let sts = if crate::reload::sts_changed(&self.cfg, &cfg) {
            Arc::new(
                StsResolver::new(&cfg)
                    .map_err(refused)?
                    .with_reporter(self.sink.clone()),
            )
        } else {
            self.sts.clone()
        };
        let next = Next {
            path: self.path.clone(),
            keys: signer.published_keys(),
            cfg,
            signer,
            sts,
        };
        let mut applies = Vec::<Apply>::with_capacity(self.subsystems.len());
        for s in &self.subsystems {
            let apply = s.prepare_reload(&next).map_err(|e| {
                tracing::debug!(subsystem = s.name(), "reload: cannot prepare");
                refused(e)
            })?;
            applies.push(apply);
        }
        // From here on nothing fails.
        for apply in applies {
            apply.run();
        }
        let changes = crate::reload::diff(&self.cfg, &next.cfg);
        self.sts = next.sts;
        self.cfg = next.cfg;
        Ok(changes)
    }

    /// Stops accepting connections and starting deliveries; lets sessions and deliveries in
    /// flight finish within `[server] grace_period` (all subsystems at once, so a restart
    /// neither loses a submission nor repeats a delivery that was made); then saves state.
    pub async fn shutdown(self) {
        crate::service::notify_stopping();
        let grace = self.cfg.server.grace_period;
        tracing::info!(
            event = "stopping",
            grace = %humantime::format_duration(grace),
            "shutting down: no new connections or deliveries; letting those in progress finish"
        );
        let drains = self.subsystems.iter().map(|s| s.drain(grace));
        join_all(drains).await;
        for s in self.subsystems.iter().rev() {
            s.finish().await;
        }
        tracing::info!(event = "stopped", "herald stopped");
    }
}

/// Awaits every future concurrently (a handful: one per subsystem).
async fn join_all<'a>(futures: impl Iterator<Item = super::BoxFuture<'a>>) {
    let mut pending: Vec<Option<super::BoxFuture<'a>>> = futures.map(Some).collect();
    std::future::poll_fn(|cx| {
        for slot in pending.iter_mut() {
            if slot
                .as_mut()
                .is_some_and(|f| f.as_mut().poll(cx).is_ready())
            {
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// `POST /reload`: hands the request to whoever holds the [`Running`] node and answers with
/// the outcome (`200` applied, `409` refused), JSON `{ok, message}`.
pub(super) fn reload_routes(tx: mpsc::Sender<ReloadRequest>) -> axum::Router {
    axum::Router::new().route(
        "/reload",
        axum::routing::post(move || reload_route(tx.clone())),
    )
}

async fn reload_route(tx: mpsc::Sender<ReloadRequest>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let gone = || ReloadRefused {
        reason: "herald is shutting down".into(),
    };
    let (reply, answer) = oneshot::channel();
    let outcome = match tx.send(reply).await {
        Ok(()) => answer.await.unwrap_or_else(|_| Err(gone())),
        Err(_) => Err(gone()),
    };
    let (status, ok, message) = match outcome {
        Ok(changes) => (axum::http::StatusCode::OK, true, changes.summary()),
        Err(e) => (axum::http::StatusCode::CONFLICT, false, e.reason),
    };
    (
        status,
        axum::Json(serde_json::json!({ "ok": ok, "message": message })),
    )
        .into_response()
}
