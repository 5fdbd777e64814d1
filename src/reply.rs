//! SMTP replies with enhanced status codes: every refusal herald gives is one of these, with
//! words a person can act on.

use std::fmt;

/// An SMTP reply: basic code, enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code, e.g. 550.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub status: &'static str,
    /// Human-readable text (a single line).
    pub text: String,
}

impl Reply {
    /// A reply from its parts.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// True for 4xx replies: the client may try again later.
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as sent on the wire, CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        format!("{self}\r\n").into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text.replace(['\r', '\n'], " ");
        write!(f, "{} {} {}", self.code, self.status, text)
    }
}

/// An enhanced status code (RFC 3463), `class.subject.detail`, e.g. `5.1.1`: what a delivery
/// result means, kept as a value so nobody re-parses reply text to find it. Stored as its
/// text form (`"5.1.1"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject (address, mailbox, system, network, protocol, content, security).
    pub subject: u16,
    /// The detail within the subject.
    pub detail: u16,
}

impl EnhancedStatus {
    /// A status from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Parses `class.subject.detail` (class 2, 4 or 5); `None` for anything else.
    pub fn parse(s: &str) -> Option<EnhancedStatus> {
        let mut parts = s.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let digits = |p: &str, max: usize| {
            (!p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        let class = digits(class, 1)?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedStatus::new(
            class as u8,
            digits(subject, 3)?,
            digits(detail, 3)?,
        ))
    }

    /// The generic status of a basic reply code's class: `2.0.0`, `4.0.0` or `5.0.0`.
    pub fn of_code(code: u16) -> EnhancedStatus {
        match code {
            200..=299 => EnhancedStatus::new(2, 0, 0),
            400..=499 => EnhancedStatus::new(4, 0, 0),
            _ => EnhancedStatus::new(5, 0, 0),
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl serde::Serialize for EnhancedStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EnhancedStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EnhancedStatus::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a status code")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_parses_only_the_rfc3463_form() {
        assert_eq!(
            EnhancedStatus::parse("5.1.10"),
            Some(EnhancedStatus::new(5, 1, 10))
        );
        assert_eq!(
            EnhancedStatus::parse("4.4.7").map(|s| s.to_string()),
            Some("4.4.7".into())
        );
        for bad in ["5.1", "550", "3.0.0", "5.1.1.1", "5..1", "a.b.c", ""] {
            assert_eq!(EnhancedStatus::parse(bad), None, "{bad}");
        }
        assert_eq!(EnhancedStatus::of_code(451).to_string(), "4.0.0");
        let json = serde_json::to_string(&EnhancedStatus::new(5, 7, 1)).expect("json");
        assert_eq!(json, "\"5.7.1\"");
        assert_eq!(
            serde_json::from_str::<EnhancedStatus>(&json).expect("back"),
            EnhancedStatus::new(5, 7, 1)
        );
    }
}
