//! What happens to an accepted connection (the accept loop is the server core's,
//! [`crate::smtp_server::Sessions`]): a slot (total and per-IP limits, checked before any TLS
//! handshake: `421 4.7.0` on plain-text listeners, an immediate close on implicit TLS), the
//! TLS handshake on the implicit-TLS port, the plain listener's network check, the session.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::session::Session;
use super::{ListenerKind, Shared};
use crate::smtp_server::{Conn, Slot, Stream, admission};

/// Takes a slot under the settings in force now (a reload swaps them for later connections
/// only); the returned future runs the connection to its end.
pub(super) fn connection(
    tcp: TcpStream,
    ip: std::net::IpAddr,
    kind: ListenerKind,
    current: &tokio::sync::watch::Receiver<Arc<Shared>>,
) -> impl Future<Output = ()> + Send + use<> {
    let shared = current.borrow().clone();
    let slot = shared.admit(ip);
    let open = crate::metrics::connection_opened(kind.name());
    async move {
        let _open = open;
        handle(tcp, ip, kind, shared, slot).await;
    }
}

async fn handle(
    tcp: TcpStream,
    ip: std::net::IpAddr,
    kind: ListenerKind,
    shared: Arc<Shared>,
    slot: Result<Slot, &'static str>,
) {
    let host = shared.cfg.server.hostname.clone();
    // Limits first, before any TLS: a refused connection holds its descriptor only as long
    // as it takes to say so.
    let _slot = match slot {
        Ok(s) => s,
        Err(limit) => {
            tracing::info!(event = "too_many_connections", client = %ip, limit, listener = kind.name(),
                "refused: too many connections");
            if kind == ListenerKind::Submissions {
                // No TLS yet to carry a reply: close at once (the client sees a reset
                // handshake and retries later).
                return;
            }
            let mut conn = Conn::new(Stream::Plain(tcp));
            conn.queue(&admission::too_many(&host, limit).to_wire());
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
