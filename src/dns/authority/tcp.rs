//! DNS over TCP with a connection cap. hickory's own TCP listener accepts without limit: idle
//! connections (each closed only after [`super::TCP_IDLE`]) could take every descriptor herald
//! keeps for the spool. Here a connection beyond [`super::MAX_TCP_CONNECTIONS`] is closed at
//! accept; the ones admitted are answered by the same [`Authority`] as UDP (same zones, same
//! per-source rate limit).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_server::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_server::net::tcp::TcpStream;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, ResponseHandle, TimeoutStream};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Authority, MAX_TCP_CONNECTIONS, TCP_IDLE};

/// Responses queued per connection before back-pressure.
const RESPONSE_BUFFER: usize = 16;

/// Accepts on `listener` until aborted (dropping it closes every connection).
pub(super) async fn serve(listener: TcpListener, authority: Authority) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, src) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or a transient error: back off rather than spin.
                tracing::debug!(error = %e, "dns: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(%src, refused, limit = MAX_TCP_CONNECTIONS,
                    "dns: TCP connection refused: too many connections");
            }
            drop(tcp);
            continue;
        };
        let authority = authority.clone();
        connections.spawn(async move {
            let _slot = slot;
            let (stream, handle) = TcpStream::from_stream_with_buffer_size(
                AsyncIoTokioAsStd(tcp),
                src,
                RESPONSE_BUFFER,
            );
            let mut stream = TimeoutStream::new(stream, TCP_IDLE);
            while let Some(Ok(message)) = stream.next().await {
                let (bytes, from) = message.into_parts();
                let Ok(request) = Request::from_bytes(bytes, from, Protocol::Tcp) else {
                    tracing::debug!(%src, "dns: unreadable TCP query; closing");
                    return;
                };
                let respond = ResponseHandle::new(from, handle.clone(), Protocol::Tcp);
                authority.answer(&request, respond).await;
            }
        });
    }
}
