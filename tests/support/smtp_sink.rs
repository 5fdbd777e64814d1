//! A receiving MTA for delivery tests: real SMTP (EHLO, pipelining, STARTTLS with a chosen
//! certificate, AUTH, several transactions per connection, dot-unstuffing, BDAT) with scripted
//! replies, recording every accepted message. Herald delivers to one port for all MX hosts, so
//! sinks of one test listen on different loopback IPs sharing a port: see
//! [`same_port_listeners`].

mod session;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use super::same_port_listeners;
use super::thread::{ServerThread, stopped};

/// A scripted reply (MAIL, RCPT or DATA) that makes the sink close the connection without
/// answering, as a crashed or unreachable server would (for "outcome unknown" retry tests).
pub const DROP: &str = "DROP";

/// How a sink behaves. Replies are full SMTP reply lines without CRLF (e.g.
/// `"451 4.3.0 try again later"`); a multi-line reply may be given with `\n` between lines.
/// A scripted reply starting with `421` also closes the connection, as real servers do.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// Offer STARTTLS with this certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Consumed one per RCPT TO (across connections); then `250 2.1.5 OK`.
    pub rcpt_replies: Vec<String>,
    /// Fixed replies by recipient address (case-insensitive), on every attempt, taking
    /// precedence over `rcpt_replies`: e.g. `("gone@dest.test", "550 5.1.1 no such user")`.
    pub rcpt_reply_for: Vec<(String, String)>,
    /// Consumed one per end-of-data (or last BDAT chunk); then `250 2.0.0 queued`.
    pub data_replies: Vec<String>,
    /// Consumed one per MAIL FROM; then `250 2.1.0 OK`.
    pub mail_replies: Vec<String>,
    /// Greeting instead of `220 <host> ESMTP test sink`; a non-220 greeting then answers every
    /// command but QUIT with `503 5.5.1 no service` (RFC 5321 §3.1); a `421` greeting closes.
    pub greeting: Option<String>,
    /// Require AUTH (PLAIN or LOGIN) with this user and password before MAIL; AUTH is offered
    /// only after STARTTLS when `tls` is set.
    pub require_auth: Option<(String, String)>,
    /// Refuse MAIL before STARTTLS (`530 5.7.0`).
    pub require_tls: bool,
    /// Reply to STARTTLS instead of starting TLS (e.g. `454 4.7.0 TLS not available`).
    pub starttls_reply: Option<String>,
    /// EHLO keywords not to offer (e.g. `"SMTPUTF8"`, `"8BITMIME"`, `"PIPELINING"`); MAIL
    /// parameters that need a hidden extension are then refused with `555 5.5.4`.
    pub hide_extensions: Vec<String>,
    /// Host name in the greeting and EHLO reply (default `sink.test`).
    pub hostname: Option<String>,
    /// Advertise REQUIRETLS (RFC 8689) once TLS is up; `MAIL FROM … REQUIRETLS` is refused
    /// with `555 5.5.4` wherever it is not advertised.
    pub requiretls: bool,
}

/// One transaction the sink answered at end-of-data.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// MAIL FROM address without angle brackets (empty for the null sender).
    pub mail_from: String,
    /// MAIL FROM parameters as sent (e.g. `BODY=8BITMIME`, `SMTPUTF8`, `SIZE=123`).
    pub mail_params: Vec<String>,
    /// Accepted RCPT TO addresses without angle brackets.
    pub rcpts: Vec<String>,
    /// The message as received, dot-unstuffed, CRLF preserved, final `.` line removed.
    pub data: Vec<u8>,
    /// Whether it came in BDAT chunks (RFC 3030) rather than after DATA.
    pub chunked: bool,
    /// Negotiated TLS version (`"TLSv1_3"`, `"TLSv1_2"`) or `None` for plaintext.
    pub tls: Option<String>,
    /// SNI name the client sent in its TLS ClientHello, if any.
    pub sni: Option<String>,
    /// Connection number (1-based, in accept order).
    pub connection: usize,
    /// The user the client authenticated as, if it did.
    pub authenticated: Option<String>,
    /// The EHLO/HELO name.
    pub helo: String,
    /// The reply the sink gave at end-of-data.
    pub reply: String,
}

impl ReceivedMessage {
    /// The data as (lossy) UTF-8, for assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct Log {
    accepted: Vec<ReceivedMessage>,
    rejected: Vec<ReceivedMessage>,
    tls_errors: Vec<String>,
}

struct Shared {
    opts: SinkOptions,
    rcpt_replies: Mutex<VecDeque<String>>,
    data_replies: Mutex<VecDeque<String>>,
    mail_replies: Mutex<VecDeque<String>>,
    log: Mutex<Log>,
    changed: Condvar,
    connections: AtomicUsize,
    /// While true, each transaction waits after its end-of-data, before any reply.
    pause_data: tokio::sync::watch::Sender<bool>,
    /// Transactions waiting at the pause now.
    held: AtomicUsize,
    /// Sessions open now, and the most ever open at once.
    open: AtomicUsize,
    max_open: AtomicUsize,
}

/// A running receiving MTA; stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _thread: ServerThread,
}

