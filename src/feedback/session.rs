//! One SMTP session on the feedback listener: EHLO/HELO, STARTTLS, MAIL, RCPT (herald's report
//! addresses only), DATA, RSET, NOOP, QUIT. No AUTH, no BDAT. The mail is parsed and committed
//! to the store before `250`; a store failure is a `451` and the sender tries again later.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::Request;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::parse::{Limits, parse_mail};
use super::{Shared, Slot};
use crate::reply::Reply;
use crate::store::ReceivedMail;

/// Any byte stream the session runs on: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const MAX_LINE: usize = 4096;
/// Data lines are read in pieces of at most this many bytes.
const DATA_PIECE: u64 = 64 * 1024;
/// Protocol errors tolerated before the session is closed.
const MAX_ERRORS: usize = 10;

struct Session {
    shared: Arc<Shared>,
    ip: IpAddr,
    io: BufReader<Box<dyn Io>>,
    tls: bool,
    helo: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    errors: usize,
}

enum Step {
    Continue,
    StartTls,
    Close,
}

/// Runs one connection to its end.
pub(super) async fn run(
    tcp: TcpStream,
    ip: IpAddr,
    shared: Arc<Shared>,
    slot: Result<Slot, &'static str>,
) {
    let host = shared.cfg.server.hostname.clone();
    let mut s = Session {
        shared,
        ip,
        io: BufReader::new(Box::new(tcp) as Box<dyn Io>),
        tls: false,
        helo: false,
        mail_from: None,
        rcpts: Vec::new(),
        errors: 0,
    };
    let _slot = match slot {
        Ok(slot) => slot,
        Err(limit) => {
            tracing::info!(client = %ip, limit, "feedback: refused, too many connections");
            let _ = s
                .send(&Reply::new(
                    421,
                    "4.7.0",
                    format!("{host} too many connections ({limit}); try again later"),
                ))
                .await;
            return;
        }
    };
    if s.send_raw(format!("220 {host} ESMTP herald report receiver\r\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    loop {
        match s.command().await {
            Step::Continue => {}
            Step::Close => break,
            Step::StartTls => {
                let Some(acceptor) = s.shared.tls.clone() else {
                    break;
                };
                // Anything pipelined after STARTTLS was sent in the clear: drop it.
                let old = std::mem::replace(
                    &mut s.io,
                    BufReader::new(Box::new(tokio::io::duplex(1).0) as Box<dyn Io>),
                );
                let tcp = old.into_inner();
                let timeout = s.shared.cfg.feedback.command_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        s.io = BufReader::new(Box::new(tls) as Box<dyn Io>);
                        s.tls = true;
                        s.helo = false;
                        s.reset();
                    }
                    _ => {
                        tracing::info!(client = %ip, "feedback: TLS handshake failed");
                        return;
                    }
                }
            }
        }
    }
    let _ = s.io.get_mut().shutdown().await;
}

