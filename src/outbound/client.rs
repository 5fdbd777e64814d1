//! One SMTP client session with a remote host (mail-send's `SmtpClient` underneath): greeting,
//! EHLO, STARTTLS with our connectors, optional AUTH, then any number of transactions (module
//! `transaction`).

use std::net::SocketAddr;
use std::time::Duration;

use mail_auth::report::tlsrpt::ResultType;
use mail_send::{Credentials, SmtpClient};
use smtp_proto::EhloResponse;
use smtp_proto::{EXT_AUTH, EXT_REQUIRE_TLS, EXT_START_TLS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::reply::EnhancedStatus;

pub(crate) use super::outcome::Answer;
pub(crate) use super::stream::Stream;
use super::tls::{OutboundTls, result_type};

/// How a session must treat TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// STARTTLS when offered, any certificate (verification recorded).
    Opportunistic,
    /// STARTTLS required, certificate verified against the host name.
    Strict,
    /// No STARTTLS (retry in clear after a failed opportunistic handshake).
    Off,
}

/// What TLS a session ended up with.
#[derive(Debug, Clone)]
pub(crate) struct TlsInfo {
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
pub(crate) enum OpenError {
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
pub(crate) struct Timeouts {
    /// Connect and greeting.
    pub connect: Duration,
    /// Each command.
    pub command: Duration,
    /// The reply to the end of data.
    pub data: Duration,
}

/// An open, greeted (and possibly encrypted and authenticated) SMTP session.
pub(crate) struct Session {
    pub(super) client: SmtpClient<Stream>,
    pub(super) ehlo: EhloResponse<String>,
    pub(super) timeouts: Timeouts,
    /// The host name the session was opened for (SNI, certificate name).
    pub host: String,
    /// TLS, when established.
    pub tls: Option<TlsInfo>,
    /// Transactions completed on this session.
    pub transactions: u32,
    /// Set when the connection can no longer be used (I/O error, 421).
    pub broken: bool,
}

/// The outcome of one mail transaction: one final answer per recipient, in order.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    /// The final answer for each recipient (its RCPT reply when refused, else the reply to the
    /// end of data or to BDAT LAST).
    pub answers: Vec<Answer>,
}

/// How a transaction failed: whether the server can have taken anything of it decides whether
/// the message may go at once over another connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransactionError {
    /// The connection was already dead when the transaction began (EOF, reset or broken pipe
    /// before any reply to the envelope): nothing of this transaction reached the server. On a
    /// reused idle session this is the remote having closed or restarted since.
    Stale(String),
    /// The connection broke later in the transaction; nothing was delivered for sure.
    Lost(String),
}

impl TransactionError {
    /// What went wrong, for logs and replies.
    pub(crate) fn detail(&self) -> &str {
        match self {
            TransactionError::Stale(d) | TransactionError::Lost(d) => d,
        }
    }
}

/// A mail-send error in words (an unexpected reply as the reply itself).
pub(super) fn mail_err(e: mail_send::Error) -> String {
    match e {
        mail_send::Error::UnexpectedReply(r) => Answer::from_response(&r).to_string(),
        other => other.to_string(),
    }
}

impl Session {
    /// Connects to `addr`, reads the greeting, says EHLO as `helo`, starts TLS per `mode`,
    /// and authenticates with `credentials` when given.
    pub(crate) async fn open(
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
                let sni = tls.server_name(host);
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
    pub(crate) fn offers_requiretls(&self) -> bool {
        self.ehlo.has_capability(EXT_REQUIRE_TLS)
    }

    /// Says QUIT and closes (errors ignored: the session is over either way).
    pub(crate) async fn quit(mut self) {
        self.client.timeout = Duration::from_secs(5).min(self.timeouts.command);
        let _ = self.client.cmd(b"QUIT\r\n").await;
        let _ = self.client.stream.shutdown().await;
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

fn refused(e: mail_send::Error) -> OpenError {
    match e {
        mail_send::Error::UnexpectedReply(r) => OpenError::Refused(Answer::from_response(&r)),
        other => OpenError::Connect(other.to_string()),
    }
}
