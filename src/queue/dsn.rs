//! Delivery status notifications (RFC 3464): the bounce a sender receives when mail cannot be
//! delivered, or the notice that it is still being retried.
//!
//! [`build`] is a pure function from a [`Notice`] to the message bytes (MIME by mail-builder);
//! [`queue_notice`] gathers the notice for a queued message and sends it from `<>` through
//! herald's one path for its own mail ([`crate::own_mail`]).

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;

use crate::clock::unix_now;
use crate::config::Config;
use crate::headers::header_block;
use crate::own_mail::{self, IfUnsigned, OwnMail, SendError};
use crate::reply::EnhancedStatus;
use crate::spool::{QueueId, SpooledMessage, TlsRequest, new_queue_id};

/// One recipient to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The recipient address.
    pub recipient: String,
    /// The status to report (RFC 3463).
    pub status: EnhancedStatus,
    /// The last reply or reason, as a person reads it (`550 5.1.1 no such user`).
    pub diagnostic: String,
    /// The host that gave it, as `name [address]`.
    pub remote: Option<String>,
    /// The class of the refusal (issue 24), written as `X-Herald-Bounce-Class`.
    pub class: Option<crate::events::BounceClass>,
}

/// Which notice to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Permanent failure: the message will not be delivered to these recipients.
    Failed,
    /// Still trying: the message has been waiting a while.
    Delayed,
}

/// Everything a notice says: [`build`] turns it into bytes without looking anywhere else.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// Failed or delayed.
    pub kind: Kind,
    /// herald's host name (`Reporting-MTA`, the `Message-ID` domain).
    pub reporting_mta: &'a str,
    /// The domain of `MAILER-DAEMON@…` in `From:`.
    pub from_domain: &'a str,
    /// The original sender, to whom the notice goes.
    pub to: &'a str,
    /// The original message's queue id.
    pub queue_id: &'a str,
    /// When the original was accepted (seconds since the epoch).
    pub arrival: u64,
    /// Now (seconds since the epoch): `Date:` and `Last-Attempt-Date`.
    pub now: u64,
    /// A unique token for the `Message-ID` and MIME boundary.
    pub unique: &'a str,
    /// The recipients reported on.
    pub recipients: &'a [Failure],
    /// The original message (only its header block is returned).
    pub original: &'a [u8],
    /// The original was sent with REQUIRETLS (RFC 8689 §5): the notice may cross the network
    /// without that protection, so it returns nothing of the message but its `Message-ID`.
    pub redacted: bool,
}

/// The domain bounces come from: `[delivery] dsn_domain`, else the host name's organizational
/// domain.
pub fn dsn_domain(cfg: &Config) -> String {
    match &cfg.delivery.dsn_domain {
        Some(d) => d.to_ascii_lowercase(),
        None => own_mail::herald_domain(&cfg.server.hostname),
    }
}

fn rfc2822(unix: u64) -> String {
    Date::new(unix as i64).to_rfc822()
}

