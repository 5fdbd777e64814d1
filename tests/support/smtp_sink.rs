//! A receiving MTA for delivery tests: real SMTP (EHLO, pipelining, STARTTLS with a chosen
//! certificate, AUTH, several transactions per connection, dot-unstuffing) with scripted
//! replies, recording every accepted message. Herald delivers to one port for all MX hosts, so
//! sinks of one test listen on different loopback IPs sharing a port: see
//! [`same_port_listeners`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

#[allow(unused_imports)]
pub use super::same_port_listeners;
use super::thread::{ServerThread, stopped};

/// How a sink behaves. Replies are full SMTP reply lines without CRLF (e.g.
/// `"451 4.3.0 try again later"`); a multi-line reply may be given with `\n` between lines.
/// A scripted reply starting with `421` also closes the connection, as real servers do.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// Offer STARTTLS with this certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Consumed one per RCPT TO (across connections); then `250 2.1.5 OK`.
    pub rcpt_replies: Vec<String>,
    /// Consumed one per end-of-data; then `250 2.0.0 queued`.
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
    /// Host name in the greeting and EHLO reply (default `sink.test`).
    pub hostname: Option<String>,
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
}

struct Shared {
    opts: SinkOptions,
    rcpt_replies: Mutex<VecDeque<String>>,
    data_replies: Mutex<VecDeque<String>>,
    mail_replies: Mutex<VecDeque<String>>,
    log: Mutex<Log>,
    changed: Condvar,
    connections: AtomicUsize,
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
                        tokio::spawn(session(stream, shared2.clone(), n));
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
        let listener = std::net::TcpListener::bind(super::free_addr()).expect("bind sink");
        SmtpSink::start(listener, opts)
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

    /// How many TCP connections the sink has accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

/// State of one connection.
struct Session {
    shared: Arc<Shared>,
    connection: usize,
    helo: Option<String>,
    tls: Option<String>,
    sni: Option<String>,
    authenticated: Option<String>,
    mail: Option<(String, Vec<String>)>,
    rcpts: Vec<String>,
}

/// What the command loop ended with.
enum End<S> {
    Closed,
    StartTls(S),
}

async fn session(stream: tokio::net::TcpStream, shared: Arc<Shared>, connection: usize) {
    let mut s = Session {
        shared: shared.clone(),
        connection,
        helo: None,
        tls: None,
        sni: None,
        authenticated: None,
        mail: None,
        rcpts: Vec::new(),
    };
    let host = host(&shared.opts);
    let greeting = shared
        .opts
        .greeting
        .clone()
        .unwrap_or_else(|| format!("220 {host} ESMTP test sink"));
    let mut reader = BufReader::new(stream);
    if write_reply(reader.get_mut(), &greeting).await.is_err() || closes(&greeting) {
        return;
    }
    let serving = greeting.starts_with("220");
    match s.commands(reader, serving).await {
        End::Closed => {}
        End::StartTls(stream) => {
            let Some(config) = shared.opts.tls.clone() else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let (_, conn) = tls.get_ref();
            s.tls = conn.protocol_version().map(|v| format!("{v:?}"));
            s.sni = conn.server_name().map(str::to_string);
            // RFC 3207: forget everything learnt before TLS.
            s.helo = None;
            s.mail = None;
            s.rcpts.clear();
            let _ = s.commands(BufReader::new(tls), true).await;
        }
    }
}

fn host(opts: &SinkOptions) -> String {
    opts.hostname.clone().unwrap_or_else(|| "sink.test".into())
}

fn closes(reply: &str) -> bool {
    reply.starts_with("421")
}

async fn write_reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &str) -> std::io::Result<()> {
    let mut out = String::new();
    for line in reply.split('\n') {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    w.write_all(out.as_bytes()).await?;
    w.flush().await
}

/// Sends a `334` challenge and reads the client's answer line.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    prompt: &str,
) -> Option<String> {
    write_reply(r.get_mut(), &format!("334 {prompt}"))
        .await
        .ok()?;
    let line = read_line(r).await?;
    Some(String::from_utf8_lossy(&line).trim().to_string())
}

