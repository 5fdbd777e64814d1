//! Telling the service manager what herald is doing (systemd `Type=notify`, sd_notify(3)):
//! `READY=1` once every listener accepts work, `RELOADING=1` while a new configuration is
//! read, `STOPPING=1` when shutdown begins. Without `NOTIFY_SOCKET` (not under systemd)
//! each call does nothing.

use sd_notify::NotifyState;

/// Herald accepts work: systemd considers the unit started (and `systemctl start` returns).
pub(crate) fn notify_ready() {
    send(&[NotifyState::Ready, NotifyState::Status("accepting mail")]);
}

/// A reload has begun; follow with [`notify_ready`] when it is over (applied or refused).
pub(crate) fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun: systemd waits for the process to exit.
pub(crate) fn notify_stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining sessions"),
    ]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// What a signal asks herald to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalRequest {
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    Shutdown,
    /// SIGHUP: re-read the configuration (never a reason to exit).
    Reload,
}

/// The process's SIGTERM, SIGINT and SIGHUP handlers, installed once at start-up — before
/// readiness is announced, so a signal that arrives right after `READY=1` is never lost nor
/// left to the default action (which, for SIGHUP, kills the process).
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub(crate) fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub(crate) async fn next(&mut self) -> SignalRequest {
        tokio::select! {
            _ = self.term.recv() => {
                tracing::info!("SIGTERM received");
                SignalRequest::Shutdown
            }
            _ = self.int.recv() => {
                tracing::info!("SIGINT received");
                SignalRequest::Shutdown
            }
            _ = self.hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                SignalRequest::Reload
            }
        }
    }
}
