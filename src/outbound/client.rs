//! One SMTP client session with a remote host (mail-send's `SmtpClient` underneath): greeting,
//! EHLO, STARTTLS with our connectors, optional AUTH, then any number of transactions.

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::report::tlsrpt::ResultType;
use mail_send::{Credentials, SmtpClient};
use smtp_proto::EhloResponse;
use smtp_proto::{
    EXT_8BIT_MIME, EXT_AUTH, EXT_PIPELINING, EXT_REQUIRE_TLS, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::reply::EnhancedStatus;

pub use super::outcome::Answer;
pub use super::stream::Stream;
use super::tls::{OutboundTls, result_type};

/// How a session must treat TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, any certificate (verification recorded).
    Opportunistic,
    /// STARTTLS required, certificate verified against the host name.
    Strict,
    /// No STARTTLS (retry in clear after a failed opportunistic handshake).
    Off,
}

/// What TLS a session ended up with.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// Whether the certificate verified and matched the host name.
    pub verified: bool,
    /// Why it did not verify.
    pub problem: Option<String>,
    /// The TLS-RPT classification of that problem.
    pub problem_type: Option<ResultType>,
}

/// Why a session could not be set up.
#[derive(Debug, Clone)]
pub enum OpenError {
    /// TCP connect failed or timed out.
    Connect(String),
    /// The server refused us (greeting, EHLO or AUTH not 2xx).
    Refused(Answer),
    /// TLS could not be set up as required.
    Tls {
        /// What went wrong.
        detail: String,
        /// The TLS-RPT result type.
        result_type: ResultType,
    },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Connect(s) => write!(f, "connection failed: {s}"),
            OpenError::Refused(a) => write!(f, "{a}"),
            OpenError::Tls { detail, .. } => write!(f, "TLS failed: {detail}"),
        }
    }
}

/// Per-stage time limits (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connect and greeting.
    pub connect: Duration,
    /// Each command.
    pub command: Duration,
    /// The reply to the end of data.
    pub data: Duration,
}

/// An open, greeted (and possibly encrypted and authenticated) SMTP session.
pub struct Session {
    client: SmtpClient<Stream>,
    ehlo: EhloResponse<String>,
    timeouts: Timeouts,
    /// The host name the session was opened for (SNI, certificate name).
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// TLS, when established.
    pub tls: Option<TlsInfo>,
    /// Transactions completed on this session.
    pub transactions: u32,
    /// Set when the connection can no longer be used (I/O error, 421).
    pub broken: bool,
}

/// The outcome of one mail transaction: one final answer per recipient, in order.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// The final answer for each recipient (its RCPT reply when refused, else the DATA reply).
    pub answers: Vec<Answer>,
}

/// How a transaction failed: whether the server can have taken anything of it decides whether
/// the message may go at once over another connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionError {
    /// The connection was already dead when the transaction began (EOF, reset or broken pipe
    /// before any reply to the envelope): nothing of this transaction reached the server. On a
    /// reused idle session this is the remote having closed or restarted since.
    Stale(String),
    /// The connection broke later in the transaction; nothing was delivered for sure.
    Lost(String),
}

impl TransactionError {
    /// What went wrong, for logs and replies.
    pub fn detail(&self) -> &str {
        match self {
            TransactionError::Stale(d) | TransactionError::Lost(d) => d,
        }
    }
}

fn mail_err(e: mail_send::Error) -> String {
    match e {
        mail_send::Error::UnexpectedReply(r) => Answer::from_response(&r).to_string(),
        other => other.to_string(),
    }
}

