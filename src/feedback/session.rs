//! One SMTP session on the feedback listener: EHLO/HELO, STARTTLS, MAIL, RCPT (addresses in
//! the routing table only), DATA, RSET, NOOP, QUIT. No AUTH, no BDAT. Connection, lines and
//! DATA framing are the server core's ([`crate::smtp_server`]), the same as submission's:
//! a bare CR or LF in the data (`\n.\n` included) is refused, never an end of data.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::Request;

use super::Shared;
use super::routes::{IncomingMail, MailHandler};
use crate::reply::Reply;
use crate::smtp_server::data::{self, DataLimits};
use crate::smtp_server::{Conn, Line, Slot, Stream, admission};

const MAX_LINE: usize = 4096;
/// Protocol errors tolerated before the session is closed.
const MAX_ERRORS: usize = 10;
/// Recipients in one transaction.
const MAX_RECIPIENTS: usize = 10;

struct Session {
    shared: Arc<Shared>,
    ip: IpAddr,
    host: String,
    conn: Conn,
    helo: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    handler: Option<Arc<dyn MailHandler>>,
    errors: usize,
    closing: bool,
}

/// Runs one connection to its end.
pub(super) async fn run(
    tcp: tokio::net::TcpStream,
    ip: IpAddr,
    shared: Arc<Shared>,
    slot: Result<Slot, &'static str>,
) {
    let host = shared.cfg.server.hostname.clone();
    let mut s = Session {
        shared,
        ip,
        host,
        conn: Conn::new(Stream::Plain(tcp)),
        helo: false,
        mail_from: None,
        rcpts: Vec::new(),
        handler: None,
        errors: 0,
        closing: false,
    };
    let _slot = match slot {
        Ok(slot) => slot,
        Err(limit) => {
            tracing::info!(client = %ip, limit, "feedback: refused, too many connections");
            let reply = admission::too_many(&s.host, limit);
            s.conn.queue(&reply.to_wire());
            s.conn.close().await;
            return;
        }
    };
    let greeting = format!("220 {} ESMTP herald report receiver\r\n", s.host);
    s.conn.queue(greeting.as_bytes());
    while !s.closing {
        s.command().await;
    }
    s.conn.close().await;
}

impl Session {
    /// Queues a reply (sent before the next read), logging refusals.
    fn reply(&mut self, r: Reply) {
        if r.code >= 400 {
            tracing::info!(client = %self.ip, reply = %r, "feedback: refused");
        }
        self.conn.queue(&r.to_wire());
    }

    /// The session's last reply.
    fn last(&mut self, r: Reply) {
        self.reply(r);
        self.closing = true;
    }

