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
