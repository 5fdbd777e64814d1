//! One mail transaction on an open [`Session`]: the envelope pipelined in one write where the
//! server offers PIPELINING, the message after DATA (dot-stuffed) or, where it also offers
//! CHUNKING, a message of up to 64 KiB in the envelope's write as one `BDAT <size> LAST` chunk
//! (RFC 3030).

use smtp_proto::response::parser::ResponseReceiver;
use smtp_proto::{EXT_8BIT_MIME, EXT_CHUNKING, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Answer, Session, Stream, Transaction, TransactionError, mail_err};

/// The largest message sent as one BDAT chunk in the envelope's write (the size of herald's
/// small-message path; nearly all mail).
const CHUNK_MAX: usize = 64 * 1024;

impl Session {
    /// Runs one transaction: MAIL FROM, every RCPT TO (pipelined when offered), then the
    /// message after DATA, or as one BDAT chunk where CHUNKING is offered too.
    /// An `Err` means the connection broke; [`TransactionError::Stale`] when that was before the
    /// server answered anything of it.
    pub(crate) async fn send(
        &mut self,
        mail_from: &str,
        mail_params: &[String],
        recipients: &[String],
        message: &[u8],
    ) -> Result<Transaction, TransactionError> {
        let result = self
            .transaction(mail_from, mail_params, recipients, message)
            .await;
        match &result {
            Ok(t) if t.answers.iter().any(|a| a.code == 421) => self.broken = true,
            Ok(_) => self.transactions += 1,
            Err(_) => self.broken = true,
        }
        result
    }

    async fn transaction(
        &mut self,
        mail_from: &str,
        mail_params: &[String],
        recipients: &[String],
        message: &[u8],
    ) -> Result<Transaction, TransactionError> {
        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if self.ehlo.has_capability(EXT_SIZE) {
            mail.push_str(&format!(" SIZE={}", message.len()));
        }
        for p in mail_params {
            let upper = p.to_ascii_uppercase();
            if (upper.starts_with("BODY=") && self.ehlo.has_capability(EXT_8BIT_MIME))
                || (upper == "SMTPUTF8" && self.ehlo.has_capability(EXT_SMTP_UTF8))
                || (upper == "REQUIRETLS" && self.offers_requiretls())
            {
                mail.push(' ');
                mail.push_str(p);
            }
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        // With PIPELINING, DATA goes in the same batch (RFC 2920 §3.1): one round trip for
        // the whole envelope; the server refuses DATA itself when no recipient was accepted.
        // With CHUNKING too, a message of up to `CHUNK_MAX` bytes goes in that batch as one
        // `BDAT <size> LAST` chunk (RFC 3030): one round trip per message, no dot-stuffing; a
        // server that refused the envelope reads the chunk and refuses it. A larger message
        // waits for the envelope's replies (DATA): a server that refuses it by its SIZE may
        // close without reading it, and the refusal must be read, not lost in a broken pipe.
        let pipelining = self.ehlo.has_capability(EXT_PIPELINING);
        let chunking =
            pipelining && self.ehlo.has_capability(EXT_CHUNKING) && message.len() <= CHUNK_MAX;
        let mut data_reply = None;
        let (mail_reply, rcpt_replies) = if pipelining {
            let mut batch = mail;
            for r in &rcpts {
                batch.push_str(r);
            }
            let mut replies = if chunking {
                self.chunked(batch, message, rcpts.len() + 2).await?
            } else {
                batch.push_str("DATA\r\n");
                // A failure here leaves no way to tell how many replies came, but the message
                // itself was not sent: an I/O error or EOF means the session was dead already.
                self.pipelined(batch.as_bytes(), rcpts.len() + 2)
                    .await
                    .map_err(envelope_err)?
            };
            data_reply = replies.pop();
            let rest = replies.split_off(1);
            let first = replies
                .pop()
                .ok_or_else(|| TransactionError::Lost("no reply to MAIL FROM".into()))?;
            (first, rest)
        } else {
            let first = self.client.cmd(mail).await.map_err(envelope_err)?;
            let mut rest = Vec::new();
            if (200..300).contains(&first.code) {
                for r in rcpts {
                    rest.push(
                        self.client
                            .cmd(r)
                            .await
                            .map_err(|e| TransactionError::Lost(mail_err(e)))?,
                    );
                }
            }
            (first, rest)
        };
        let mail_answer = Answer::from_response(&mail_reply);
        if !mail_answer.is_positive() {
            if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                // A server that took DATA anyway: end it empty (no recipient was accepted).
                self.end_empty_data().await;
            }
            self.reset(mail_answer.code).await;
            return Ok(Transaction {
                answers: vec![mail_answer; recipients.len()],
            });
        }
        let mut answers: Vec<Answer> = rcpt_replies.iter().map(Answer::from_response).collect();
        if answers.len() != recipients.len() {
            return Err(TransactionError::Lost(
                "the server answered a different number of RCPT commands".into(),
            ));
        }
        let accepted: Vec<usize> = (0..answers.len())
            .filter(|&i| answers[i].is_positive())
            .collect();
        if accepted.is_empty() {
            if data_reply.as_ref().is_some_and(|r| r.code == 354) {
                self.end_empty_data().await;
            }
            self.reset(0).await;
            return Ok(Transaction { answers });
        }
        if chunking {
            let last =
                data_reply.ok_or_else(|| TransactionError::Lost("no reply to BDAT".into()))?;
            let final_answer = Answer::from_response(&last);
            if !final_answer.is_positive() {
                self.reset(final_answer.code).await;
            }
            for i in accepted {
                answers[i] = final_answer.clone();
            }
            return Ok(Transaction { answers });
        }
        let go = match data_reply {
            Some(r) => r,
            None => self
                .client
                .cmd(b"DATA\r\n")
                .await
                .map_err(|e| TransactionError::Lost(mail_err(e)))?,
        };
        let final_answer = if go.code == 354 {
            self.client.timeout = self.timeouts.data;
            let sent = self.write_data(message).await;
            let reply = match sent {
                Ok(()) => tokio::time::timeout(self.timeouts.data, self.client.read())
                    .await
                    .map_err(|_| "no reply to the end of data within the time limit".to_string())
                    .and_then(|r| r.map_err(mail_err)),
                Err(e) => Err(format!("sending the message: {e}")),
            };
            self.client.timeout = self.timeouts.command;
            Answer::from_response(&reply.map_err(TransactionError::Lost)?)
        } else {
            let a = Answer::from_response(&go);
            self.reset(a.code).await;
            a
        };
        for i in accepted {
            answers[i] = final_answer.clone();
        }
        Ok(Transaction { answers })
    }

