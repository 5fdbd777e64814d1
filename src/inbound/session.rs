//! One SMTP session: the command loop (smtp-proto parses each line), EHLO, STARTTLS, AUTH,
//! MAIL and RCPT with their policies. DATA and BDAT live in `submit`.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::{
    MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_REQUIRETLS, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom, Request,
};

use super::policy::sender_allowed;
use super::rawcheck::{self, RawVerdict};
use super::{ListenerKind, Shared};
use crate::reply::Reply;
use crate::smtp_server::{Chunked, Conn, Line, admission};
use crate::spool::StagedMessage;

/// A message being submitted.
pub(super) struct Transaction {
    pub(super) mail_from: String,
    pub(super) params: Vec<String>,
    /// `REQUIRETLS` was given (RFC 8689); kept out of `params`, the envelope says it.
    pub(super) require_tls: bool,
    pub(super) recipients: Vec<String>,
    pub(super) max_size: usize,
    pub(super) bdat: Option<Chunks>,
}

/// BDAT chunks received so far: the bytes go to a staged file in the spool, not to memory.
#[derive(Default)]
pub(super) struct Chunks {
    pub(super) staged: Option<StagedMessage>,
    /// Size and line checks across the chunks.
    pub(super) body: Chunked,
    /// The staged file could not be made (the message is refused at the end of the chunk).
    pub(super) failed: Option<io::Error>,
}

/// The state of one client connection.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Conn,
    pub(super) kind: ListenerKind,
    pub(super) ip: IpAddr,
    pub(super) helo: Option<String>,
    pub(super) esmtp: bool,
    pub(super) app: Option<String>,
    pub(super) tx: Option<Transaction>,
    errors: usize,
    pub(super) closing: bool,
}

enum Next {
    Line(Vec<u8>),
    TooLong,
    Shutdown,
    Failed(io::Error),
}

impl Session {
    pub(super) fn new(shared: Arc<Shared>, conn: Conn, kind: ListenerKind, ip: IpAddr) -> Self {
        Session {
            shared,
            conn,
            kind,
            ip,
            helo: None,
            esmtp: false,
            app: None,
            tx: None,
            errors: 0,
            closing: false,
        }
    }

    /// Runs the session to its end.
    pub(super) async fn run(mut self) {
        let host = self.shared.cfg.server.hostname.clone();
        self.conn
            .queue(format!("220 {host} ESMTP herald ready\r\n").as_bytes());
        tracing::debug!(client = %self.ip, listener = self.kind.name(), "connected");
        while !self.closing {
            match self.next_command().await {
                Next::Line(line) => self.dispatch(&line).await,
                Next::TooLong => self.error(Reply::new(
                    500,
                    "5.5.2",
                    format!(
                        "line too long: at most {} bytes",
                        self.shared.cfg.smtp.max_line_length
                    ),
                )),
                Next::Shutdown => {
                    self.reply(admission::shutting_down(&host));
                    break;
                }
                Next::Failed(e) => self.io_failed(e),
            }
        }
        self.conn.close().await;
    }