/// The notice as a `multipart/report; report-type=delivery-status` message (RFC 3462, 3464):
/// a human-readable part, the machine-readable status, and the original's headers (only its
/// `Message-ID` when [`Notice::redacted`]). The body is never returned.
pub fn build(n: &Notice<'_>) -> Vec<u8> {
    let (subject, intro, action) = match n.kind {
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
    let now = rfc2822(n.now);
    let mut human = format!(
        "This is the mail system at {}.\r\n\r\n{intro}\r\n\r\nQueue id: {}\r\n\r\n",
        n.reporting_mta, n.queue_id
    );
    if n.redacted {
        human.push_str(REDACTED_NOTE);
    }
    for f in n.recipients {
        human.push_str(&format!("<{}>: {}", f.recipient, f.diagnostic));
        if let Some(r) = &f.remote {
            human.push_str(&format!(" (from {r})"));
        }
        human.push_str("\r\n");
    }
    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nX-Herald-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        n.reporting_mta,
        n.queue_id,
        rfc2822(n.arrival)
    );
    for f in n.recipients {
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
        if let Some(class) = f.class {
            status.push_str(&format!("X-Herald-Bounce-Class: {}\r\n", class.as_str()));
        }
    }
    let headers = if n.redacted {
        redacted_headers(header_block(n.original))
    } else {
        String::from_utf8_lossy(header_block(n.original)).into_owned()
    };
    let report = MimePart::new(
        ContentType::new("multipart/report")
            .attribute("report-type", "delivery-status")
            .attribute("boundary", format!("herald-dsn-{}", n.unique)),
        vec![
            MimePart::new(
                ContentType::new("text/plain").attribute("charset", "us-ascii"),
                human,
            )
            .header("Content-Description", Raw::new("Notification")),
            // RFC 3464 §2: the status fields are 7-bit text, never encoded.
            MimePart::new(ContentType::new("message/delivery-status"), status)
                .header("Content-Description", Raw::new("Delivery report"))
                .transfer_encoding("7bit"),
            MimePart::new(ContentType::new("text/rfc822-headers"), headers).header(
                "Content-Description",
                Raw::new("Headers of the undelivered message"),
            ),
        ],
    );
    let mailer_daemon = format!("MAILER-DAEMON@{}", n.from_domain);
    MessageBuilder::new()
        .from(("Mail Delivery System", mailer_daemon.as_str()))
        .to(n.to)
        .subject(subject)
        .date(Date::new(n.now as i64))
        .message_id(format!("{}.dsn@{}", n.unique, n.reporting_mta))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .unwrap_or_default()
}

/// What a redacted notice tells the sender, before the list of recipients.
const REDACTED_NOTE: &str = "The message was sent with REQUIRETLS. This notice may travel without that\r\n\
    protection, so it returns none of the message's content or headers, only its\r\n\
    Message-ID (RFC 8689 section 5).\r\n\r\n";

/// The original's `Message-ID` field alone (folded lines kept), so the sender can tell which
/// message this is; nothing else of a REQUIRETLS message leaves in the clear.
fn redacted_headers(block: &[u8]) -> String {
    let text = String::from_utf8_lossy(block);
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        let folded = line.starts_with([' ', '\t']);
        if !folded {
            inside = line
                .split_once(':')
                .is_some_and(|(name, _)| name.trim_end().eq_ignore_ascii_case("Message-ID"));
        }
        if inside {
            out.push_str(line);
        }
    }
    out
}

