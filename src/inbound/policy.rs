//! Sender policy and rate limits: an app may only use the senders its config lists (exact
//! addresses and `@domain` entries), in the envelope and in the `From:` header alike, and only
//! so many messages per minute.

/// True when `address` matches one of `patterns` (`user@example.com` or `@example.com`).
/// Domains compare case-insensitively, and so do local parts (as every mailbox provider does).
pub(crate) fn sender_allowed(patterns: &[String], address: &str) -> bool {
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

/// Messages-per-minute limits per app: herald's one rate limiter, keyed by app name.
pub(crate) type RateLimiter = crate::ratelimit::RateLimiter<String>;

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