    async fn next_command(&mut self) -> Next {
        let max = self.shared.cfg.smtp.max_line_length;
        let timeout = self.shared.cfg.smtp.command_timeout;
        let mut shutdown = self.shared.shutdown.clone();
        if *shutdown.borrow() && !self.conn.has_buffered_input() {
            return Next::Shutdown;
        }
        let read = async {
            match self.conn.read_line(max, timeout).await {
                Ok(Line::Full(l)) => Next::Line(l.to_vec()),
                Ok(Line::TooLong { .. }) => Next::TooLong,
                Err(e) => Next::Failed(e),
            }
        };
        tokio::select! {
            n = read => n,
            _ = async {
                if shutdown.wait_for(|v| *v).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => Next::Shutdown,
        }
    }

    /// Queues a reply, logging every refusal with its reason.
    pub(super) fn reply(&mut self, r: Reply) {
        if r.code >= 400 {
            tracing::info!(client = %self.ip, app = self.app.as_deref().unwrap_or("-"),
                reply = %r, "refused");
            crate::metrics::message_refused(self.app.as_deref().unwrap_or("-"), &r.to_string());
        }
        self.conn.queue(&r.to_wire());
    }

    /// Queues a protocol-error reply and counts it; too many end the session.
    pub(super) fn error(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors >= self.shared.cfg.smtp.max_errors {
            let host = self.shared.cfg.server.hostname.clone();
            self.reply(Reply::new(
                421,
                "4.7.0",
                format!("{host} too many errors in this session; closing"),
            ));
            self.closing = true;
        }
    }

    /// Ends the session after a read failure (a timeout gets a `421`).
    pub(super) fn io_failed(&mut self, e: io::Error) {
        self.closing = true;
        self.tx = None;
        if e.kind() == io::ErrorKind::TimedOut {
            let host = self.shared.cfg.server.hostname.clone();
            self.reply(Reply::new(
                421,
                "4.4.2",
                format!("{host} timeout: the command or message was not complete in time; closing"),
            ));
        } else {
            tracing::debug!(client = %self.ip, error = %e, "connection ended");
        }
    }

    async fn dispatch(&mut self, line: &[u8]) {
        let max_size = self
            .tx
            .as_ref()
            .map_or_else(|| self.max_size(), |t| t.max_size);
        match rawcheck::check(line, max_size) {
            RawVerdict::Parse => {}
            RawVerdict::Refuse(r) => return self.error(r),
            RawVerdict::BdatSize(why) => return self.bdat_refused(why, max_size).await,
        }
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.error(parse_error(e)),
        };
        match req {
            Request::Ehlo { host } => self.hello(host, true),
            Request::Helo { host } => self.hello(host, false),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to.address),
            Request::Data => self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                self.reply(Reply::new(250, "2.0.0", "reset"));
            }
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "OK")),
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                "2.5.0",
                "cannot verify addresses; send the message and herald will try",
            )),
            Request::Help { .. } => self.reply(Reply::new(
                214,
                "2.0.0",
                "commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
            )),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0", "bye"));
                self.closing = true;
            }
            other => self.error(Reply::new(
                502,
                "5.5.1",
                format!("{} is not implemented here", other.name()),
            )),
        }
    }

    fn hello(&mut self, host: String, esmtp: bool) {
        self.tx = None;
        self.esmtp = esmtp;
        let me = self.shared.cfg.server.hostname.clone();
        if !esmtp {
            self.conn
                .queue(format!("250 {me} hello {host}\r\n").as_bytes());
            self.helo = Some(host);
            return;
        }
        let mut lines = vec![
            format!("{me} hello {host}"),
            "PIPELINING".into(),
            format!("SIZE {}", self.max_size()),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
        ];
        if !self.conn.is_tls() && self.shared.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        if self.conn.is_tls() && self.kind != ListenerKind::Plain && self.app.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if self.conn.is_tls() {
            lines.push(super::requiretls::KEYWORD.into());
        }
        lines.push("HELP".into());
        let last = lines.len() - 1;
        for (i, l) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.conn.queue(format!("250{sep}{l}\r\n").as_bytes());
        }
        self.helo = Some(host);
    }

    fn max_size(&self) -> usize {
        self.app
            .as_ref()
            .and_then(|a| self.shared.apps.get(a))
            .and_then(|a| a.max_message_size)
            .unwrap_or(self.shared.cfg.smtp.max_message_size)
    }

    async fn starttls(&mut self) {
        let Some(acceptor) = self.shared.tls.clone() else {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS is not available here"));
        };
        if self.conn.is_tls() {
            return self.error(Reply::new(503, "5.5.1", "TLS is already active"));
        }
        self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
        let timeout = self.shared.cfg.smtp.tls_handshake_timeout;
        if let Err(e) = self.conn.start_tls(&acceptor, timeout).await {
            tracing::info!(client = %self.ip, error = %e, "STARTTLS handshake failed");
            self.closing = true;
            return;
        }
        self.helo = None;
        self.tx = None;
        self.app = None;
    }

    async fn mail(&mut self, from: MailFrom<String>) {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "nested MAIL: send RSET first"));
        }
        let require_tls = from.flags & MAIL_REQUIRETLS != 0;
        if let Some(refusal) = super::requiretls::mail_refusal(require_tls, self.conn.is_tls()) {
            return self.reply(refusal);
        }
        let (patterns, who) = match (&self.app, self.kind) {
            (Some(app), _) => match self.shared.apps.get(app) {
                Some(a) => (a.senders.clone(), format!("app {app}")),
                None => return self.error(Reply::new(530, "5.7.0", "authentication required")),
            },
            (None, ListenerKind::Plain) => (
                self.shared.cfg.smtp.plain_senders.clone(),
                "the plain listener (smtp.plain_senders)".to_string(),
            ),
            (None, _) => {
                let how = if self.conn.is_tls() {
                    "AUTH"
                } else {
                    "STARTTLS, then AUTH"
                };
                return self.error(Reply::new(
                    530,
                    "5.7.0",
                    format!("authentication required: {how} with your app's credentials"),
                ));
            }
        };
        let max = self.max_size();
        if from.size > max {
            return self.reply(Reply::new(
                552,
                "5.3.4",
                format!(
                    "message size {} exceeds the limit of {max} bytes",
                    from.size
                ),
            ));
        }
        if !sender_allowed(&patterns, &from.address) {
            return self.reply(Reply::new(
                550,
                "5.7.1",
                format!("sender <{}> is not allowed for {who}", from.address),
            ));
        }
        if let Some(r) = self.app.as_deref().and_then(|app| {
            let after = self.shared.after.get()?;
            after.pause_refusal(app)
        }) {
            return self.reply(r);
        }
        if let Some(app) = self.app.clone() {
            let per_minute = self.shared.apps.get(&app).map_or(0, |a| a.rate_limit);
            let rate = crate::ratelimit::Rate::per_minute(per_minute);
            match self.shared.rates.take(app.as_str(), rate).await {
                Ok(Ok(())) => {}
                Ok(Err(wait)) => {
                    return self.reply(Reply::new(
                        450,
                        "4.7.1",
                        format!(
                            "app {app} is over its rate limit of {per_minute} messages per \
                             minute; retry in {} s",
                            wait.as_secs() + 1
                        ),
                    ));
                }
                Err(e) => {
                    tracing::error!(app = %app, "cannot check the app's rate limit: {e}");
                    return self.reply(Reply::new(
                        451,
                        "4.3.0",
                        "cannot check the app's rate limit in the cluster database; \
                         retry later",
                    ));
                }
            }
        }
        self.tx = Some(Transaction {
            params: mail_params(&from),
            require_tls,
            mail_from: from.address,
            recipients: Vec::new(),
            max_size: max,
            bdat: None,
        });
        self.reply(Reply::new(250, "2.1.0", "sender OK"));
    }

    fn rcpt(&mut self, to: String) {
        let max = self.shared.cfg.smtp.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.error(Reply::new(503, "5.5.1", "send MAIL first"));
        };
        if to.is_empty() {
            return self.error(Reply::new(501, "5.1.3", "empty recipient address"));
        }
        if let Some(after) = self.shared.after.get()
            && let Some(r) = after.rcpt_refusal(self.app.as_deref(), &tx.mail_from, &to)
        {
            return self.reply(r);
        }
        if !tx.recipients.iter().any(|r| r.eq_ignore_ascii_case(&to)) {
            if tx.recipients.len() >= max {
                return self.reply(Reply::new(
                    452,
                    "4.5.3",
                    format!("too many recipients: at most {max} per message"),
                ));
            }
            tx.recipients.push(to);
        }
        self.reply(Reply::new(250, "2.1.5", "recipient OK"));
    }
}

/// The MAIL FROM parameters as they were given, for the envelope.
fn mail_params(from: &MailFrom<String>) -> Vec<String> {
    let mut p = Vec::new();
    for (flag, text) in [
        (MAIL_BODY_7BIT, "BODY=7BIT"),
        (MAIL_BODY_8BITMIME, "BODY=8BITMIME"),
        (MAIL_BODY_BINARYMIME, "BODY=BINARYMIME"),
        (MAIL_SMTPUTF8, "SMTPUTF8"),
        (MAIL_RET_FULL, "RET=FULL"),
        (MAIL_RET_HDRS, "RET=HDRS"),
    ] {
        if from.flags & flag != 0 {
            p.push(text.to_string());
        }
    }
    if from.size > 0 {
        p.push(format!("SIZE={}", from.size));
    }
    if let Some(id) = &from.env_id {
        p.push(format!("ENVID={id}"));
    }
    p
}

fn parse_error(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(500, "5.5.1", "command not recognized"),
        E::InvalidSenderAddress => Reply::new(501, "5.1.7", "bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, "5.1.3", "bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, "5.5.2", format!("syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("unsupported parameter {param}"))
        }
        _ => Reply::new(500, "5.5.2", "syntax error"),
    }
}