/// Builds a notice to the sender of `original` and sends it from `<>` through herald's own
/// mail path (signed with the key of the dsn domain when there is one, unsigned with a warning
/// otherwise); `None` when the sender is `<>` (never a bounce for a bounce) or nobody is to be
/// reported on.
pub async fn queue_notice(
    cfg: &Config,
    own: &OwnMail,
    original: &SpooledMessage,
    message: &[u8],
    failures: &[Failure],
    kind: Kind,
) -> Result<Option<QueueId>, SendError> {
    if original.envelope.mail_from.is_empty() || failures.is_empty() {
        return Ok(None);
    }
    let from_domain = dsn_domain(cfg);
    let unique = new_queue_id();
    let bytes = build(&Notice {
        kind,
        reporting_mta: &cfg.server.hostname,
        from_domain: &from_domain,
        to: &original.envelope.mail_from,
        queue_id: &original.id,
        arrival: original.envelope.received_at,
        now: unix_now(),
        unique: &unique,
        recipients: failures,
        original: message,
        redacted: original.envelope.tls_request == TlsRequest::RequireTls,
    });
    let id = own
        .send(own_mail::Message {
            mail_from: String::new(),
            recipients: vec![original.envelope.mail_from.clone()],
            bytes,
            tls_report: false,
            if_unsigned: IfUnsigned::SendAnyway,
        })
        .await?;
    tracing::info!(queue_id = %original.id, dsn_id = %id, to = %original.envelope.mail_from,
        kind = ?kind, recipients = failures.len(), "delivery status notification queued");
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn failure(recipient: &str, status: &str, diagnostic: &str) -> Failure {
        Failure {
            recipient: recipient.into(),
            status: EnhancedStatus::parse(status).expect("status"),
            diagnostic: diagnostic.into(),
            remote: Some("mx.example.org [192.0.2.7]".into()),
            class: None,
        }
    }

    fn notice<'a>(kind: Kind, recipients: &'a [Failure], original: &'a [u8]) -> Notice<'a> {
        Notice {
            kind,
            reporting_mta: "herald.example.test",
            from_domain: "example.test",
            to: "app@example.test",
            queue_id: "0123456789abcdef0123",
            arrival: 1_700_000_000,
            now: 1_700_003_600,
            unique: "fedcba9876543210abcd",
            recipients,
            original,
            redacted: false,
        }
    }

    #[test]
    fn a_bounce_is_a_delivery_status_report_with_the_original_headers() {
        let failures = [
            failure("a@example.org", "5.1.1", "550 5.1.1 no such user"),
            failure(
                "b@example.org",
                "5.4.7",
                "550 5.4.7 gave up after 9 attempts",
            ),
        ];
        let original = b"From: app@example.test\r\nSubject: invoice\r\n\r\nsecret body\r\n";
        let bytes = build(&notice(Kind::Failed, &failures, original));
        assert_eq!(bytes, build(&notice(Kind::Failed, &failures, original)));
        let text = String::from_utf8(bytes.clone()).expect("ascii");
        assert!(!text.contains("secret body"), "the body is never returned");
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        let from = msg.from().and_then(|a| a.first()).and_then(|a| a.address());
        assert_eq!(from, Some("MAILER-DAEMON@example.test"));
        assert_eq!(
            msg.message_id(),
            Some("fedcba9876543210abcd.dsn@herald.example.test")
        );
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        let ct = msg.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let parts: Vec<String> = msg
            .parts
            .iter()
            .skip(1)
            .map(|p| {
                let ct = p.content_type().expect("part type");
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
            })
            .collect();
        assert_eq!(
            parts,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        assert!(text.contains("Reporting-MTA: dns; herald.example.test\r\n"));
        assert!(text.contains(
            "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(text.contains("Remote-MTA: dns; mx.example.org\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.4.7 gave up after 9 attempts\r\n"));
        assert!(text.contains("Subject: invoice\r\n"));
        assert!(
            text.contains(
                "<a@example.org>: 550 5.1.1 no such user (from mx.example.org [192.0.2.7])"
            )
        );
    }

    #[test]
    fn a_delay_notice_says_delayed() {
        let failures = [failure("a@example.org", "4.4.1", "451 4.4.1 no answer")];
        let text = String::from_utf8(build(&notice(Kind::Delayed, &failures, b"Subject: x\r\n")))
            .expect("ascii");
        assert!(text.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(text.contains("Action: delayed\r\nStatus: 4.4.1\r\n"));
    }

    #[test]
    fn a_requiretls_bounce_returns_only_the_message_id() {
        let failures = [failure(
            "a@bank.test",
            "5.7.30",
            "550 5.7.30 REQUIRETLS support required: mx1.bank.test does not advertise REQUIRETLS",
        )];
        let original = b"From: payroll@example.test\r\nSubject: salary of Alice\r\n\
            Message-ID:\r\n <pay-1@example.test>\r\nTo: a@bank.test\r\n\r\nsecret body\r\n";
        let mut n = notice(Kind::Failed, &failures, original);
        n.redacted = true;
        let text = String::from_utf8(build(&n)).expect("ascii");
        for secret in [
            "secret body",
            "salary of Alice",
            "payroll@",
            "To: a@bank.test",
        ] {
            assert!(!text.contains(secret), "{secret:?} in {text}");
        }
        assert!(
            text.contains("Message-ID:\r\n <pay-1@example.test>\r\n"),
            "{text}"
        );
        assert!(text.contains("Status: 5.7.30\r\n"));
        assert!(text.contains("sent with REQUIRETLS"));
    }
}