impl Session {
    /// Connects to `addr`, reads the greeting, says EHLO as `helo`, starts TLS per `mode`,
    /// and authenticates with `credentials` when given.
    pub async fn open(
        addr: SocketAddr,
        host: &str,
        helo: &str,
        mode: TlsMode,
        tls: &OutboundTls,
        timeouts: Timeouts,
        credentials: Option<&Credentials<String>>,
    ) -> Result<Session, OpenError> {
        let mut client = SmtpClient::connect(addr, timeouts.connect)
            .await
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let greeting = tokio::time::timeout(timeouts.connect, client.read())
            .await
            .map_err(|_| OpenError::Connect("no greeting within the time limit".into()))?
            .map_err(|e| OpenError::Connect(format!("reading the greeting: {e}")))?;
        if greeting.code != 220 {
            return Err(OpenError::Refused(Answer::from_response(&greeting)));
        }
        client.timeout = timeouts.command;
        let ehlo = greet(&mut client, helo).await?;
        let offers_tls = ehlo.has_capability(EXT_START_TLS);
        let (client, ehlo, tls_info) = match (mode, offers_tls) {
            (TlsMode::Strict, false) => {
                return Err(OpenError::Tls {
                    detail: "the server does not offer STARTTLS".into(),
                    result_type: ResultType::StartTlsNotSupported,
                });
            }
            (TlsMode::Off, _) | (TlsMode::Opportunistic, false) => (
                SmtpClient {
                    stream: Stream::Plain(client.stream),
                    timeout: client.timeout,
                },
                ehlo,
                None,
            ),
            (TlsMode::Strict | TlsMode::Opportunistic, true) => {
                let connector = if mode == TlsMode::Strict {
                    &tls.strict
                } else {
                    &tls.opportunistic
                };
                let sni = host.trim_end_matches('.');
                let tls_client = client.start_tls(connector, sni).await.map_err(|e| {
                    let result_type = match &e {
                        mail_send::Error::Tls(err) => result_type(err),
                        mail_send::Error::UnexpectedReply(_) => ResultType::StartTlsNotSupported,
                        _ => ResultType::ValidationFailure,
                    };
                    OpenError::Tls {
                        detail: mail_err(e),
                        result_type,
                    }
                })?;
                let conn = tls_client.tls_connection();
                let version = match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                    Some(v) => format!("{v:?}"),
                    None => "unknown".to_string(),
                };
                let check = match conn.peer_certificates() {
                    Some(chain) => tls.verify(chain, sni),
                    None => Err(rustls::Error::NoCertificatesPresented),
                };
                let info = TlsInfo {
                    version,
                    verified: check.is_ok(),
                    problem: check.as_ref().err().map(|e| e.to_string()),
                    problem_type: check.as_ref().err().map(result_type),
                };
                let mut client = SmtpClient {
                    stream: Stream::Tls(Box::new(tls_client.stream)),
                    timeout: timeouts.command,
                };
                let ehlo = client.ehlo(helo).await.map_err(refused)?;
                (client, ehlo, Some(info))
            }
        };
        let mut session = Session {
            client,
            ehlo,
            timeouts,
            host: host.to_string(),
            addr,
            tls: tls_info,
            transactions: 0,
            broken: false,
        };
        if let Some(credentials) = credentials {
            if !session.ehlo.has_capability(EXT_AUTH) {
                return Err(OpenError::Refused(Answer::new(
                    530,
                    EnhancedStatus::parse("5.7.0"),
                    "the relay host does not offer AUTH",
                )));
            }
            let ehlo = session.ehlo.clone();
            session
                .client
                .authenticate(credentials, &ehlo)
                .await
                .map_err(|e| match e {
                    mail_send::Error::AuthenticationFailed(r)
                    | mail_send::Error::UnexpectedReply(r) => {
                        OpenError::Refused(Answer::from_response(&r))
                    }
                    other => OpenError::Refused(Answer::new(
                        454,
                        EnhancedStatus::parse("4.7.0"),
                        format!("authentication failed: {other}"),
                    )),
                })?;
        }
        Ok(session)
    }

    /// Whether the server advertised REQUIRETLS (RFC 8689) in its EHLO reply.
    pub fn offers_requiretls(&self) -> bool {
        self.ehlo.has_capability(EXT_REQUIRE_TLS)
    }

    /// Runs one transaction: MAIL FROM, every RCPT TO (pipelined when offered), DATA.
    /// An `Err` means the connection broke; [`TransactionError::Stale`] when that was before the
    /// server answered anything of it.
    pub async fn send(
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
        let mut data_reply = None;
        let (mail_reply, rcpt_replies) = if self.ehlo.has_capability(EXT_PIPELINING) {
            let mut batch = mail;
            for r in &rcpts {
                batch.push_str(r);
            }
            batch.push_str("DATA\r\n");
            // A failure here leaves no way to tell how many replies came, but the message
            // itself was not sent: an I/O error or EOF means the session was dead already.
            let mut replies = self
                .pipelined(batch.as_bytes(), rcpts.len() + 2)
                .await
                .map_err(envelope_err)?;
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
        let client = &mut self.client;
        tokio::time::timeout(client.timeout, async {
            client.stream.write_all(batch).await?;
            client.stream.flush().await?;
            client.read_many(replies).await
        })
        .await
        .map_err(|_| mail_send::Error::Timeout)?
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

    /// Says QUIT and closes (errors ignored: the session is over either way).
    pub async fn quit(mut self) {
        self.client.timeout = Duration::from_secs(5).min(self.timeouts.command);
        let _ = self.client.cmd(b"QUIT\r\n").await;
        let _ = self.client.stream.shutdown().await;
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

/// EHLO, or HELO (no extensions) from a server that does not know EHLO (RFC 5321 §3.2).
async fn greet(
    client: &mut SmtpClient<TcpStream>,
    helo: &str,
) -> Result<EhloResponse<String>, OpenError> {
    match client.ehlo(helo).await {
        Ok(ehlo) => Ok(ehlo),
        Err(mail_send::Error::UnexpectedReply(r)) if (500..=504).contains(&r.code) => {
            let reply = client
                .cmd(format!("HELO {helo}\r\n"))
                .await
                .map_err(refused)?;
            if (200..300).contains(&reply.code) {
                Ok(EhloResponse::new(helo.to_string()))
            } else {
                Err(OpenError::Refused(Answer::from_response(&reply)))
            }
        }
        Err(e) => Err(refused(e)),
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

fn refused(e: mail_send::Error) -> OpenError {
    match e {
        mail_send::Error::UnexpectedReply(r) => OpenError::Refused(Answer::from_response(&r)),
        other => OpenError::Connect(other.to_string()),
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
