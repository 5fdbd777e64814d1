//! Mail herald writes itself — delivery status notifications, TLS-RPT reports, any future
//! notice — takes one path: [`OwnMail::send`] builds the envelope, DKIM-signs the message with
//! the key aligned to its `From:` domain, and spools it like submitted mail, so the queue
//! delivers and retries it.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::clock::unix_now;
use crate::reply::Reply;
use crate::signing::Signer;
use crate::signing::align::organizational_domain;
use crate::spool::{Envelope, QueueId, Spool};

/// The domain herald speaks for in its own mail: the organizational domain (public suffix
/// list) of its host name, e.g. `example.com` for `mail.example.com`.
pub(crate) fn herald_domain(hostname: &str) -> String {
    let host = hostname.trim_end_matches('.').to_ascii_lowercase();
    organizational_domain(&host).to_string()
}

/// What to do when no key signs the message's `From:` domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfUnsigned {
    /// Send it unsigned, with a warning (a bounce matters more than its signature).
    SendAnyway,
    /// Refuse: the caller keeps the message and says how to fix the configuration.
    Refuse,
}

/// One message of herald's own.
#[derive(Debug, Clone)]
pub struct Message {
    /// MAIL FROM: empty for `<>` (bounces).
    pub mail_from: String,
    /// RCPT TO addresses.
    pub recipients: Vec<String>,
    /// The message, headers and body, CRLF line endings, not yet signed.
    pub bytes: Vec<u8>,
    /// A TLS-RPT report: delivered despite the TLS failures it reports (RFC 8460 §3).
    pub tls_report: bool,
    /// What to do without a signing key.
    pub if_unsigned: IfUnsigned,
}

/// Why a message of herald's own could not be queued.
#[derive(Debug)]
pub enum SendError {
    /// No key signs its `From:` domain and [`IfUnsigned::Refuse`] was asked for.
    Unsigned(Reply),
    /// The spool refused it.
    Spool(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Unsigned(reply) => write!(f, "cannot DKIM-sign it: {reply}"),
            SendError::Spool(e) => write!(f, "cannot spool it: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// The door for herald's own mail: the spool and signer `herald serve` uses (or, offline, the
/// spool directory opened directly).
#[derive(Clone)]
pub struct OwnMail {
    spool: Spool,
    signer: Arc<Signer>,
    hostname: String,
}

impl OwnMail {
    /// The path through `signer` into `spool`; `hostname` is herald's EHLO name, recorded as
    /// the envelope's HELO.
    pub fn new(spool: Spool, signer: Arc<Signer>, hostname: &str) -> OwnMail {
        OwnMail {
            spool,
            signer,
            hostname: hostname.to_string(),
        }
    }

    /// Signs and spools `message`; returns its queue id once it is durable.
    pub async fn send(&self, message: Message) -> Result<QueueId, SendError> {
        let Message {
            mail_from,
            recipients,
            bytes,
            tls_report,
            if_unsigned,
        } = message;
        let signed = match self.signer.sign(bytes.clone()).await {
            Ok(signed) => signed,
            Err(reply) if if_unsigned == IfUnsigned::SendAnyway => {
                tracing::warn!(%reply, "cannot DKIM-sign herald's own message; sending it \
                    unsigned (configure a DKIM key for herald's domain)");
                bytes
            }
            Err(reply) => return Err(SendError::Unsigned(reply)),
        };
        let envelope = Envelope {
            app: None,
            mail_from,
            mail_from_params: Vec::new(),
            recipients,
            received_at: unix_now(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: self.hostname.clone(),
            tls: None,
            tls_report,
            tls_request: crate::spool::TlsRequest::Policy,
            return_path_domain: None,
        };
        self.spool
            .store(envelope, signed)
            .await
            .map_err(|e| SendError::Spool(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herald_speaks_for_its_registrable_domain() {
        assert_eq!(herald_domain("herald.example.test"), "example.test");
        assert_eq!(herald_domain("mx.relay.example.co.uk."), "example.co.uk");
        assert_eq!(herald_domain("localhost"), "localhost");
    }
}