/// Reads one line (up to LF); `None` at EOF or error.
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

fn next_scripted(queue: &Mutex<VecDeque<String>>, default: &str) -> String {
    queue
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or_else(|| default.to_string())
}

/// Strips `<...>` from a MAIL/RCPT argument and splits off parameters.
fn path_and_params(arg: &str) -> Option<(String, Vec<String>)> {
    let arg = arg.trim();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = rest[..end].to_string();
    let params = rest[end + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((path, params))
}

impl Session {
    async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut r: BufReader<S>,
        serving: bool,
    ) -> End<S> {
        loop {
            let Some(raw) = read_line(&mut r).await else {
                return End::Closed;
            };
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
                None => (line.to_ascii_uppercase(), String::new()),
            };
            if !serving && verb != "QUIT" {
                if write_reply(r.get_mut(), "503 5.5.1 no service")
                    .await
                    .is_err()
                {
                    return End::Closed;
                }
                continue;
            }
            let reply = match verb.as_str() {
                "EHLO" => self.ehlo(&arg),
                "HELO" => {
                    self.helo = Some(arg.clone());
                    format!("250 {}", host(&self.shared.opts))
                }
                "STARTTLS" => {
                    if self.tls.is_some() || self.shared.opts.tls.is_none() {
                        "502 5.5.1 STARTTLS not offered".into()
                    } else if let Some(reply) = self.shared.opts.starttls_reply.clone() {
                        reply
                    } else {
                        if write_reply(r.get_mut(), "220 2.0.0 go ahead")
                            .await
                            .is_err()
                        {
                            return End::Closed;
                        }
                        // Anything pipelined after STARTTLS is discarded (RFC 3207 §4.2).
                        return End::StartTls(r.into_inner());
                    }
                }
                "AUTH" => match self.auth(&arg, &mut r).await {
                    Some(reply) => reply,
                    None => return End::Closed,
                },
                "MAIL" => self.mail(&arg),
                "RCPT" => self.rcpt(&arg),
                "DATA" => {
                    if self.mail.is_none() {
                        "503 5.5.1 MAIL first".into()
                    } else if self.rcpts.is_empty() {
                        "554 5.5.1 no valid recipients".into()
                    } else {
                        if write_reply(r.get_mut(), "354 go ahead").await.is_err() {
                            return End::Closed;
                        }
                        match self.data(&mut r).await {
                            Some(reply) => reply,
                            None => return End::Closed,
                        }
                    }
                }
                "RSET" => {
                    self.mail = None;
                    self.rcpts.clear();
                    "250 2.0.0 OK".into()
                }
                "NOOP" => "250 2.0.0 OK".into(),
                "VRFY" => "252 2.1.5 cannot verify".into(),
                "QUIT" => {
                    let _ = write_reply(r.get_mut(), "221 2.0.0 bye").await;
                    return End::Closed;
                }
                _ => "500 5.5.2 unknown command".into(),
            };
            if write_reply(r.get_mut(), &reply).await.is_err() || closes(&reply) {
                return End::Closed;
            }
        }
    }

    fn ehlo(&mut self, arg: &str) -> String {
        self.helo = Some(arg.to_string());
        self.mail = None;
        self.rcpts.clear();
        let opts = &self.shared.opts;
        let mut lines = vec![
            host(opts),
            "PIPELINING".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SIZE 52428800".into(),
        ];
        if opts.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        if opts.require_auth.is_some() && (opts.tls.is_none() || self.tls.is_some()) {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// AUTH PLAIN (with or without initial response) and AUTH LOGIN. `None` on EOF.
    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        arg: &str,
        r: &mut BufReader<S>,
    ) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let Some((user, pass)) = self.shared.opts.require_auth.clone() else {
            return Some("502 5.5.1 AUTH not offered".into());
        };
        if self.shared.opts.tls.is_some() && self.tls.is_none() {
            return Some("538 5.7.11 encryption required for AUTH".into());
        }
        if self.authenticated.is_some() {
            return Some("503 5.5.1 already authenticated".into());
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let decode = |s: &str| -> Option<String> {
            b64.decode(s)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let (got_user, got_pass) = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => i,
                    None => ask(r, "").await?,
                };
                let Some(decoded) = decode(&resp) else {
                    return Some("501 5.5.2 bad base64".into());
                };
                let mut f = decoded.split('\0');
                let _authz = f.next();
                (
                    f.next().unwrap_or("").to_string(),
                    f.next().unwrap_or("").to_string(),
                )
            }
            "LOGIN" => {
                let u = match initial {
                    Some(i) => i,
                    None => ask(r, &b64.encode("Username:")).await?,
                };
                let p = ask(r, &b64.encode("Password:")).await?;
                (
                    decode(&u).unwrap_or_default(),
                    decode(&p).unwrap_or_default(),
                )
            }
            _ => return Some("504 5.5.4 mechanism not supported".into()),
        };
        if got_user == user && got_pass == pass {
            self.authenticated = Some(got_user);
            Some("235 2.7.0 authenticated".into())
        } else {
            Some("535 5.7.8 bad credentials".into())
        }
    }

    fn mail(&mut self, arg: &str) -> String {
        let opts = &self.shared.opts;
        if self.helo.is_none() {
            return "503 5.5.1 EHLO first".into();
        }
        if self.mail.is_some() {
            return "503 5.5.1 nested MAIL".into();
        }
        if opts.require_tls && self.tls.is_none() {
            return "530 5.7.0 must issue STARTTLS first".into();
        }
        if opts.require_auth.is_some() && self.authenticated.is_none() {
            return "530 5.7.0 authentication required".into();
        }
        let Some(rest) = strip_keyword(arg, "FROM:") else {
            return "501 5.5.4 syntax: MAIL FROM:<address>".into();
        };
        let Some(path) = path_and_params(rest) else {
            return "501 5.5.4 syntax: MAIL FROM:<address>".into();
        };
        let reply = next_scripted(&self.shared.mail_replies, "250 2.1.0 OK");
        if reply.starts_with('2') {
            self.mail = Some(path);
        }
        reply
    }

    fn rcpt(&mut self, arg: &str) -> String {
        if self.mail.is_none() {
            return "503 5.5.1 MAIL first".into();
        }
        let Some((path, _)) = strip_keyword(arg, "TO:").and_then(path_and_params) else {
            return "501 5.5.4 syntax: RCPT TO:<address>".into();
        };
        let reply = next_scripted(&self.shared.rcpt_replies, "250 2.1.5 OK");
        if reply.starts_with('2') {
            self.rcpts.push(path);
        }
        reply
    }

    /// Reads the message up to CRLF.CRLF and answers it. `None` on EOF.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        r: &mut BufReader<S>,
    ) -> Option<String> {
        let mut data = Vec::new();
        let mut after_crlf = true;
        loop {
            let line = read_line(r).await?;
            if after_crlf && line == b".\r\n" {
                break;
            }
            let body = if after_crlf && line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            data.extend_from_slice(body);
            after_crlf = line.ends_with(b"\r\n");
        }
        let reply = next_scripted(&self.shared.data_replies, "250 2.0.0 queued");
        let (mail_from, mail_params) = self.mail.take().unwrap_or_default();
        let message = ReceivedMessage {
            mail_from,
            mail_params,
            rcpts: std::mem::take(&mut self.rcpts),
            data,
            tls: self.tls.clone(),
            sni: self.sni.clone(),
            connection: self.connection,
            authenticated: self.authenticated.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            reply: reply.clone(),
        };
        let mut log = self.shared.log.lock().expect("log");
        if reply.starts_with('2') {
            log.accepted.push(message);
        } else {
            log.rejected.push(message);
        }
        self.shared.changed.notify_all();
        Some(reply)
    }
}

/// `FROM:<x>` / `FROM: <x>` with any case.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}