    fn error(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.last(Reply::new(421, "4.7.0", "too many errors; closing"));
        }
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
        self.handler = None;
    }

    /// Reads the next line, or learns that herald is shutting down (a session waiting for a
    /// command is told to come back later; one in DATA finishes first).
    async fn next_line(&mut self) -> Option<io::Result<Option<Vec<u8>>>> {
        let mut shutdown = self.shared.shutdown.clone();
        if *shutdown.borrow() && !self.conn.has_buffered_input() {
            return None;
        }
        let timeout = self.shared.cfg.feedback.command_timeout;
        let read = async {
            match self.conn.read_line(MAX_LINE, timeout).await {
                Ok(Line::Full(l)) => Ok(Some(l.to_vec())),
                Ok(Line::TooLong { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        tokio::select! {
            read = read => Some(read),
            _ = shutdown.wait_for(|stop| *stop) => None,
        }
    }

    async fn command(&mut self) {
        let line = match self.next_line().await {
            None => return self.last(admission::shutting_down(&self.host)),
            Some(Ok(Some(l))) => l,
            Some(Ok(None)) => return self.error(Reply::new(500, "5.5.2", "line too long")),
            Some(Err(e)) => return self.io_failed(e),
        };
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                return self.error(Reply::new(
                    500,
                    "5.5.2",
                    format!("syntax error ({e:?}); commands: EHLO MAIL RCPT DATA QUIT"),
                ));
            }
        };
        match req {
            Request::Ehlo { host } => self.ehlo(&host),
            Request::Helo { host } => {
                self.helo = true;
                self.reset();
                let me = self.host.clone();
                self.reply(Reply::new(250, "2.0.0", format!("{me} hello {host}")));
            }
            Request::StartTls => self.starttls().await,
            Request::Auth { .. } => self.error(Reply::new(
                502,
                "5.5.1",
                "no AUTH here: this port only receives mail for herald's own addresses",
            )),
            Request::Mail { from } => self.mail(from.address, from.size),
            Request::Rcpt { to } => self.rcpt(&to.address),
            Request::Data => self.data().await,
            Request::Rset => {
                self.reset();
                self.reply(Reply::new(250, "2.0.0", "reset"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "OK")),
            Request::Quit => self.last(Reply::new(221, "2.0.0", "bye")),
            other => self.error(Reply::new(
                502,
                "5.5.1",
                format!("{} is not implemented here", other.name()),
            )),
        }
    }

    /// Ends the session after a read failure (a timeout gets a `421`).
    fn io_failed(&mut self, e: io::Error) {
        self.closing = true;
        self.reset();
        if e.kind() == io::ErrorKind::TimedOut {
            let host = self.host.clone();
            self.reply(Reply::new(
                421,
                "4.4.2",
                format!("{host} timeout: nothing received in time; closing"),
            ));
        }
    }

    fn ehlo(&mut self, client: &str) {
        self.helo = true;
        self.reset();
        let mut lines = vec![
            format!("{} hello {client}", self.host),
            "PIPELINING".into(),
            format!("SIZE {}", self.shared.cfg.feedback.max_message_size),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
        ];
        if !self.conn.is_tls() && self.shared.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.queue(format!("250{sep}{l}\r\n").as_bytes());
        }
    }

    async fn starttls(&mut self) {
        let Some(acceptor) = self.shared.tls.clone().filter(|_| !self.conn.is_tls()) else {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS is not available here"));
        };
        self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
        // Anything pipelined after STARTTLS was sent in the clear: the core drops it.
        let timeout = self.shared.cfg.feedback.command_timeout;
        if let Err(e) = self.conn.start_tls(&acceptor, timeout).await {
            tracing::info!(client = %self.ip, error = %e, "feedback: TLS handshake failed");
            self.closing = true;
            return;
        }
        self.helo = false;
        self.reset();
    }

    fn mail(&mut self, from: String, size: usize) {
        if !self.helo {
            return self.error(Reply::new(503, "5.5.1", "say EHLO or HELO first"));
        }
        if self.mail_from.is_some() {
            return self.error(Reply::new(503, "5.5.1", "MAIL already given; RSET first"));
        }
        let max = self.shared.cfg.feedback.max_message_size;
        if size > max {
            return self.reply(Reply::new(
                552,
                "5.3.4",
                format!("message size {size} exceeds the limit of {max} bytes for reports"),
            ));
        }
        if !self.shared.mail_allowed(self.ip) {
            let ip = self.ip;
            return self.reply(Reply::new(
                450,
                "4.7.1",
                format!(
                    "too many reports from {ip} this hour (feedback.max_mails_per_hour_per_ip); \
                     try again later"
                ),
            ));
        }
        self.mail_from = Some(from);
        self.reply(Reply::new(250, "2.1.0", "sender OK"));
    }

    fn rcpt(&mut self, to: &str) {
        if self.mail_from.is_none() {
            return self.error(Reply::new(503, "5.5.1", "MAIL FROM first"));
        }
        let addr = to.trim().to_ascii_lowercase();
        let Some(handler) = self.shared.routes.route(&addr).cloned() else {
            let receives = self.shared.routes.describe();
            return self.reply(Reply::new(
                550,
                "5.1.1",
                format!(
                    "<{to}>: no such mailbox here; this server only receives mail for {receives}"
                ),
            ));
        };
        if let Err(refusal) = handler.accept_rcpt(&addr) {
            return self.reply(refusal);
        }
        if self.rcpts.len() >= MAX_RECIPIENTS {
            return self.reply(Reply::new(452, "4.5.3", "too many recipients"));
        }
        if let Some(current) = &self.handler
            && !Arc::ptr_eq(current, &handler)
        {
            return self.reply(Reply::new(
                452,
                "4.5.3",
                format!("<{to}> is handled separately here; send it in a transaction of its own"),
            ));
        }
        self.handler = Some(handler);
        if !self.rcpts.contains(&addr) {
            self.rcpts.push(addr);
        }
        self.reply(Reply::new(250, "2.1.5", "recipient OK"));
    }

    async fn data(&mut self) {
        let (Some(_), Some(handler)) = (&self.mail_from, self.handler.clone()) else {
            return self.error(Reply::new(503, "5.5.1", "MAIL and RCPT first"));
        };
        let max = self.shared.cfg.feedback.max_message_size;
        // Reports are often one long line of XML: lines are bounded by the size alone.
        let limits = DataLimits {
            max_size: max,
            max_line: max,
        };
        self.conn
            .queue(b"354 send the report; end with <CRLF>.<CRLF>\r\n");
        if let Err(e) = self.conn.flush().await {
            return self.io_failed(e);
        }
        let deadline = tokio::time::Instant::now() + self.shared.cfg.feedback.data_timeout;
        let mut raw = Vec::new();
        let framed = data::read_data(&mut self.conn, limits, deadline, &mut raw).await;
        let outcome = match framed {
            Ok(outcome) => outcome,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.reset();
                return self.last(Reply::new(421, "4.4.2", "timeout during DATA; closing"));
            }
            Err(e) => return self.io_failed(e),
        };
        self.shared.count_mail(self.ip);
        let mail_from = self.mail_from.take().unwrap_or_default();
        let rcpts = std::mem::take(&mut self.rcpts);
        self.handler = None;
        let reply = match outcome {
            Ok(_) => {
                let mail = IncomingMail {
                    client: self.ip,
                    mail_from,
                    rcpts,
                    raw,
                };
                handler.handle(mail).await
            }
            Err(fault) => fault
                .reply(&limits)
                .unwrap_or_else(|| Reply::new(451, "4.3.0", "cannot take the mail right now")),
        };
        self.reply(reply);
    }
}
