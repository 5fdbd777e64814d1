//! herald's public HTTPS face (`[web]`): a listener separate from the loopback admin
//! endpoint, with ACME certificates ([`acme`]) for every name it serves, hosting the MTA-STS
//! policies of the business's own domains ([`hosted_sts`]) and the one-click unsubscribe
//! pages ([`unsubscribe`]).
//!
//! Each connection gets `[web] request_timeout` for everything (handshake, request, answer),
//! request bodies are capped at `[web] max_body`, and a TLS-ALPN-01 validation handshake
//! (ALPN `acme-tls/1`) is closed right after the handshake, as RFC 8737 asks.

pub(crate) mod acme;
pub(crate) mod certs;
pub(crate) mod hosted_sts;
mod http;
pub(crate) mod names;
pub(crate) mod pages;
pub(crate) mod shared;
pub(crate) mod unsubscribe;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use self::certs::{ACME_TLS_ALPN, CertResolver};
use self::unsubscribe::OneClick;
use crate::config::Config;

/// Most connections the public listener holds at once; one beyond is closed at accept (counted
/// in herald's start-up check, [`crate::inbound::fds`], so it cannot reach the spool's reserve).
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// Binds `[web] listen` (before anything else starts, so a busy port fails start-up fast).
pub(crate) async fn bind(cfg: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(listen) = cfg.web.listen else {
        return Ok(None);
    };
    TcpListener::bind(listen)
        .await
        .map(Some)
        .map_err(|e| anyhow::anyhow!("web.listen: cannot listen on {listen}: {e}"))
}

/// The running public listener and certificate task ([`Running::stop`] ends both).
pub(crate) struct Running {
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting and stops the certificate task.
    pub(crate) fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the listener on `socket` and the certificate task; with `cluster` (the cluster's
/// database) the certificate is shared by every node ([`shared`]).
pub(crate) async fn start(
    cfg: Arc<Config>,
    socket: TcpListener,
    one_click: Option<Arc<OneClick>>,
    cluster: Option<crate::cluster::Db>,
) -> anyhow::Result<Running> {
    crate::trust::install_default_provider();
    let certs = Arc::new(CertResolver::default());
    let share = match cluster {
        Some(db) => Some(shared::SharedCert::open(db).await?),
        None => None,
    };
    let acme = acme::Acme::new(cfg.clone(), certs.clone(), share);
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    tls.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let router = pages::router(pages::Pages {
        cfg: cfg.clone(),
        resolver: Arc::new(crate::resolver::authenticator(&cfg.dns)?),
        one_click,
    });
    let listen = socket.local_addr()?;
    tracing::info!(%listen, names = ?names::wanted(&cfg), "web: public HTTPS listener");
    let timeout = cfg.web.request_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let serve = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match socket.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("web: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "web: connection refused: too many connections");
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let served = tokio::time::timeout(timeout, serve_one(acceptor, router, tcp, peer));
                if served.await.is_err() {
                    tracing::debug!(%peer, "web: connection closed at the request timeout");
                }
            });
        }
    });
    let wanted = names::wanted(&cfg);
    let renew = tokio::spawn(acme.run(wanted));
    Ok(Running {
        tasks: vec![serve, renew],
    })
}

/// One connection: TLS, then HTTP/1.1 (or, for an ACME validation, nothing after the
/// handshake).
async fn serve_one(
    acceptor: TlsAcceptor,
    router: axum::Router,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%peer, "web: TLS handshake failed: {e}");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        tracing::debug!(%peer, "web: answered an ACME TLS-ALPN-01 validation");
        return;
    }
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(5))
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(tls), service);
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "web: connection ended: {e}");
    }
}
