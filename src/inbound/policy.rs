//! Sender policy and rate limits: an app may only use the senders its config lists (exact
//! addresses and `@domain` entries), in the envelope and in the `From:` header alike, and only
//! so many messages per minute.

use mail_parser::{HeaderName, MessageParser};

/// True when `address` matches one of `patterns` (`user@example.com` or `@example.com`).
/// Domains compare case-insensitively, and so do local parts (as every mailbox provider does).
pub fn sender_allowed(patterns: &[String], address: &str) -> bool {
    let address = address.trim().trim_end_matches('.').to_ascii_lowercase();
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || domain.is_empty() {
        return false;
    }
    patterns.iter().any(|p| {
        let p = p.trim().trim_end_matches('.').to_ascii_lowercase();
        match p.strip_prefix('@') {
            Some(d) => d == domain,
            None => p == address,
        }
    })
}

/// Checks a sender pattern as the config does (`herald app add` uses it).
pub fn valid_sender_pattern(s: &str) -> bool {
    match s.strip_prefix('@') {
        Some(domain) => !domain.is_empty() && !domain.contains('@'),
        None => s
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@')),
    }
}

/// Every address in every `From:` header field of `header_block` (the bytes up to and
/// including the blank line). Group syntax and display names are handled by mail-parser.
pub fn header_from_addresses(header_block: &[u8]) -> Vec<String> {
    let Some(msg) = MessageParser::new().parse_headers(header_block) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for value in msg.header_values(HeaderName::From) {
        if let Some(addrs) = value.as_address() {
            for a in addrs.iter() {
                match a.address() {
                    Some(s) => out.push(s.to_string()),
                    None => out.push(String::new()),
                }
            }
        }
    }
    out
}

/// Messages-per-minute limits per app: herald's one rate limiter, keyed by app name.
pub type RateLimiter = crate::ratelimit::RateLimiter<String>;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_domain_patterns() {
        let pats = p(&["billing@shop.test", "@example.test"]);
        assert!(sender_allowed(&pats, "billing@shop.test"));
        assert!(sender_allowed(&pats, "Billing@SHOP.test"));
        assert!(sender_allowed(&pats, "anyone@example.test"));
        assert!(!sender_allowed(&pats, "other@shop.test"));
        assert!(!sender_allowed(&pats, "a@sub.example.test"));
        assert!(!sender_allowed(&pats, "a@example.test.evil"));
        assert!(!sender_allowed(&pats, ""));
        assert!(!sender_allowed(&pats, "@example.test"));
        assert!(!sender_allowed(&pats, "example.test"));
    }

    #[test]
    fn sender_patterns_validate() {
        assert!(valid_sender_pattern("@example.com"));
        assert!(valid_sender_pattern("a@example.com"));
        assert!(!valid_sender_pattern("example.com"));
        assert!(!valid_sender_pattern("@"));
        assert!(!valid_sender_pattern("a@b@c"));
    }

    #[test]
    fn header_from_is_parsed_with_display_names_and_multiple_fields() {
        let h = b"From: \"Billing, Inc\" <billing@shop.test>\r\nTo: x@y.test\r\n\r\n";
        assert_eq!(header_from_addresses(h), vec!["billing@shop.test"]);
        let h = b"From: a@x.test, b@y.test\r\nFrom: c@z.test\r\n\r\n";
        assert_eq!(
            header_from_addresses(h),
            vec!["a@x.test", "b@y.test", "c@z.test"]
        );
        assert!(header_from_addresses(b"Subject: none\r\n\r\n").is_empty());
    }

    #[test]
    fn rate_limit_refills_over_time() {
        use crate::ratelimit::Rate;
        use std::time::{Duration, Instant};
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.take_at("a", Rate::per_minute(2), t0).is_ok());
        assert!(r.take_at("a", Rate::per_minute(2), t0).is_ok());
        let wait = r.take_at("a", Rate::per_minute(2), t0).unwrap_err();
        assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(29));
        assert!(
            r.take_at("b", Rate::per_minute(2), t0).is_ok(),
            "apps have separate buckets"
        );
        assert!(
            r.take_at("a", Rate::per_minute(2), t0 + Duration::from_secs(31))
                .is_ok()
        );
        assert!(
            r.take_at("a", Rate::per_minute(0), t0).is_ok(),
            "0 means unlimited"
        );
    }
}