    /// Sends pipelined commands in one write (one segment, so the server sees them together
    /// and answers them together, RFC 2920) and reads `replies` replies, within the command
    /// time limit. mail-send's `cmds` writes each command on its own: a system call and a
    /// packet each, and a server that answers what it has may answer MAIL before RCPT arrives.
    async fn pipelined(
        &mut self,
        batch: &[u8],
        replies: usize,
    ) -> mail_send::Result<Vec<smtp_proto::Response<String>>> {
        let stream = &mut self.client.stream;
        tokio::time::timeout(self.client.timeout, async {
            stream.write_all(batch).await?;
            stream.flush().await?;
            read_replies(stream, replies)
                .await
                .or_else(|broken| closing(replies, broken))
                .map_err(|(_, e)| e)
        })
        .await
        .map_err(|_| mail_send::Error::Timeout)?
    }

    /// Sends the envelope `batch` followed by the message as one `BDAT <size> LAST` chunk, in
    /// one write (a message that does not end in CRLF gets one, as after DATA), then reads `replies`
    /// replies, all within the data time limit. Nothing answered before the connection broke
    /// means it was dead already ([`TransactionError::Stale`]); a break after the first reply
    /// leaves the outcome unknown ([`TransactionError::Lost`]).
    async fn chunked(
        &mut self,
        mut batch: String,
        message: &[u8],
        replies: usize,
    ) -> Result<Vec<Response<String>>, TransactionError> {
        let ending: &[u8] = if message.ends_with(b"\r\n") {
            b""
        } else {
            b"\r\n"
        };
        batch.push_str(&format!("BDAT {} LAST\r\n", message.len() + ending.len()));
        let stream = &mut self.client.stream;
        let sent = tokio::time::timeout(self.timeouts.data, async {
            let written = async {
                let mut out = batch.into_bytes();
                out.extend_from_slice(message);
                out.extend_from_slice(ending);
                stream.write_all(&out).await?;
                stream.flush().await
            };
            written
                .await
                .map_err(|e| (Vec::new(), mail_send::Error::Io(e)))?;
            read_replies(stream, replies)
                .await
                .or_else(|broken| closing(replies, broken))
        })
        .await;
        match sent {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err((got, e))) if got.is_empty() => Err(envelope_err(e)),
            Ok(Err((_, e))) => Err(TransactionError::Lost(mail_err(e))),
            Err(_) => Err(TransactionError::Lost(
                "no reply to the message (BDAT) within the time limit".into(),
            )),
        }
    }

    /// Writes the message with dot-stuffing and the end-of-data marker, a slice at a time (the
    /// message is mapped from the spool; it is never copied whole into memory).
    async fn write_data(&mut self, message: &[u8]) -> std::io::Result<()> {
        const SLICE: usize = 64 * 1024;
        let stream = &mut self.client.stream;
        tokio::time::timeout(self.timeouts.data, async {
            let mut out = Vec::with_capacity(message.len().min(SLICE) + SLICE / 16 + 8);
            let mut line_start = true;
            let mut slices = message.chunks(SLICE).peekable();
            while let Some(slice) = slices.next() {
                out.clear();
                dot_stuff(slice, &mut line_start, &mut out);
                if slices.peek().is_some() {
                    stream.write_all(&out).await?;
                }
            }
            // The end of data goes out with the last slice: one write (one TLS record) for a
            // message that fits in a slice, not two.
            if !message.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "sending data timed out"))?
    }

    /// Ends a DATA the server should have refused, sending no message.
    async fn end_empty_data(&mut self) {
        if self.client.cmd(b".\r\n").await.is_err() {
            self.broken = true;
        }
    }

    async fn reset(&mut self, code: u16) {
        if code == 421 || self.client.cmd(b"RSET\r\n").await.is_err() {
            self.broken = true;
        }
    }
}