impl Session {
    async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.io.get_mut();
        tokio::time::timeout(Duration::from_secs(60), async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))?
    }

    async fn send(&mut self, r: &Reply) -> io::Result<()> {
        if r.code >= 400 {
            tracing::info!(client = %self.ip, reply = %r, "feedback: refused");
        }
        self.send_raw(&r.to_wire()).await
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    /// Reads a line of at most `MAX_LINE` bytes; `Ok(None)` when it was longer (discarded).
    async fn read_line(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let mut too_long = false;
        loop {
            let n = tokio::time::timeout(
                timeout,
                (&mut self.io)
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut buf),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client timed out"))??;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            if buf.ends_with(b"\n") {
                return Ok((!too_long).then_some(buf));
            }
            too_long = true;
            buf.clear();
        }
    }

    async fn command(&mut self) -> Step {
        let host = self.shared.cfg.server.hostname.clone();
        // Shutting down: a session waiting for its next command is told to come back later
        // (nothing of its current message was acknowledged); one in DATA finishes first.
        let mut shutdown = self.shared.shutdown.clone();
        let timeout = self.shared.cfg.feedback.command_timeout;
        let read = tokio::select! {
            read = self.read_line(timeout) => Some(read),
            () = super::stopping(&mut shutdown) => None,
        };
        let Some(read) = read else {
            let reply = Reply::new(
                421,
                "4.3.2",
                format!("{host} shutting down; please try again later"),
            );
            return self.last(reply).await;
        };
        let line = match read {
            Ok(Some(l)) => l,
            Ok(None) => return self.error(Reply::new(500, "5.5.2", "line too long")).await,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let reply = Reply::new(
                    421,
                    "4.4.2",
                    format!("{host} timeout: nothing received in time; closing"),
                );
                return self.last(reply).await;
            }
            Err(_) => return Step::Close,
        };
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                return self
                    .error(Reply::new(
                        500,
                        "5.5.2",
                        format!("syntax error ({e:?}); commands: EHLO MAIL RCPT DATA QUIT"),
                    ))
                    .await;
            }
        };
        let reply = match req {
            Request::Ehlo { host: client } => return self.ehlo(&client).await,
            Request::Helo { host: client } => {
                self.helo = true;
                self.reset();
                Reply::new(250, "2.0.0", format!("{host} hello {client}"))
            }
            Request::StartTls => {
                if self.tls || self.shared.tls.is_none() {
                    return self
                        .error(Reply::new(502, "5.5.1", "STARTTLS is not available here"))
                        .await;
                }
                if self
                    .send(&Reply::new(220, "2.0.0", "ready to start TLS"))
                    .await
                    .is_err()
                {
                    return Step::Close;
                }
                return Step::StartTls;
            }
            Request::Auth { .. } => {
                return self
                    .error(Reply::new(
                        502,
                        "5.5.1",
                        "no AUTH here: this port only receives DMARC and TLS reports",
                    ))
                    .await;
            }
            Request::Mail { from } => return self.mail(from.address, from.size).await,
            Request::Rcpt { to } => return self.rcpt(&to.address).await,
            Request::Data => return self.data().await,
            Request::Rset => {
                self.reset();
                Reply::new(250, "2.0.0", "reset")
            }
            Request::Noop { .. } => Reply::new(250, "2.0.0", "OK"),
            Request::Quit => return self.last(Reply::new(221, "2.0.0", "bye")).await,
            other => {
                return self
                    .error(Reply::new(
                        502,
                        "5.5.1",
                        format!("{} is not implemented here", other.name()),
                    ))
                    .await;
            }
        };
        self.step(reply).await
    }

    /// Sends the session's last reply and ends it.
    async fn last(&mut self, r: Reply) -> Step {
        let _ = self.send(&r).await;
        Step::Close
    }

    async fn step(&mut self, r: Reply) -> Step {
        match self.send(&r).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Close,
        }
    }

    async fn error(&mut self, r: Reply) -> Step {
        self.errors += 1;
        if self.send(&r).await.is_err() {
            return Step::Close;
        }
        if self.errors >= MAX_ERRORS {
            return self
                .last(Reply::new(421, "4.7.0", "too many errors; closing"))
                .await;
        }
        Step::Continue
    }

    async fn ehlo(&mut self, client: &str) -> Step {
        self.helo = true;
        self.reset();
        let host = &self.shared.cfg.server.hostname;
        let mut lines = vec![
            format!("{host} hello {client}"),
            "PIPELINING".into(),
            format!("SIZE {}", self.shared.cfg.feedback.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.tls && self.shared.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            out.push_str(&format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }));
        }
        match self.send_raw(out.as_bytes()).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Close,
        }
    }

    async fn mail(&mut self, from: String, size: usize) -> Step {
        if !self.helo {
            return self
                .error(Reply::new(503, "5.5.1", "say EHLO or HELO first"))
                .await;
        }
        if self.mail_from.is_some() {
            return self
                .error(Reply::new(503, "5.5.1", "MAIL already given; RSET first"))
                .await;
        }
        let max = self.shared.cfg.feedback.max_message_size;
        if size > max {
            return self
                .step(Reply::new(
                    552,
                    "5.3.4",
                    format!("message size {size} exceeds the limit of {max} bytes for reports"),
                ))
                .await;
        }
        if !self.shared.mail_allowed(self.ip) {
            return self
                .step(Reply::new(
                    450,
                    "4.7.1",
                    format!(
                        "too many reports from {} this hour (feedback.max_mails_per_hour_per_ip); \
                         try again later",
                        self.ip
                    ),
                ))
                .await;
        }
        self.mail_from = Some(from);
        self.step(Reply::new(250, "2.1.0", "sender OK")).await
    }

    async fn rcpt(&mut self, to: &str) -> Step {
        if self.mail_from.is_none() {
            return self
                .error(Reply::new(503, "5.5.1", "MAIL FROM first"))
                .await;
        }
        let f = &self.shared.cfg.feedback;
        let addr = to.trim().to_ascii_lowercase();
        let ours = [f.dmarc_address(), f.tlsrpt_address()];
        if !ours.iter().flatten().any(|a| *a == addr) {
            let domain = f.domain.clone();
            return self
                .step(Reply::new(
                    550,
                    "5.1.1",
                    format!(
                        "<{to}>: no such mailbox here; this server only receives DMARC and TLS \
                         reports at dmarc@{domain} and tlsrpt@{domain}"
                    ),
                ))
                .await;
        }
        if self.rcpts.len() >= 10 {
            return self
                .step(Reply::new(452, "4.5.3", "too many recipients"))
                .await;
        }
        if !self.rcpts.contains(&addr) {
            self.rcpts.push(addr);
        }
        self.step(Reply::new(250, "2.1.5", "recipient OK")).await
    }

    async fn data(&mut self) -> Step {
        if self.mail_from.is_none() || self.rcpts.is_empty() {
            return self
                .error(Reply::new(503, "5.5.1", "MAIL and RCPT first"))
                .await;
        }
        if self
            .send(&Reply::new(
                354,
                "2.0.0",
                "send the report; end with <CRLF>.<CRLF>",
            ))
            .await
            .is_err()
        {
            return Step::Close;
        }
        let max = self.shared.cfg.feedback.max_message_size;
        let timeout = self.shared.cfg.feedback.data_timeout;
        let mut body = Vec::new();
        let mut oversize = false;
        let mut line_start = true;
        let mut piece = Vec::new();
        loop {
            piece.clear();
            let read = tokio::time::timeout(
                timeout,
                (&mut self.io)
                    .take(DATA_PIECE)
                    .read_until(b'\n', &mut piece),
            )
            .await;
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return Step::Close,
                Err(_) => {
                    return self
                        .last(Reply::new(421, "4.4.2", "timeout during DATA; closing"))
                        .await;
                }
            };
            if n == 0 {
                return Step::Close;
            }
            let ends_line = piece.ends_with(b"\n");
            let mut bytes: &[u8] = &piece;
            if line_start {
                if bytes == b".\r\n" || bytes == b".\n" {
                    break;
                }
                if bytes.first() == Some(&b'.') {
                    bytes = &bytes[1..];
                }
            }
            line_start = ends_line;
            if !oversize {
                if body.len() + bytes.len() > max {
                    oversize = true;
                    body = Vec::new();
                } else {
                    body.extend_from_slice(bytes);
                }
            }
        }
        self.shared.count_mail(self.ip);
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpts = std::mem::take(&mut self.rcpts);
        if oversize {
            return self
                .step(Reply::new(
                    552,
                    "5.3.4",
                    format!("report mail larger than {max} bytes (feedback.max_message_size)"),
                ))
                .await;
        }
        let reply = self.store(body, mail_from, rcpts).await;
        self.step(reply).await
    }

    /// Parses and commits the mail; the reply says what was kept.
    async fn store(&mut self, raw: Vec<u8>, mail_from: String, rcpts: Vec<String>) -> Reply {
        let limits = Limits::from_config(&self.shared.cfg.feedback);
        let store = self.shared.store.clone();
        let mail = ReceivedMail {
            received_at: crate::store::now(),
            origin: self.ip.to_string(),
            mail_from,
            rcpt: rcpts.join(","),
            raw,
        };
        let ip = self.ip;
        let parsed = tokio::task::spawn_blocking(move || {
            let items = parse_mail(&mail.raw, &limits);
            (mail, items)
        })
        .await;
        let done = match parsed {
            Ok((mail, items)) => Ok(store.accept(&mail, &items).await),
            Err(e) => Err(e),
        };
        match done {
            Ok(Ok(o)) => {
                tracing::info!(client = %ip, stored = o.stored, duplicates = o.duplicates,
                    rejected = o.rejected, "feedback: report mail accepted");
                Reply::new(
                    250,
                    "2.0.0",
                    format!(
                        "report received: {} stored, {} duplicate, {} unreadable (kept for inspection)",
                        o.stored, o.duplicates, o.rejected
                    ),
                )
            }
            Ok(Err(e)) => {
                tracing::error!(client = %ip, error = %format!("{e:#}"), "feedback: cannot store report mail");
                Reply::new(
                    451,
                    "4.3.0",
                    "cannot store the report right now; please try again later",
                )
            }
            Err(e) => {
                tracing::error!(client = %ip, error = %e, "feedback: report parsing failed");
                Reply::new(
                    451,
                    "4.3.0",
                    "cannot process the report right now; please try again later",
                )
            }
        }
    }
}