impl SmtpSink {
    /// Serves SMTP on `listener` (already bound, e.g. from [`same_port_listeners`]).
    pub fn start(listener: std::net::TcpListener, opts: SinkOptions) -> SmtpSink {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            rcpt_replies: Mutex::new(opts.rcpt_replies.iter().cloned().collect()),
            data_replies: Mutex::new(opts.data_replies.iter().cloned().collect()),
            mail_replies: Mutex::new(opts.mail_replies.iter().cloned().collect()),
            opts,
            log: Mutex::new(Log::default()),
            changed: Condvar::new(),
            connections: AtomicUsize::new(0),
            pause_data: tokio::sync::watch::Sender::new(false),
            held: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
        });
        let shared2 = shared.clone();
        let thread = ServerThread::spawn("test-smtp-sink", move |stop| {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            async move {
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let n = shared2.connections.fetch_add(1, Ordering::SeqCst) + 1;
                        let open = shared2.open.fetch_add(1, Ordering::SeqCst) + 1;
                        shared2.max_open.fetch_max(open, Ordering::SeqCst);
                        let shared3 = shared2.clone();
                        tokio::spawn(async move {
                            session::session(stream, shared3.clone(), n).await;
                            shared3.open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped(stop) => {}
                }
            }
        });
        SmtpSink {
            addr,
            shared,
            _thread: thread,
        }
    }

    /// Starts a sink on a fresh random loopback address (when the port does not matter).
    pub fn start_any(opts: SinkOptions) -> SmtpSink {
        SmtpSink::start(super::listener(), opts)
    }

    /// The address the sink listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted so far (2xx at end-of-data), in order.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.log.lock().expect("log").accepted.clone()
    }

    /// Every transaction refused at end-of-data (scripted non-2xx data reply), in order.
    pub fn rejected(&self) -> Vec<ReceivedMessage> {
        self.shared.log.lock().expect("log").rejected.clone()
    }

    /// Waits until at least `n` messages were accepted; panics with what arrived on timeout.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log");
        while log.accepted.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink {} got {} of {n} messages in {timeout:?} ({} connections); \
                     accepted: {:#?}; rejected: {:#?}",
                    self.addr,
                    log.accepted.len(),
                    self.connections(),
                    log.accepted,
                    log.rejected
                );
            }
            log = self.shared.changed.wait_timeout(log, left).expect("log").0;
        }
        log.accepted.clone()
    }

    /// Waits until at least `n` transactions were refused at end-of-data; panics on timeout.
    pub fn wait_for_rejected(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log");
        while log.rejected.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "sink {} refused {} of {n} transactions in {timeout:?}",
                self.addr,
                log.rejected.len()
            );
            log = self.shared.changed.wait_timeout(log, left).expect("log").0;
        }
        log.rejected.clone()
    }

    /// Appends a scripted RCPT reply (after those not yet consumed).
    pub fn script_rcpt(&self, reply: &str) {
        let mut queue = self.shared.rcpt_replies.lock().expect("script");
        queue.push_back(reply.to_string());
    }

    /// Appends a scripted end-of-data reply (after those not yet consumed).
    pub fn script_data(&self, reply: &str) {
        let mut queue = self.shared.data_replies.lock().expect("script");
        queue.push_back(reply.to_string());
    }

    /// Appends a scripted MAIL reply (after those not yet consumed).
    pub fn script_mail(&self, reply: &str) {
        let mut queue = self.shared.mail_replies.lock().expect("script");
        queue.push_back(reply.to_string());
    }

    /// Failed STARTTLS handshakes, as the server saw them (e.g. the client's alert
    /// `received fatal alert: UnknownCA` when it refused our certificate).
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.log.lock().expect("log").tls_errors.clone()
    }

    /// Waits until at least `n` STARTTLS handshakes failed; panics on timeout.
    pub fn wait_for_tls_errors(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log");
        while log.tls_errors.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink {} saw {} of {n} failed TLS handshakes in {timeout:?}: {:?}",
                    self.addr,
                    log.tls_errors.len(),
                    log.tls_errors
                );
            }
            log = self.shared.changed.wait_timeout(log, left).expect("log").0;
        }
        log.tls_errors.clone()
    }

    /// From now on, each transaction stops after its end-of-data (the whole message
    /// received) and answers nothing until [`SmtpSink::resume_data`]: a delivery caught
    /// mid-round.
    pub fn pause_data(&self) {
        self.shared.pause_data.send_replace(true);
    }

    /// Lets held transactions answer (their scripted or default reply) and stops pausing.
    pub fn resume_data(&self) {
        self.shared.pause_data.send_replace(false);
    }

    /// Waits until at least `n` transactions are held at the pause; panics on timeout.
    pub fn wait_for_held(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().expect("log");
        while self.shared.held.load(Ordering::SeqCst) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "sink {}: {} of {n} transactions held after {timeout:?}",
                    self.addr,
                    self.shared.held.load(Ordering::SeqCst)
                );
            }
            log = self.shared.changed.wait_timeout(log, left).expect("log").0;
        }
    }

    /// The most SMTP sessions the sink had open at once (from accept to close).
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// How many TCP connections the sink has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}
