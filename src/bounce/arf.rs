//! Reading a complaint: an ARF report (RFC 5965; Microsoft JMRP, Yahoo CFL and others), parsed
//! by mail-auth. The report is matched to what herald sent through a token: the
//! `CFBL-Feedback-ID` header herald signs into every message (RFC 9477), or the VERP return
//! path (`Original-Mail-From`, or the returned message's `Return-Path`).

use mail_auth::report::{Feedback, FeedbackType};

use super::verp::token_of_local_part;

/// What a complaint says, before its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Complaint {
    /// `abuse`, `fraud`, `virus`, `other`, … (an `auth-failure` or `not-spam` is no complaint).
    pub feedback_type: String,
    /// The tokens found (reference header first, then return paths).
    pub tokens: Vec<String>,
    /// The complaining recipient: `Original-Rcpt-To`, else the returned message's `To:`.
    pub recipient: Option<String>,
}

/// The header herald signs into every message of an app, holding its reference token.
pub(crate) const REFERENCE_HEADER: &str = "CFBL-Feedback-ID";

/// Parses `raw` as an ARF report; `None` when it is not one, or reports no complaint.
pub(crate) fn parse(raw: &[u8]) -> Option<Complaint> {
    let fb = Feedback::parse_rfc5322(raw).ok()?;
    let kind = match fb.feedback_type() {
        FeedbackType::Abuse => "abuse",
        FeedbackType::Fraud => "fraud",
        FeedbackType::Virus => "virus",
        FeedbackType::Other => "other",
        FeedbackType::AuthFailure | FeedbackType::NotSpam => return None,
    };
    let original = fb.message().or(fb.headers()).unwrap_or("");
    let headers = header_section(original);
    let mut tokens = Vec::new();
    for v in field_values(&headers, REFERENCE_HEADER) {
        tokens.push(v.trim().to_string());
    }
    let verp_sources = fb
        .original_mail_from()
        .map(str::to_string)
        .into_iter()
        .chain(field_values(&headers, "Return-Path"));
    for addr in verp_sources {
        let addr = addr.trim().trim_matches(['<', '>']);
        if let Some(t) = addr
            .split_once('@')
            .and_then(|(l, _)| token_of_local_part(l))
        {
            tokens.push(t.to_string());
        }
    }
    let recipient = fb
        .original_rcpt_to()
        .map(|s| s.trim().trim_matches(['<', '>']).to_string())
        .or_else(|| {
            field_values(&headers, "To").into_iter().next().map(|to| {
                let to = to.trim();
                match (to.rfind('<'), to.rfind('>')) {
                    (Some(a), Some(b)) if a < b => to[a + 1..b].to_string(),
                    _ => to.to_string(),
                }
            })
        })
        .filter(|r| r.contains('@'));
    Some(Complaint {
        feedback_type: kind.into(),
        tokens,
        recipient,
    })
}

/// The header section of a message (up to the first blank line), unfolded.
fn header_section(message: &str) -> String {
    let text = message.replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or("");
    head.replace("\n ", " ").replace("\n\t", " ")
}

/// The values of every `name:` field of an unfolded header section.
fn field_values(headers: &str, name: &str) -> Vec<String> {
    headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abuse_report_yields_the_reference_token_and_recipient() {
        let raw = b"From: fbl@isp.test\r\nTo: fbl@reports.example.net\r\nSubject: complaint\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"x\"\r\n\r\n\
--x\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n\
--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n\
Original-Rcpt-To: <reader@isp.test>\r\n\r\n\
--x\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <b-abcd@rp.example.com>\r\nFrom: news@example.com\r\n\
CFBL-Feedback-ID: tok123\r\nTo: Reader <reader@isp.test>\r\nSubject: hi\r\n\r\nbody\r\n--x--\r\n";
        let c = parse(raw).expect("a complaint");
        assert_eq!(c.feedback_type, "abuse");
        assert_eq!(c.tokens, vec!["tok123".to_string(), "abcd".to_string()]);
        assert_eq!(c.recipient.as_deref(), Some("reader@isp.test"));
        assert_eq!(parse(b"From: a@b\r\n\r\nnot a report"), None);
    }
}
