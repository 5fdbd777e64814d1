//! Both ends of the end-to-end benchmarks: the submitting apps, and the receiving MX (plain
//! SMTP with PIPELINING and CHUNKING on loopback, answering pipelined commands together, as
//! Postfix does: herald sends each message there as one BDAT chunk), recording when
//! each message is accepted and when it arrives (by the index in its `Message-ID`, see
//! [`super::message`]).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{login, read_reply, send_message};

/// When each of `total` messages was accepted (the `250` after DATA) and delivered, by index.
pub struct Times {
    pub accepted: Mutex<Vec<Option<Instant>>>,
    pub delivered: Mutex<Vec<Option<Instant>>>,
    /// Messages with an index below `total` delivered so far.
    pub delivered_count: AtomicUsize,
    /// Every message the MX received, whatever its index (warm-up rounds use indices from
    /// `total` on).
    pub received_all: AtomicUsize,
    /// Notified when the last of the `total` messages arrives.
    pub done: tokio::sync::Notify,
    pub total: usize,
}

impl Times {
    /// Nothing accepted or delivered yet, of `total` messages.
    pub fn new(total: usize) -> Arc<Times> {
        Arc::new(Times {
            accepted: Mutex::new(vec![None; total]),
            delivered: Mutex::new(vec![None; total]),
            delivered_count: AtomicUsize::new(0),
            received_all: AtomicUsize::new(0),
            done: tokio::sync::Notify::new(),
            total,
        })
    }

    fn arrived(&self, index: Option<usize>) {
        self.received_all.fetch_add(1, Ordering::SeqCst);
        let Some(i) = index.filter(|&i| i < self.total) else {
            return;
        };
        let mut d = self.delivered.lock().expect("lock");
        if d[i].is_none() {
            d[i] = Some(Instant::now());
            if self.delivered_count.fetch_add(1, Ordering::SeqCst) + 1 == self.total {
                self.done.notify_one();
            }
        }
    }
}

/// One app: STARTTLS, AUTH, waits at `logged_in` (when given) until every app has logged in,
/// then sends messages (the next index from `next`) until none are left.
pub async fn submitter(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    next: Arc<AtomicUsize>,
    times: Arc<Times>,
    size: usize,
    logged_in: Option<Arc<tokio::sync::Barrier>>,
) {
    let mut s = login(addr, tls).await;
    if let Some(barrier) = logged_in {
        barrier.wait().await;
    }
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= times.total {
            break;
        }
        send_message(&mut s, i, size).await;
        assert_eq!(read_reply(&mut s).await, 250, "message accepted");
        times.accepted.lock().expect("lock")[i] = Some(Instant::now());
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    let _ = s.flush().await;
}

/// Starts the MX on its own thread and loopback port; returns the address.
pub fn start_mx(times: Arc<Times>) -> SocketAddr {
    let mx = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 1), 0)).expect("bind MX");
    let addr = mx.local_addr().expect("MX addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("sink runtime");
        rt.block_on(async move {
            mx.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(mx).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(mx_session(stream, times.clone()));
            }
        });
    });
    addr
}

/// One session at the MX: PIPELINING, no TLS; records when each message arrives.
async fn mx_session(stream: TcpStream, times: Arc<Times>) {
    let mut r = tokio::io::BufReader::new(stream);
    let mut out: Vec<u8> = b"220 mx.example.org ESMTP bench sink\r\n".to_vec();
    let mut line = Vec::new();
    loop {
        // Pipelined commands are answered together, once nothing more is buffered.
        if !out.is_empty() && r.buffer().is_empty() {
            if r.get_mut().write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        line.clear();
        if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with(b"EHLO") {
            out.extend_from_slice(
                b"250-mx.example.org\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n\
                  250 SIZE 0\r\n",
            );
        } else if upper.starts_with(b"DATA") {
            out.extend_from_slice(b"354 go ahead\r\n");
            if r.get_mut().write_all(&out).await.is_err() {
                return;
            }
            out.clear();
            let mut index = None;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == b".\r\n" {
                    break;
                }
                if index.is_none() && line.starts_with(b"Message-ID: <") {
                    index = message_index(&line);
                }
            }
            times.arrived(index);
            out.extend_from_slice(b"250 2.0.0 queued\r\n");
        } else if let Some(size) = upper.strip_prefix(b"BDAT ") {
            // One chunk per message (`BDAT <size> LAST`), as herald sends it.
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok())
                .expect("BDAT size");
            let mut chunk = vec![0; size];
            if r.read_exact(&mut chunk).await.is_err() {
                return;
            }
            times.arrived(message_index(&chunk));
            out.extend_from_slice(b"250 2.0.0 queued\r\n");
        } else if upper.starts_with(b"QUIT") {
            let _ = r.get_mut().write_all(b"221 bye\r\n").await;
            return;
        } else {
            out.extend_from_slice(b"250 OK\r\n");
        }
    }
}

/// The benchmark's index of a message, from the first `Message-ID: <index@…>` in `data`.
fn message_index(data: &[u8]) -> Option<usize> {
    const FIELD: &[u8] = b"Message-ID: <";
    let at = data.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}
