//! Feedback: herald's own report mailbox. Receivers send DMARC aggregate reports (and TLS-RPT
//! reports) to `dmarc@<feedback.domain>` / `tlsrpt@<feedback.domain>`; this listener accepts
//! mail for those two addresses only (`550 5.1.1` for anything else, no AUTH, never relays),
//! parses it ([`parse`]), stores it durably before `250` ([`crate::store`]), and turns the
//! reports into per-source classes and a verdict per domain ([`summary`]).

pub mod classify;
pub mod parse;
mod session;
pub mod summary;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::store::ReportStore;

/// What the listener's sessions share.
pub(crate) struct Shared {
    cfg: Arc<Config>,
    store: Arc<dyn ReportStore>,
    tls: Option<TlsAcceptor>,
    conns: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
    rates: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Becomes true when herald shuts down: sessions waiting for a command get `421`.
    shutdown: watch::Receiver<bool>,
}

/// Holds one connection slot; released on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut total = self.shared.total.lock().unwrap_or_else(|p| p.into_inner());
        *total = total.saturating_sub(1);
        let mut per_ip = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let f = &self.cfg.feedback;
        let mut total = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_ip = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if *total >= f.max_connections {
            return Err("feedback.max_connections");
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= f.max_connections_per_ip {
            return Err("feedback.max_connections_per_ip");
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            shared: self.clone(),
            ip,
        })
    }

    /// Whether `ip` may start another mail this hour (checked at MAIL FROM, so a flood is
    /// refused before its data comes). Only mails whose data was received count
    /// ([`Shared::count_mail`]): a sender that opens transactions and resets them uses up
    /// nothing. Concurrent sessions from one address can pass the limit by at most
    /// `max_connections_per_ip - 1`.
    fn mail_allowed(&self, ip: IpAddr) -> bool {
        self.hourly(ip, |count, limit| *count < limit)
    }

    /// Counts one mail received from `ip` (its data complete) in its hourly window.
    fn count_mail(&self, ip: IpAddr) {
        self.hourly(ip, |count, _| {
            *count += 1;
            true
        });
    }

    /// Runs `f` on `ip`'s count in the current hourly window and the limit (`true` when the
    /// limit is off).
    fn hourly(&self, ip: IpAddr, f: impl FnOnce(&mut u32, u32) -> bool) -> bool {
        let limit = self.cfg.feedback.max_mails_per_hour_per_ip;
        if limit == 0 {
            return true;
        }
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if rates.len() > 100_000 {
            rates.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(3600));
        }
        let entry = rates.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(3600) {
            *entry = (now, 0);
        }
        f(&mut entry.1, limit)
    }
}

/// Binds `[feedback] listen` when set, before anything else starts (a busy port fails
/// start-up fast); [`start`] accepts on it.
pub async fn bind(cfg: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = cfg.feedback.listen else {
        return Ok(None);
    };
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (feedback.listen): {e}"))?;
    Ok(Some(socket))
}

/// Starts the feedback listener on `socket` (from [`bind`]; `None` when not configured).
/// `tls` is herald's certificate (`[tls]`, built by the caller, which owns the listeners'
/// TLS) for STARTTLS; without it the listener offers none.
pub async fn start(
    cfg: Arc<Config>,
    store: Arc<dyn ReportStore>,
    tls: Option<TlsAcceptor>,
    socket: Option<TcpListener>,
) -> anyhow::Result<Option<FeedbackListener>> {
    let (Some(addr), Some(socket)) = (cfg.feedback.listen, socket) else {
        return Ok(None);
    };
    if tls.is_none() {
        tracing::warn!(
            "feedback: no certificate at tls.cert; the report listener offers no STARTTLS"
        );
    }
    tracing::info!(%addr, domain = %cfg.feedback.domain, "feedback listener: receiving DMARC and TLS reports");
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (sessions_tx, sessions) = mpsc::channel(1);
    let shared = Arc::new(Shared {
        cfg,
        store,
        tls,
        conns: Mutex::new(HashMap::new()),
        total: Mutex::new(0),
        rates: Mutex::new(HashMap::new()),
        shutdown,
    });
    Ok(Some(FeedbackListener {
        accepting: std::sync::Mutex::new(Some(tokio::spawn(accept_loop(
            socket,
            shared,
            sessions_tx,
        )))),
        shutdown: shutdown_tx,
        sessions: tokio::sync::Mutex::new(sessions),
    }))
}

/// The running report listener, for a clean shutdown.
pub struct FeedbackListener {
    accepting: std::sync::Mutex<Option<JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
    /// Yields `None` once every session (each holding a sender) has ended.
    sessions: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl FeedbackListener {
    /// Stops accepting, tells sessions waiting for a command to leave (`421`), and waits up
    /// to `grace` for the others: a report in the middle of its DATA is still stored and
    /// answered `250` (as submission sessions are, see [`crate::inbound`]).
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let accepting = self
            .accepting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(accepting) = accepting {
            let _ = accepting.await;
        }
        let mut sessions = self.sessions.lock().await;
        if tokio::time::timeout(grace, sessions.recv()).await.is_err() {
            tracing::warn!("feedback: sessions still running after the grace period; closing them");
        }
    }
}

/// Resolves once herald shuts down (at once if it already is).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn accept_loop(socket: TcpListener, shared: Arc<Shared>, sessions: mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "feedback: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopping(&mut shutdown) => return,
        };
        let _ = tcp.set_nodelay(true);
        let slot = shared.admit(peer.ip());
        let shared = shared.clone();
        let session = sessions.clone();
        tokio::spawn(async move {
            session::run(tcp, peer.ip(), shared, slot).await;
            drop(session);
        });
    }
}
