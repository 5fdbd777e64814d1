//! Feedback: herald's own mailbox for what receivers send back. Receivers send DMARC
//! aggregate reports (and TLS-RPT reports) to `dmarc@<feedback.domain>` /
//! `tlsrpt@<feedback.domain>`; this listener accepts mail only for the addresses in its
//! routing table ([`routes`]: `550 5.1.1` for anything else, no AUTH, never relays), frames it
//! with the server core every listener shares ([`crate::smtp_server`]), and hands it to the
//! address's handler: reports are parsed ([`parse`]), stored durably before `250`
//! ([`crate::store`]), and turned into per-source classes and a verdict per domain
//! ([`summary`]).

pub(crate) mod bounds;
pub(crate) mod classify;
mod document;
pub(crate) mod parse;
pub(crate) mod routes;
mod session;
pub(crate) mod stream;
pub(crate) mod summary;
pub(crate) mod verify;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub(crate) use routes::{IncomingMail, MailHandler, Routes};

use crate::config::Config;
use crate::smtp_server::{Admission, Limit, Sessions, Slot};

/// What the listener's sessions share.
pub(crate) struct Shared {
    cfg: Arc<Config>,
    routes: Routes,
    tls: Option<TlsAcceptor>,
    admission: Admission,
    rates: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Becomes true when herald shuts down: sessions waiting for a command get `421`.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let f = &self.cfg.feedback;
        self.admission.admit(
            ip,
            Limit {
                max: f.max_connections,
                setting: "feedback.max_connections",
            },
            Limit {
                max: f.max_connections_per_ip,
                setting: "feedback.max_connections_per_ip",
            },
        )
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
pub(crate) async fn bind(cfg: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = cfg.feedback.listen else {
        return Ok(None);
    };
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (feedback.listen): {e}"))?;
    Ok(Some(socket))
}

/// Starts the feedback listener on `socket` (from [`bind`]; `None` when not configured),
/// receiving the mail `routes` has handlers for. `tls` is herald's certificate (`[tls]`,
/// built by the caller, which owns the listeners' TLS) for STARTTLS; without it the listener
/// offers none.
pub(crate) async fn start(
    cfg: Arc<Config>,
    routes: Routes,
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
    tracing::info!(%addr, domain = %cfg.feedback.domain, receives = %routes.describe(),
        "feedback listener: receiving DMARC and TLS reports");
    let sessions = Sessions::new();
    let shared = Arc::new(Shared {
        cfg,
        routes,
        tls,
        admission: Admission::default(),
        rates: Mutex::new(HashMap::new()),
        shutdown: sessions.stopping(),
    });
    sessions.accept(socket, "feedback", move |tcp, peer| {
        let slot = shared.admit(peer.ip());
        session::run(tcp, peer.ip(), shared.clone(), slot)
    });
    Ok(Some(FeedbackListener { sessions }))
}

/// The running report listener, for a clean shutdown.
pub(crate) struct FeedbackListener {
    sessions: Sessions,
}

impl FeedbackListener {
    /// Stops accepting, tells sessions waiting for a command to leave (`421`), and waits up
    /// to `grace` for the others: a report in the middle of its DATA is still stored and
    /// answered `250` (as submission sessions are, see [`crate::inbound`]).
    pub(crate) async fn shutdown(&self, grace: Duration) {
        if !self.sessions.drain(grace).await {
            tracing::warn!("feedback: sessions still running after the grace period; closing them");
        }
    }
}
