//! The message itself: DATA and BDAT read while streaming (size, line length and line endings
//! checked as the bytes arrive) into a staged file in the spool, so memory does not grow with
//! the message; then sender policy on the `From:` header (the header section, bounded, is the
//! only part copied into memory), hygiene headers, signing from the mapped file, and the
//! durable spool before the `250`.

use std::io;

use super::conn::Line;
use super::hygiene::{self, Trace};
use super::mailbox::{field_values, mailbox_list};
use super::policy::sender_allowed;
use super::rawcheck::BdatSize;
use super::session::Session;
use crate::clock::unix_now;
use crate::reply::Reply;
use crate::spool::{Envelope, StagedMessage};

/// The largest header section herald reads into memory (to check `From:` and sign); a message
/// whose header section is larger is refused.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Why a message was refused while it streamed in.
enum Fault {
    TooBig,
    Bare,
    LongLine,
    Storage(io::Error),
}

impl Session {
    /// DATA: `354`, then lines up to CRLF.CRLF. Only a dot line after a CRLF ends the data,
    /// so `\n.\r\n` and friends never end a message early (they make it refused instead).
    pub(super) async fn data(&mut self) {
        let Some(tx) = self.tx.as_ref() else {
            return self.error(Reply::new(503, "5.5.1", "send MAIL and RCPT first"));
        };
        if tx.recipients.is_empty() {
            return self.error(Reply::new(503, "5.5.1", "send RCPT first"));
        }
        if tx.bdat.is_some() {
            return self.error(Reply::new(503, "5.5.1", "DATA cannot follow BDAT"));
        }
        let max = tx.max_size;
        let max_line = self.shared.cfg.smtp.max_line_length;
        let timeout = self.shared.cfg.smtp.data_timeout;
        let mut staged = match self.shared.spool.stage() {
            Ok(s) => Some(s),
            Err(e) => return self.refuse(Fault::Storage(e), max),
        };
        self.conn
            .queue(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
        // The whole message must arrive within data_timeout of the 354 (not per read).
        if let Err(e) = self.conn.flush().await {
            return self.io_failed(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut fault = None;
        let mut size = 0usize;
        let mut prev_crlf = true;
        loop {
            let line = match self.conn.read_line_until(max_line, deadline).await {
                Ok(Line::Full(l)) => l,
                Ok(Line::TooLong { crlf }) => {
                    fault.get_or_insert(Fault::LongLine);
                    staged = None;
                    prev_crlf = crlf;
                    continue;
                }
                Err(e) => return self.io_failed(e),
            };
            if prev_crlf && line == b".\r\n" {
                break;
            }
            let crlf = line.ends_with(b"\r\n");
            let text = &line[..line.len() - if crlf { 2 } else { 1 }];
            if !crlf || text.contains(&b'\r') {
                fault.get_or_insert(Fault::Bare);
            }
            let content = match line.split_first() {
                Some((b'.', rest)) if prev_crlf => rest,
                _ => line,
            };
            size += content.len();
            if size > max {
                fault = Some(Fault::TooBig);
            }
            if fault.is_some() {
                staged = None;
            } else if let Some(file) = staged.as_mut()
                && let Err(e) = file.write(content)
            {
                fault = Some(Fault::Storage(e));
                staged = None;
            }
            prev_crlf = crlf;
        }
        match (fault, staged) {
            (Some(f), _) => self.refuse(f, max),
            (None, Some(staged)) => self.accept(staged).await,
            (None, None) => self.refuse(
                Fault::Storage(io::Error::other("staged message missing")),
                max,
            ),
        }
    }

    /// BDAT: the chunk is always read (and thrown away when there is nothing to add it to);
    /// the message is checked and accepted at `LAST`.
    pub(super) async fn bdat(&mut self, chunk_size: usize, last: bool) {
        let timeout = self.shared.cfg.smtp.data_timeout;
        let max_line = self.shared.cfg.smtp.max_line_length;
        let ready = self.tx.as_ref().is_some_and(|t| !t.recipients.is_empty());
        let max = self.tx.as_ref().map_or(0, |t| t.max_size);
        let mut chunks = self
            .tx
            .as_mut()
            .and_then(|t| t.bdat.take())
            .unwrap_or_default();
        if ready && chunks.staged.is_none() && chunks.failed.is_none() {
            match self.shared.spool.stage() {
                Ok(s) => chunks.staged = Some(s),
                Err(e) => chunks.failed = Some(e),
            }
        }
        let read = self
            .conn
            .read_chunk(chunk_size, timeout, |bytes| {
                if !ready {
                    return;
                }
                chunks.check.feed(bytes);
                chunks.size += bytes.len();
                if chunks.size > max {
                    chunks.staged = None;
                } else if let Some(file) = chunks.staged.as_mut()
                    && let Err(e) = file.write(bytes)
                {
                    chunks.failed = Some(e);
                    chunks.staged = None;
                }
            })
            .await;
        if let Err(e) = read {
            return self.io_failed(e);
        }
        if !ready {
            return self.error(Reply::new(503, "5.5.1", "send MAIL and RCPT before BDAT"));
        }
        if chunks.size > max {
            return self.refuse(Fault::TooBig, max);
        }
        if chunks.check.longest > max_line {
            return self.refuse(Fault::LongLine, max);
        }
        if let Some(e) = chunks.failed.take() {
            return self.refuse(Fault::Storage(e), max);
        }
        if !last {
            let size = chunks.size;
            if let Some(t) = self.tx.as_mut() {
                t.bdat = Some(chunks);
            }
            return self.reply(Reply::new(
                250,
                "2.0.0",
                format!("{chunk_size} octets received, {size} in total"),
            ));
        }
        chunks.check.finish();
        if chunks.check.bare {
            return self.refuse(Fault::Bare, max);
        }
        match chunks.staged.take() {
            Some(staged) => self.accept(staged).await,
            None => self.refuse(
                Fault::Storage(io::Error::other("staged message missing")),
                max,
            ),
        }
    }

    /// A BDAT size refused before any of its chunk is read: `552 5.3.4` (or `501 5.5.4` for
    /// a size that is not a number) goes out at once. A chunk whose size is a number is then
    /// skipped (thrown away as it arrives, within `data_timeout`) so the session stays in
    /// step; one that cannot be framed (not a number, or beyond 64 bits) ends the session.
    pub(super) async fn bdat_refused(&mut self, why: BdatSize, max: usize) {
        self.tx = None;
        let skip = match why {
            BdatSize::TooBig(n) => {
                self.reply(Reply::new(
                    552,
                    "5.3.4",
                    format!("BDAT chunk larger than the message size limit of {max} bytes"),
                ));
                n.and_then(|n| usize::try_from(n).ok())
            }
            BdatSize::Unparsable => {
                self.reply(Reply::new(
                    501,
                    "5.5.4",
                    "BDAT needs a chunk size in decimal octets (BDAT <size> [LAST]); closing, \
                     since the chunk that follows cannot be framed",
                ));
                None
            }
        };
        let Some(n) = skip else {
            self.closing = true;
            return;
        };
        let timeout = self.shared.cfg.smtp.data_timeout;
        if let Err(e) = self.conn.read_chunk(n, timeout, |_| {}).await {
            self.io_failed(e);
        }
    }

    fn refuse(&mut self, fault: Fault, max: usize) {
        self.tx = None;
        let max_line = self.shared.cfg.smtp.max_line_length;
        self.reply(match fault {
            Fault::TooBig => Reply::new(
                552,
                "5.3.4",
                format!("message too big: the limit is {max} bytes"),
            ),
            Fault::Bare => Reply::new(
                550,
                "5.6.0",
                "message contains a bare CR or bare LF: every line must end with CRLF \
                 (refused to prevent SMTP smuggling)",
            ),
            Fault::LongLine => Reply::new(
                550,
                "5.6.0",
                format!("message has a line longer than {max_line} bytes; wrap or encode it"),
            ),
            Fault::Storage(e) => {
                tracing::error!(client = %self.ip, error = %e,
                    "cannot write the incoming message to the spool");
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    Reply::new(
                        452,
                        "4.3.1",
                        "herald's spool is out of disk space; try again later",
                    )
                } else {
                    Reply::new(
                        451,
                        "4.3.0",
                        "could not store the message safely; try again later",
                    )
                }
            }
        });
    }

    /// Checks the header `From:`, adds trace headers, signs and spools; `250` only after fsync.
    async fn accept(&mut self, mut staged: StagedMessage) {
        let end_of_data = std::time::Instant::now();
        let Some(tx) = self.tx.take() else { return };
        let body = match staged.map() {
            Ok(b) => b,
            Err(e) => return self.refuse(Fault::Storage(e), tx.max_size),
        };
        let window = &body[..body.len().min(MAX_HEADER_SECTION)];
        let header_len = hygiene::header_end(window);
        if header_len == window.len() && window.len() < body.len() {
            return self.reply(Reply::new(
                552,
                "5.3.4",
                format!(
                    "the header section is larger than {} KiB (no blank line before it ends); \
                     put large content in the body",
                    MAX_HEADER_SECTION / 1024
                ),
            ));
        }
        let headers = body[..header_len].to_vec();
        let (patterns, who) = match &self.app {
            Some(app) => (
                self.shared
                    .apps
                    .get(app)
                    .map(|a| a.senders.clone())
                    .unwrap_or_default(),
                format!("app {app}"),
            ),
            None => (
                self.shared.cfg.smtp.plain_senders.clone(),
                "the plain listener (smtp.plain_senders)".to_string(),
            ),
        };
        if let Err(why) = author_fields_allowed(&headers, &patterns, &who) {
            return self.reply(Reply::new(550, "5.7.1", why));
        }
        let may_lower_tls = self
            .app
            .as_ref()
            .and_then(|a| self.shared.apps.get(a))
            .is_some_and(|a| a.allow_tls_optional);
        let tls_request = match super::requiretls::tls_request(
            tx.require_tls,
            &headers,
            &who,
            self.app.as_deref(),
            may_lower_tls,
        ) {
            Ok(r) => r,
            Err(refusal) => return self.reply(refusal),
        };
        let tls = self.conn.tls_info();
        let helo = self.helo.clone().unwrap_or_default();
        let trace = hygiene::trace_fields(
            &headers,
            &Trace {
                helo: &helo,
                esmtp: self.esmtp,
                client_ip: self.ip,
                hostname: &self.shared.cfg.server.hostname,
                tls: tls.as_deref(),
                app: self.app.as_deref(),
            },
            chrono::Utc::now(),
        );
        let mut trace = trace;
        // [web] one-click unsubscribe headers (RFC 8058), signed with the rest: for a message
        // with one recipient (the link names it) whose app set none itself.
        if let (Some(app), Some(oc), [rcpt]) = (
            self.app.as_deref(),
            crate::web::unsubscribe::installed(),
            tx.recipients.as_slice(),
        ) && crate::web::unsubscribe::wanted_by(&self.shared.cfg, Some(app))
            && !hygiene::has_header(&headers, "List-Unsubscribe")
        {
            trace.extend_from_slice(&oc.header_fields(app, &tx.mail_from, rcpt));
        }
        let head = match self.shared.signer.sign_parts(trace, headers, body).await {
            Ok((mut signatures, trace)) => {
                signatures.extend_from_slice(&trace);
                signatures
            }
            Err(r) => return self.reply(r),
        };
        let size = head.len() as u64 + staged.len();
        let recipients = tx.recipients.len();
        let envelope = Envelope {
            app: self.app.clone(),
            mail_from: tx.mail_from.clone(),
            mail_from_params: tx.params,
            recipients: tx.recipients,
            received_at: unix_now(),
            client_ip: self.ip,
            helo,
            tls: tls.clone(),
            tls_report: false,
            tls_request,
        };
        match self.shared.spool.commit(envelope, head, staged).await {
            Ok(id) => {
                tracing::info!(
                    queue_id = %id,
                    app = self.app.as_deref().unwrap_or("-"),
                    sender = %tx.mail_from,
                    recipients,
                    size,
                    tls = tls.as_deref().unwrap_or("none"),
                    tls_request = tls_request.label().unwrap_or("-"),
                    "accepted"
                );
                self.reply(Reply::new(250, "2.0.0", format!("queued as {id}")));
                crate::metrics::submission_answered(end_of_data.elapsed());
            }
            Err(e) => {
                tracing::error!(client = %self.ip, error = %e, "cannot store message in the spool");
                self.reply(Reply::new(
                    451,
                    "4.3.0",
                    "could not store the message safely; try again later",
                ));
            }
        }
    }
}

/// The `From:` field (exactly one, a strict RFC 5322 mailbox-list) and the `Sender:` field
/// (at most one, one mailbox) must name only addresses the client may use. `Reply-To:` is
/// free. `Err` holds the words of the `550 5.7.1` refusal.
fn author_fields_allowed(headers: &[u8], patterns: &[String], who: &str) -> Result<(), String> {
    let froms = field_values(headers, "From");
    let from = match froms.as_slice() {
        [] => {
            return Err(format!(
                "the message has no From: header; add one with an address {who} may use"
            ));
        }
        [one] => one,
        _ => return Err("the message has more than one From: header; send exactly one".into()),
    };
    let addresses = mailbox_list(from).map_err(|e| {
        format!("the From: header is not a valid RFC 5322 address list ({e}); fix its syntax")
    })?;
    if let Some(bad) = addresses.iter().find(|a| !sender_allowed(patterns, a)) {
        return Err(format!(
            "From: header address <{bad}> is not allowed for {who}"
        ));
    }
    let senders = field_values(headers, "Sender");
    match senders.as_slice() {
        [] => Ok(()),
        [one] => match mailbox_list(one).as_deref() {
            Ok([addr]) if sender_allowed(patterns, addr) => Ok(()),
            Ok([addr]) => Err(format!(
                "Sender: header address <{addr}> is not allowed for {who}"
            )),
            Ok(_) => Err("the Sender: header must name exactly one address".into()),
            Err(e) => Err(format!(
                "the Sender: header is not a valid RFC 5322 address ({e}); fix its syntax"
            )),
        },
        _ => Err("the message has more than one Sender: header; send at most one".into()),
    }
}