/// Appends `slice` to `out` with a dot doubled at the start of every line (RFC 5321
/// §4.5.2), a line at a time; `line_start` carries whether the next byte starts a line.
fn dot_stuff(mut slice: &[u8], line_start: &mut bool, out: &mut Vec<u8>) {
    while let Some(&first) = slice.first() {
        if *line_start && first == b'.' {
            out.push(b'.');
        }
        match slice.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.extend_from_slice(&slice[..=i]);
                slice = &slice[i + 1..];
                *line_start = true;
            }
            None => {
                out.extend_from_slice(slice);
                *line_start = false;
                return;
            }
        }
    }
}

/// Replies read before the connection broke, and how it broke.
type Broken = (Vec<Response<String>>, mail_send::Error);

/// Reads `count` replies (pipelined commands, in order). On failure, also gives the replies
/// that had come, which tells a dead connection (none) from a transaction broken half-way, and
/// keeps a server's last words (a `421` before it closes).
async fn read_replies(stream: &mut Stream, count: usize) -> Result<Vec<Response<String>>, Broken> {
    let mut buf = [0u8; 1024];
    let mut replies = Vec::with_capacity(count);
    let mut parser = ResponseReceiver::default();
    while replies.len() < count {
        let read = match stream.read(&mut buf).await {
            Ok(0) => return Err((replies, mail_send::Error::UnparseableReply)),
            Ok(n) => n,
            Err(e) => return Err((replies, mail_send::Error::Io(e))),
        };
        let mut bytes = buf[..read].iter();
        while replies.len() < count {
            match parser.parse(&mut bytes) {
                Ok(reply) => {
                    replies.push(reply);
                    parser.reset();
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => break,
                Err(_) => return Err((replies, mail_send::Error::UnparseableReply)),
            }
        }
    }
    Ok(replies)
}

/// A server may answer any command with `421` and close (RFC 5321 §3.8): when one of the
/// replies that came before the connection ended is a `421`, it answers the whole
/// transaction (every later command, MAIL or RCPT or DATA, gets it: a deferral with the
/// server's own words, classified like any other), instead of an unreadable broken session.
fn closing(count: usize, broken: Broken) -> Result<Vec<Response<String>>, Broken> {
    match broken.0.iter().find(|r| r.code == 421) {
        Some(last_words) => Ok(vec![last_words.clone(); count]),
        None => Err(broken),
    }
}

/// An error at the start of the envelope: a dead connection (an I/O error such as a broken
/// pipe or reset, or EOF, which mail-send reports as an unparseable reply) is stale; anything
/// else (a timeout: the server is there but slow) is lost.
fn envelope_err(e: mail_send::Error) -> TransactionError {
    match e {
        mail_send::Error::Io(_) | mail_send::Error::UnparseableReply => {
            TransactionError::Stale(mail_err(e))
        }
        other => TransactionError::Lost(mail_err(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::dot_stuff;

    #[test]
    fn dots_are_doubled_at_line_starts_across_slices() {
        let mut out = Vec::new();
        let mut line_start = true;
        dot_stuff(b".a\r\nb.\r\n..c\r\n.", &mut line_start, &mut out);
        dot_stuff(b"d\r\n.", &mut line_start, &mut out);
        assert_eq!(out, b"..a\r\nb.\r\n...c\r\n..d\r\n..");
        assert!(!line_start);
    }
}
