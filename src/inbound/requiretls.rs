//! REQUIRETLS and `TLS-Required:` at submission (RFC 8689): the EHLO keyword is offered only
//! over TLS, the MAIL parameter is refused without TLS, and the `TLS-Required: No` header is
//! honoured only for apps allowed to lower protection. What is decided goes into the envelope as
//! a [`TlsRequest`], which delivery and the bounce builder act on.

use super::mailbox::field_values;
use crate::reply::Reply;
use crate::spool::TlsRequest;

/// The EHLO keyword (RFC 8689 §2). Offered only once the session is encrypted: the option
/// promises TLS on every hop, starting with this one.
pub(super) const KEYWORD: &str = "REQUIRETLS";

/// The refusal of `MAIL FROM:<…> REQUIRETLS` on a session that is not encrypted (RFC 8689
/// §4.1: the option is only valid over TLS, where herald advertises it); `None` when it may go
/// on.
pub(super) fn mail_refusal(requested: bool, tls: bool) -> Option<Reply> {
    (requested && !tls).then(|| {
        Reply::new(
            530,
            "5.7.10",
            "REQUIRETLS needs an encrypted session: send STARTTLS (or use the implicit-TLS \
             port) before MAIL FROM ... REQUIRETLS",
        )
    })
}

/// What the message asks of TLS, from the MAIL parameter and the header block: REQUIRETLS
/// wins over `TLS-Required: No` (RFC 8689 §4.1: the header is then ignored). A `TLS-Required:
/// No` from `who` without `allowed` (an app without `allow_tls_optional = true`, or the plain
/// listener) is refused with a `550 5.7.1` naming the fix: it would downgrade delivery below the
/// recipient's policy, which only the administrator may permit.
pub(super) fn tls_request(
    require_tls: bool,
    headers: &[u8],
    who: &str,
    app: Option<&str>,
    allowed: bool,
) -> Result<TlsRequest, Reply> {
    if require_tls {
        return Ok(TlsRequest::RequireTls);
    }
    if !asks_tls_optional(headers) {
        return Ok(TlsRequest::Policy);
    }
    if allowed {
        return Ok(TlsRequest::TlsOptional);
    }
    let fix = match app {
        Some(name) => format!(
            "remove the header, or have the administrator set allow_tls_optional = true in \
             [apps.{name}]"
        ),
        None => "remove the header, or submit as an app with allow_tls_optional = true".into(),
    };
    Err(Reply::new(
        550,
        "5.7.1",
        format!(
            "{who} may not send \"TLS-Required: No\" (it asks for delivery without the \
             recipient's MTA-STS/DANE protection); {fix}"
        ),
    ))
}

/// Whether a `TLS-Required:` field says `No` (RFC 8689 §3; the only value defined, compared
/// without regard to case or surrounding white space).
fn asks_tls_optional(headers: &[u8]) -> bool {
    field_values(headers, "TLS-Required")
        .iter()
        .any(|v| String::from_utf8_lossy(v).trim().eq_ignore_ascii_case("no"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: &[u8] = b"From: a@example.test\r\nTLS-Required:  no \r\nSubject: x\r\n\r\n";
    const NONE: &[u8] = b"From: a@example.test\r\nSubject: TLS-Required: No\r\n\r\n";

    #[test]
    fn requiretls_needs_tls_and_wins_over_the_header() {
        assert!(mail_refusal(true, false).is_some_and(|r| r.status == "5.7.10"));
        assert!(mail_refusal(true, true).is_none());
        assert!(mail_refusal(false, false).is_none());
        assert_eq!(
            tls_request(true, NO, "app x", Some("x"), false),
            Ok(TlsRequest::RequireTls)
        );
    }

    #[test]
    fn the_header_is_honoured_only_when_allowed() {
        assert_eq!(
            tls_request(false, NONE, "app x", Some("x"), false),
            Ok(TlsRequest::Policy)
        );
        assert_eq!(
            tls_request(false, NO, "app x", Some("x"), true),
            Ok(TlsRequest::TlsOptional)
        );
        let refused = tls_request(false, NO, "app x", Some("x"), false).expect_err("refused");
        assert_eq!((refused.code, refused.status), (550, "5.7.1"));
        assert!(refused.text.contains("[apps.x]"), "{}", refused.text);
        let folded = b"TLS-Required:\r\n No\r\n\r\n";
        assert!(asks_tls_optional(folded));
        assert!(!asks_tls_optional(b"TLS-Required: yes\r\n\r\n"));
    }
}
