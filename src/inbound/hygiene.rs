//! Message hygiene: what herald checks and adds before a message is signed and spooled.
//!
//! Line endings and sizes are checked as the data is framed, the same on every listener
//! ([`crate::smtp_server::data`]); this module adds the trace fields.

use std::net::IpAddr;

pub(crate) use crate::headers::{has_header, header_end};

/// How the message arrived, for the `Received:` header.
pub(crate) struct Trace<'a> {
    /// The client's EHLO/HELO name.
    pub helo: &'a str,
    /// True after EHLO (ESMTP), false after HELO.
    pub esmtp: bool,
    /// The client's address.
    pub client_ip: IpAddr,
    /// Herald's host name.
    pub hostname: &'a str,
    /// TLS version and cipher, when TLS was used.
    pub tls: Option<&'a str>,
    /// The authenticated app.
    pub app: Option<&'a str>,
}

/// The header fields herald puts in front of the client's message (whose header section is
/// `headers`): `Received:` first, then `Date:` and `Message-ID:` when the client left them out.
pub(crate) fn trace_fields(
    headers: &[u8],
    trace: &Trace<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let date = now.to_rfc2822();
    let mut proto = String::from(if trace.esmtp { "ESMTP" } else { "SMTP" });
    if trace.esmtp && trace.tls.is_some() {
        proto.push('S');
    }
    if trace.esmtp && trace.app.is_some() {
        proto.push('A');
    }
    let mut out = Vec::with_capacity(400);
    out.extend_from_slice(
        format!(
            "Received: from {} ([{}])\r\n\tby {} (herald) with {}",
            clean(trace.helo),
            trace.client_ip,
            clean(trace.hostname),
            proto
        )
        .as_bytes(),
    );
    if let Some(tls) = trace.tls {
        let (version, cipher) = tls.split_once(' ').unwrap_or((tls, ""));
        out.extend_from_slice(format!("\r\n\t(version={version} cipher={cipher})").as_bytes());
    }
    if let Some(app) = trace.app {
        out.extend_from_slice(format!("\r\n\t(app={})", clean(app)).as_bytes());
    }
    out.extend_from_slice(format!(";\r\n\t{date}\r\n").as_bytes());
    if !has_header(headers, "Date") {
        out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
    }
    if !has_header(headers, "Message-ID") {
        let id: u128 = rand::random();
        out.extend_from_slice(
            format!("Message-ID: <{id:032x}@{}>\r\n", clean(trace.hostname)).as_bytes(),
        );
    }
    out
}

/// Keeps a client-supplied token printable and free of header syntax.
fn clean(s: &str) -> String {
    let out: String = s
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._:[]@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "unknown".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_found_case_insensitively() {
        let m = b"message-id : <x@y>\r\nSubject: Date: no\r\n\r\nDate: body\r\n";
        let h = &m[..header_end(m)];
        assert!(has_header(h, "Message-ID"));
        assert!(!has_header(h, "Date"));
    }

    #[test]
    fn prepare_adds_trace_and_missing_fields_only() {
        let trace = Trace {
            helo: "app (evil)\r\nBcc: x",
            esmtp: true,
            client_ip: "127.0.0.1".parse().unwrap(),
            hostname: "herald.example.test",
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256"),
            app: Some("demo"),
        };
        let now = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let msg = b"From: a@b.test\r\nDate: x\r\n\r\nhi\r\n";
        let mut out = trace_fields(&msg[..header_end(msg)], &trace, now);
        out.extend_from_slice(msg);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Received: from app__evil___Bcc:_x ([127.0.0.1])\r\n\tby herald.example.test (herald) with ESMTPSA\r\n\t(version=TLSv1.3 cipher=TLS13_AES_128_GCM_SHA256)\r\n\t(app=demo);\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"), "{text}");
        assert!(text.contains("Message-ID: <"));
        assert_eq!(text.matches("Date:").count(), 1);
        assert!(text.ends_with("From: a@b.test\r\nDate: x\r\n\r\nhi\r\n"));
    }
}
