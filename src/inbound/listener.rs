//! Accept loops: one per listener. Each accepted connection gets a slot (total and per-IP
//! limits, checked before any TLS handshake: `421 4.7.0` on plain-text listeners, an
//! immediate close on implicit TLS) and its own task; the loop stops on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::conn::{Conn, Stream};
use super::session::Session;
use super::{ListenerKind, Shared};

/// Accepts connections until shutdown; every session holds a clone of `sessions`.
pub(super) async fn run(
    listener: TcpListener,
    kind: ListenerKind,
    current: tokio::sync::watch::Receiver<Arc<Shared>>,
    sessions: mpsc::Sender<()>,
) {
    let mut shutdown = current.borrow().shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly rather than spin.
                tracing::warn!(listener = kind.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The settings in force now (a reload swaps them for later connections only).
        let shared = current.borrow().clone();
        let slot = shared.admit(peer.ip());
        let guard = sessions.clone();
        let open = crate::metrics::connection_opened(kind.name());
        tokio::spawn(async move {
            let _guard = guard;
            let _open = open;
            handle(tcp, peer.ip(), kind, shared, slot).await;
        });
    }
    drop(listener);
    tracing::info!(listener = kind.name(), "stopped accepting");
}

async fn handle(
    tcp: TcpStream,
    ip: std::net::IpAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    slot: Result<super::ConnSlot, &'static str>,
) {
    let host = shared.cfg.server.hostname.clone();
    // Limits first, before any TLS: a refused connection holds its descriptor only as long
    // as it takes to say so.
    let _slot = match slot {
        Ok(s) => s,
        Err(limit) => {
            tracing::info!(client = %ip, limit, listener = kind.name(), "refused: too many connections");
            if kind == ListenerKind::Submissions {
                // No TLS yet to carry a reply: close at once (the client sees a reset
                // handshake and retries later).
                return;
            }
            let mut conn = Conn::new(Stream::Plain(tcp));
            conn.queue(
                format!("421 4.7.0 {host} too many connections ({limit}); try again later\r\n")
                    .as_bytes(),
            );
            conn.close().await;
            return;
        }
    };
    let mut conn = match kind {
        ListenerKind::Submissions => {
            let Some(acceptor) = shared.tls.as_ref() else {
                return;
            };
            let handshake =
                tokio::time::timeout(shared.cfg.smtp.tls_handshake_timeout, acceptor.accept(tcp))
                    .await;
            match handshake {
                Ok(Ok(tls)) => Conn::new(Stream::Tls(Box::new(tls))),
                Ok(Err(e)) => {
                    tracing::info!(client = %ip, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(client = %ip, "TLS handshake timed out (smtp.tls_handshake_timeout)");
                    return;
                }
            }
        }
        _ => Conn::new(Stream::Plain(tcp)),
    };
    if kind == ListenerKind::Plain
        && !shared
            .cfg
            .smtp
            .plain_networks
            .iter()
            .any(|n| n.contains(&ip))
    {
        tracing::info!(client = %ip, "refused: not in smtp.plain_networks");
        conn.queue(
            format!(
                "554 5.7.1 {host} {ip} is not allowed on this listener; submit on the \
                 submission port with AUTH\r\n"
            )
            .as_bytes(),
        );
        conn.close().await;
        return;
    }
    Session::new(shared, conn, kind, ip).run().await;
}
