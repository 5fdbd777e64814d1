//! The message itself: DATA and BDAT read while streaming (size, line length and line endings
//! checked as the bytes arrive) into a staged file in the spool, so memory does not grow with
//! the message; then sender policy on the `From:` header (the header section, bounded, is the
//! only part copied into memory), hygiene headers, signing from the mapped file, and the
//! durable spool before the `250`.

use std::io;

use super::hygiene::{self, Trace};
use super::mailbox::{field_values, mailbox_list};
use super::policy::sender_allowed;
use super::rawcheck::BdatSize;
use super::session::Session;
use crate::clock::unix_now;
use crate::reply::Reply;
use crate::smtp_server::data::{self, DataLimits, Fault};
use crate::spool::{Envelope, StagedMessage};

/// The largest header section herald reads into memory (to check `From:` and sign); a message
/// whose header section is larger is refused.
pub(super) const MAX_HEADER_SECTION: usize = 1024 * 1024;

impl Session {
    /// DATA: `354`, then the data framed by the server core ([`crate::smtp_server::data`]):
    /// only CRLF.CRLF ends it, so `\n.\r\n` and friends never end a message early (they
    /// make it refused instead). The bytes stream into a staged file in the spool.
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
        let limits = self.limits(tx.max_size);
        let timeout = self.shared.cfg.smtp.data_timeout;
        let mut staged = match self.shared.spool.stage() {
            Ok(s) => s,
            Err(e) => return self.refuse(Fault::Sink(e), limits),
        };
        self.conn
            .queue(b"354 Start mail input; end with <CRLF>.<CRLF>\r\n");
        // The whole message must arrive within data_timeout of the 354 (not per read).
        if let Err(e) = self.conn.flush().await {
            return self.io_failed(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match data::read_data(&mut self.conn, limits, deadline, &mut staged).await {
            Ok(Ok(_)) => self.accept(staged).await,
            Ok(Err(fault)) => self.refuse(fault, limits),
            Err(e) => self.io_failed(e),
        }
    }

    /// The data limits of the transaction (`max_size`: the app's or the listener's).
    fn limits(&self, max_size: usize) -> DataLimits {
        DataLimits {
            max_size,
            max_line: self.shared.cfg.smtp.max_line_length,
        }
    }

    /// BDAT: the chunk is always read (and thrown away when there is nothing to add it to);
    /// the message is checked and accepted at `LAST`.
    pub(super) async fn bdat(&mut self, chunk_size: usize, last: bool) {
        let timeout = self.shared.cfg.smtp.data_timeout;
        let ready = self.tx.as_ref().is_some_and(|t| !t.recipients.is_empty());
        let limits = self.limits(self.tx.as_ref().map_or(0, |t| t.max_size));
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
                let sink = chunks.staged.as_mut().map(|s| s as &mut dyn data::DataSink);
                chunks.body.feed(bytes, &limits, sink);
            })
            .await;
        if let Err(e) = read {
            return self.io_failed(e);
        }
        if !ready {
            return self.error(Reply::new(503, "5.5.1", "send MAIL and RCPT before BDAT"));
        }
        if let Some(fault) = chunks.body.refused(&limits) {
            return self.refuse(fault, limits);
        }
        if let Some(e) = chunks.failed.take() {
            return self.refuse(Fault::Sink(e), limits);
        }
        if !last {
            let size = chunks.body.size;
            if let Some(t) = self.tx.as_mut() {
                t.bdat = Some(chunks);
            }
            return self.reply(Reply::new(
                250,
                "2.0.0",
                format!("{chunk_size} octets received, {size} in total"),
            ));
        }
        let staged = chunks.staged.take();
        if let Err(fault) = chunks.body.finish() {
            return self.refuse(fault, limits);
        }
        match staged {
            Some(staged) => self.accept(staged).await,
            None => self.refuse(
                Fault::Sink(io::Error::other("staged message missing")),
                limits,
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

    fn refuse(&mut self, fault: Fault, limits: DataLimits) {
        self.tx = None;
        if let Some(reply) = fault.reply(&limits) {
            return self.reply(reply);
        }
        let Fault::Sink(e) = fault else { return };
        tracing::error!(client = %self.ip, error = %e,
            "cannot write the incoming message to the spool");
        self.reply(if e.raw_os_error() == Some(libc::ENOSPC) {
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
        });
    }

    /// Checks the header `From:`, adds trace headers, signs and spools; `250` only after fsync.
    async fn accept(&mut self, mut staged: StagedMessage) {
        let end_of_data = std::time::Instant::now();
        let Some(tx) = self.tx.take() else { return };
        let body = match staged.map() {
            Ok(b) => b,
            Err(e) => return self.refuse(Fault::Sink(e), self.limits(tx.max_size)),
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
        if let Err(refusal) = author_fields_allowed(&headers, &patterns, &who) {
            return self.reply(refusal);
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
        let after = self.shared.after.get();
        if let (Some(after), Some(app)) = (after, self.app.as_deref()) {
            trace.extend_from_slice(&after.headers(app, &tx.recipients, unix_now()));
        }
        let return_path_domain = self
            .app
            .as_ref()
            .and_then(|a| self.shared.apps.get(a))
            .and_then(|a| a.return_path_domain.clone())
            .filter(|_| after.is_some());
        // [history] what the `accepted` events need, taken before signing consumes it.
        let accepted = crate::events::hub().has_subscribers().then(|| {
            let message_id =
                crate::events::message_id(&headers).or_else(|| crate::events::message_id(&trace));
            (message_id, tx.recipients.clone())
        });
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
            return_path_domain,
        };
        match self.shared.spool.commit(envelope, head, staged).await {
            Ok(id) => {
                tracing::info!(
                    event = "accepted",
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
                if let Some((message_id, rcpts)) = accepted {
                    for rcpt in rcpts {
                        let mut e = crate::events::Event::new(
                            crate::events::EventKind::Accepted,
                            unix_now(),
                            rcpt,
                        );
                        e.app = self.app.clone();
                        e.queue_id = Some(id.to_string());
                        e.message_id = message_id.clone();
                        e.sender = tx.mail_from.clone();
                        e.remote = Some(format!("[{}]", self.ip));
                        e.tls = tls.clone();
                        crate::events::hub().emit(e);
                    }
                }
            }
            Err(e) => {
                tracing::error!(client = %self.ip, error = %e, "cannot store message in the spool");
                let full = matches!(&e, crate::spool::SpoolError::Io(io)
                    if io.kind() == std::io::ErrorKind::StorageFull);
                self.reply(if full {
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
                });
            }
        }
    }
}

/// The `From:` field (exactly one, a strict RFC 5322 mailbox-list) and the `Sender:` field
/// (at most one, one mailbox) must name only addresses the client may use. `Reply-To:` is
/// free. `Err` is the `550 5.7.1` refusal.
fn author_fields_allowed(headers: &[u8], patterns: &[String], who: &str) -> Result<(), Reply> {
    let froms = field_values(headers, "From");
    let from = match froms.as_slice() {
        [] => {
            return Err(refuse(format!(
                "the message has no From: header; add one with an address {who} may use"
            )));
        }
        [one] => one,
        _ => {
            return Err(refuse(
                "the message has more than one From: header; send exactly one",
            ));
        }
    };
    let addresses = mailbox_list(from).map_err(|e| {
        refuse(format!(
            "the From: header is not a valid RFC 5322 address list ({e}); fix its syntax"
        ))
    })?;
    if let Some(bad) = addresses.iter().find(|a| !sender_allowed(patterns, a)) {
        return Err(refuse(format!(
            "From: header address <{bad}> is not allowed for {who}"
        )));
    }
    let senders = field_values(headers, "Sender");
    match senders.as_slice() {
        [] => Ok(()),
        [one] => match mailbox_list(one).as_deref() {
            Ok([addr]) if sender_allowed(patterns, addr) => Ok(()),
            Ok([addr]) => Err(refuse(format!(
                "Sender: header address <{addr}> is not allowed for {who}"
            ))),
            Ok(_) => Err(refuse("the Sender: header must name exactly one address")),
            Err(e) => Err(refuse(format!(
                "the Sender: header is not a valid RFC 5322 address ({e}); fix its syntax"
            ))),
        },
        _ => Err(refuse(
            "the message has more than one Sender: header; send at most one",
        )),
    }
}

/// The `550 5.7.1` refusal of a message whose author fields the client may not use.
fn refuse(words: impl Into<String>) -> Reply {
    Reply::new(550, "5.7.1", words)
}
