//! Delivery status notifications (RFC 3464): the bounce a sender receives when mail cannot be
//! delivered, or the notice that it is still being retried. Sent from `<>`, signed with
//! herald's own domain key, and queued like any other message.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use crate::clock::unix_now;
use crate::config::Config;
use crate::reply::EnhancedStatus;
use crate::signing::Signer;
use crate::spool::{Envelope, QueueId, Spool, SpooledMessage, new_queue_id};

/// One recipient to report on.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The recipient address.
    pub recipient: String,
    /// The status to report (RFC 3463).
    pub status: EnhancedStatus,
    /// The last reply or reason, as a person reads it (`550 5.1.1 no such user`).
    pub diagnostic: String,
    /// The host that gave it, as `name [address]`.
    pub remote: Option<String>,
}

/// Which notice to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Permanent failure: the message will not be delivered to these recipients.
    Failed,
    /// Still trying: the message has been waiting a while.
    Delayed,
}

/// The domain bounces come from: `[delivery] dsn_domain`, else the host name's organizational
/// domain.
pub fn dsn_domain(cfg: &Config) -> String {
    if let Some(d) = &cfg.delivery.dsn_domain {
        return d.to_ascii_lowercase();
    }
    let host = cfg
        .server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    psl::domain_str(&host).map(str::to_string).unwrap_or(host)
}

/// The original message's header block (up to the empty line), CRLF line endings.
fn header_block(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &message[..i + 2],
        None => message,
    }
}

/// Builds the notice for `original` (its bytes in `message`).
pub fn build(
    cfg: &Config,
    original: &SpooledMessage,
    message: &[u8],
    failures: &[Failure],
    kind: Kind,
) -> Vec<u8> {
    let host = &cfg.server.hostname;
    let domain = dsn_domain(cfg);
    let boundary = format!("herald-dsn-{}", new_queue_id());
    let now = chrono::Utc::now().to_rfc2822();
    let arrival = chrono::DateTime::from_timestamp(original.envelope.received_at as i64, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_else(|| now.clone());
    let (subject, intro, action) = match kind {
        Kind::Failed => (
            "Undelivered Mail Returned to Sender",
            "Your message could not be delivered to the recipients below. This is a permanent\r\nerror; herald will not try again. The reason given for each recipient follows.",
            "failed",
        ),
        Kind::Delayed => (
            "Delayed Mail (still being retried)",
            "Your message has not been delivered yet to the recipients below. Herald is still\r\ntrying and will tell you if it gives up. You do not need to send it again.",
            "delayed",
        ),
    };
    let mut human = format!(
        "This is the mail system at {host}.\r\n\r\n{intro}\r\n\r\nQueue id: {}\r\n\r\n",
        original.id
    );
    for f in failures {
        human.push_str(&format!("<{}>: {}", f.recipient, f.diagnostic));
        if let Some(r) = &f.remote {
            human.push_str(&format!(" (from {r})"));
        }
        human.push_str("\r\n");
    }
    let mut status = format!(
        "Reporting-MTA: dns; {host}\r\nX-Herald-Queue-ID: {}\r\nArrival-Date: {arrival}\r\n",
        original.id
    );
    for f in failures {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\n",
            f.recipient, f.status
        ));
        if let Some(r) = &f.remote {
            let name = r.split_whitespace().next().unwrap_or(r);
            status.push_str(&format!("Remote-MTA: dns; {name}\r\n"));
        }
        status.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {now}\r\n",
            f.diagnostic
        ));
    }
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{domain}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {now}\r\n\
         Message-ID: <{id}.dsn@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         Content-Description: Notification\r\n\
         \r\n{human}\
         \r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\
         \r\n{status}\
         \r\n--{boundary}\r\n\
         Content-Type: text/rfc822-headers\r\n\
         Content-Description: Headers of the undelivered message\r\n\
         \r\n",
        to = original.envelope.mail_from,
        id = new_queue_id(),
    )
    .into_bytes();
    out.extend_from_slice(header_block(message));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Builds, signs and spools a notice to the sender of `original`; `None` when the sender is
/// `<>` (never a bounce for a bounce) or nobody is to be reported on.
pub async fn queue_notice(
    cfg: &Config,
    spool: &Spool,
    signer: &Signer,
    original: &SpooledMessage,
    message: &[u8],
    failures: &[Failure],
    kind: Kind,
) -> io::Result<Option<QueueId>> {
    if original.envelope.mail_from.is_empty() || failures.is_empty() {
        return Ok(None);
    }
    let unsigned = build(cfg, original, message, failures, kind);
    let bytes = match signer.sign(unsigned.clone()).await {
        Ok(signed) => signed,
        Err(reply) => {
            tracing::warn!(queue_id = %original.id, domain = %dsn_domain(cfg), %reply,
                "cannot sign the delivery notice; sending it unsigned (configure a DKIM key for the dsn domain)");
            unsigned
        }
    };
    let envelope = Envelope {
        app: None,
        mail_from: String::new(),
        mail_from_params: Vec::new(),
        recipients: vec![original.envelope.mail_from.clone()],
        received_at: unix_now(),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: cfg.server.hostname.clone(),
        tls: None,
        tls_report: false,
    };
    let id = spool.store(envelope, bytes).await?;
    tracing::info!(queue_id = %original.id, dsn_id = %id, to = %original.envelope.mail_from,
        kind = ?kind, recipients = failures.len(), "delivery status notification queued");
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_stops_at_the_empty_line() {
        assert_eq!(
            header_block(b"A: b\r\nC: d\r\n\r\nbody\r\n"),
            b"A: b\r\nC: d\r\n"
        );
        assert_eq!(header_block(b"A: b\r\n"), b"A: b\r\n");
    }
}
