//! Reading a bounce that came back to herald's return path: an RFC 3464 delivery status
//! notification (`multipart/report; report-type=delivery-status`), or one of the common
//! non-standard formats (a text body quoting the remote's reply), whose reply is then
//! classified by the rules like one seen at delivery.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// One recipient's failure as a returned bounce reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Returned {
    /// The recipient (`Final-Recipient`, else `Original-Recipient`, else an address in the
    /// text).
    pub recipient: String,
    /// `failed`, `delayed`, `delivered`, … (`failed` for non-standard bounces).
    pub action: String,
    /// The enhanced status (`5.1.1`), empty if none was given.
    pub status: String,
    /// The reply code (`550`), 0 if none was given.
    pub code: u16,
    /// The remote's words (`Diagnostic-Code`, or the quoted reply).
    pub diagnostic: String,
}

impl Returned {
    /// Whether this is a permanent failure (what suppresses and counts).
    pub(crate) fn is_failure(&self) -> bool {
        self.action.eq_ignore_ascii_case("failed")
    }
}

/// The failures reported in `raw` (at most `max` recipients). `candidates` helps read a
/// non-standard bounce: the first of them found in its text is the recipient (the verified
/// token says which addresses it can be about).
pub(crate) fn parse(raw: &[u8], candidates: impl Fn(&str) -> bool, max: usize) -> Vec<Returned> {
    let Some(msg) = MessageParser::new().parse(raw) else {
        return Vec::new();
    };
    for part in msg.parts.iter() {
        if part.is_content_type("message", "delivery-status")
            || part.is_content_type("message", "global-delivery-status")
        {
            let body: &[u8] = match &part.body {
                PartType::Text(t) => t.as_bytes(),
                PartType::Binary(b) | PartType::InlineBinary(b) => b,
                _ => continue,
            };
            return parse_status_fields(&String::from_utf8_lossy(body), max);
        }
    }
    // Non-standard: the text of the message (first text parts), searched for an address
    // the token covers and the first SMTP reply.
    let mut text = String::new();
    for part in msg.parts.iter() {
        if let PartType::Text(t) = &part.body {
            text.push_str(t);
            text.push('\n');
            if text.len() > 64 * 1024 {
                break;
            }
        }
    }
    let recipient = addresses(&text).into_iter().find(|a| candidates(a));
    let (code, status, diagnostic) = first_reply(&text).unwrap_or_default();
    match recipient {
        Some(recipient) if code >= 500 || status.starts_with('5') => vec![Returned {
            recipient,
            action: "failed".into(),
            status,
            code,
            diagnostic,
        }],
        _ => Vec::new(),
    }
}

/// The `From:` address of the original message a bounce returns (its
/// `text/rfc822-headers` or `message/rfc822` part), if any.
pub(crate) fn original_from(raw: &[u8]) -> Option<String> {
    let msg = MessageParser::new().parse(raw)?;
    for part in msg.parts.iter() {
        let headers: &[u8] = if part.is_content_type("text", "rfc822-headers") {
            match &part.body {
                PartType::Text(t) => t.as_bytes(),
                _ => continue,
            }
        } else if part.is_content_type("message", "rfc822") {
            match &part.body {
                PartType::Message(m) => m.raw_message(),
                _ => continue,
            }
        } else {
            continue;
        };
        let original = MessageParser::new().parse_headers(headers)?;
        let from = original.from()?.first()?.address()?.to_string();
        return Some(from);
    }
    None
}

/// The per-recipient blocks of a `message/delivery-status` body.
fn parse_status_fields(body: &str, max: usize) -> Vec<Returned> {
    let unfolded = body
        .replace("\r\n", "\n")
        .replace("\n ", " ")
        .replace("\n\t", " ");
    let mut out = Vec::new();
    for block in unfolded.split("\n\n").skip(1) {
        let mut r = Returned {
            recipient: String::new(),
            action: String::new(),
            status: String::new(),
            code: 0,
            diagnostic: String::new(),
        };
        let mut original = String::new();
        for line in block.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let typed = || {
                value
                    .split_once(';')
                    .map_or(value, |(_, v)| v.trim())
                    .trim_matches(['<', '>'])
                    .to_string()
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "final-recipient" => r.recipient = typed(),
                "original-recipient" => original = typed(),
                "action" => r.action = value.to_ascii_lowercase(),
                "status" => r.status = value.split_whitespace().next().unwrap_or("").into(),
                "diagnostic-code" => {
                    r.diagnostic = typed();
                    if let Some((code, status, _)) = first_reply(&r.diagnostic) {
                        r.code = code;
                        if r.status.is_empty() {
                            r.status = status;
                        }
                    }
                }
                _ => {}
            }
        }
        if r.recipient.is_empty() {
            r.recipient = original;
        }
        if !r.recipient.is_empty() {
            r.diagnostic = r.diagnostic.chars().take(500).collect();
            out.push(r);
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

/// Addresses (`local@domain`) in `text`, in order.
fn addresses(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "<>()[]\"',;:".contains(c))
        .filter(|w| {
            w.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        })
        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
        .take(50)
        .collect()
}

/// The first SMTP reply in `text`: a 4xx/5xx code, an optional enhanced status, the rest of
/// the line.
fn first_reply(text: &str) -> Option<(u16, String, String)> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let w = w.trim_end_matches(['-', ':']);
            let Ok(code) = w.parse::<u16>() else {
                continue;
            };
            if !(400..600).contains(&code) || w.len() != 3 {
                continue;
            }
            let status = words
                .get(i + 1)
                .map(|s| s.trim_end_matches([':', ',']))
                .filter(|s| {
                    let p: Vec<&str> = s.split('.').collect();
                    p.len() == 3
                        && p.iter()
                            .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
                })
                .unwrap_or("")
                .to_string();
            return Some((code, status, line.trim().chars().take(500).collect()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.x.test\r\nTo: b-token@rp.example.com\r\n\
Subject: Undelivered Mail\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\n\
Reporting-MTA: dns; mx.x.test\r\n\r\n\
Final-Recipient: rfc822; gone@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <gone@x.test>: Recipient address rejected:\r\n User unknown\r\n\r\n\
Final-Recipient: rfc822; late@x.test\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n\
--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: news@example.com\r\n\r\n--b1--\r\n";

    #[test]
    fn an_rfc3464_report_gives_each_recipient_its_status_and_reply() {
        let r = parse(DSN.as_bytes(), |_| false, 10);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].recipient, "gone@x.test");
        assert!(r[0].is_failure());
        assert_eq!((r[0].code, r[0].status.as_str()), (550, "5.1.1"));
        assert!(
            r[0].diagnostic.contains("User unknown"),
            "{}",
            r[0].diagnostic
        );
        assert_eq!(r[1].action, "delayed");
        assert!(!r[1].is_failure());
    }

    #[test]
    fn a_plain_text_bounce_is_read_through_its_quoted_reply() {
        let raw = b"From: postmaster@x.test\r\nSubject: failure notice\r\n\r\n\
Hi. This is the qmail-send program.\r\n\r\n<gone@x.test>:\r\n\
192.0.2.1 does not like recipient.\r\nRemote host said: 550 5.1.1 no mailbox here by that name\r\n";
        let r = parse(raw, |a| a == "gone@x.test", 10);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].code, r[0].status.as_str()), (550, "5.1.1"));
        assert!(
            parse(raw, |_| false, 10).is_empty(),
            "no address the token covers"
        );
        assert!(parse(b"\x00\xff garbage", |_| true, 10).is_empty());
    }
}
