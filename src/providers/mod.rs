//! What the big mailbox providers' own refusal codes mean, in words an operator can act on.
//!
//! Gmail, Yahoo and Microsoft answer a sender that misses their rules with codes of their own
//! (`550-5.7.26`, `[TSS04]`, `550 5.7.515`, …) whose meaning is only in their help pages. A small
//! table here turns a reply herald has seen into what it means and what to do; `herald queue
//! show` prints it under the recipient, and `herald check` under the readiness verdict.

/// One known refusal: the code as it appears in the reply, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownCode {
    /// The provider that uses it.
    pub provider: &'static str,
    /// The token matched in the reply text (an enhanced status code or a bracketed tag).
    pub code: &'static str,
    /// What it means and what to do, in one sentence.
    pub meaning: &'static str,
}

/// The table, most specific first (a reply is explained by its first match).
pub(crate) const KNOWN_CODES: &[KnownCode] = &[
    KnownCode {
        provider: "Gmail",
        code: "5.7.25",
        meaning: "the sending address has no PTR record (reverse DNS): have the PTR set to herald's EHLO name (`herald check` ptr.<address>)",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.25",
        meaning: "the sending address has no PTR record (reverse DNS), mail is rate limited: have the PTR set to herald's EHLO name (`herald check` ptr.<address>)",
    },
    KnownCode {
        provider: "Gmail",
        code: "5.7.26",
        meaning: "the mail is unauthenticated: neither SPF nor DKIM passed aligned with From:, or the domain's DMARC policy rejected it; publish the SPF include and DKIM keys (`herald check DOMAIN`)",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.26",
        meaning: "the mail is unauthenticated (no passing SPF or DKIM), so Gmail rate limits it; publish the SPF include and DKIM keys (`herald check DOMAIN`)",
    },
    KnownCode {
        provider: "Gmail",
        code: "5.7.27",
        meaning: "SPF did not pass for the sending address: add herald's include to the domain's SPF record",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.27",
        meaning: "SPF did not pass for the sending address, so Gmail rate limits it: add herald's include to the domain's SPF record",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.28",
        meaning: "an unusual rate of unsolicited mail from this address or domain: Gmail rate limits it; lower the volume, clean the list, watch complaints (`herald app stats`)",
    },
    KnownCode {
        provider: "Gmail",
        code: "5.7.28",
        meaning: "an unusual rate of unsolicited mail from this address or domain: Gmail blocks it; stop and clean the list, check complaints in Postmaster Tools",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.29",
        meaning: "the message was not sent over TLS: deliver with STARTTLS (herald does unless [delivery] relay_host sends elsewhere)",
    },
    KnownCode {
        provider: "Gmail",
        code: "5.7.30",
        meaning: "DKIM did not pass: publish the active DKIM key herald signs with (`herald check DOMAIN`)",
    },
    KnownCode {
        provider: "Gmail",
        code: "4.7.30",
        meaning: "DKIM did not pass, so Gmail rate limits the mail: publish the active DKIM key herald signs with",
    },
    KnownCode {
        provider: "Gmail",
        code: "5.7.32",
        meaning: "the From: domain is aligned with neither the SPF nor the DKIM domain: give the From: domain (or its organizational domain) an active DKIM key",
    },
    KnownCode {
        provider: "Yahoo",
        code: "TSS04",
        meaning: "Yahoo defers mail from this address for unexpected volume or user complaints: slow down, clean the list, watch complaints (`herald app stats`)",
    },
    KnownCode {
        provider: "Yahoo",
        code: "TSS09",
        meaning: "Yahoo refuses all mail from this address (poor reputation): stop sending from it and ask Yahoo's sender support",
    },
    KnownCode {
        provider: "Yahoo",
        code: "TSS11",
        meaning: "Yahoo defers mail for excessive unknown recipients: remove addresses that bounce",
    },
    KnownCode {
        provider: "Microsoft",
        code: "5.7.515",
        meaning: "the sending domain does not meet Microsoft's authentication level for high-volume senders: SPF, DKIM and DMARC (p=none at least) must all pass (`herald check DOMAIN`)",
    },
    KnownCode {
        provider: "Microsoft",
        code: "5.7.509",
        meaning: "the mail failed DMARC and the domain's policy is reject: publish the DKIM key and the SPF include",
    },
    KnownCode {
        provider: "Microsoft",
        code: "4.7.650",
        meaning: "Microsoft rate limits this address for its reputation: lower the volume, keep complaints low, ask Microsoft's sender support",
    },
    KnownCode {
        provider: "Microsoft",
        code: "S3150",
        meaning: "Microsoft blocks this address (on its block list): request delisting at sender.office.com",
    },
    KnownCode {
        provider: "Microsoft",
        code: "S3140",
        meaning: "Microsoft blocks this address (on its block list): request delisting at sender.office.com",
    },
];

/// The table's explanation of a reply, if it carries a known code.
pub(crate) fn explain(reply: &str) -> Option<&'static KnownCode> {
    KNOWN_CODES.iter().find(|k| has_token(reply, k.code))
}

/// Whether `token` occurs in `text` as a whole token: not part of a longer code
/// (`5.7.2` is not in `5.7.26`, `TSS04` is in `[TSS04]`).
fn has_token(text: &str, token: &str) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find(token) {
        let start = from + pos;
        let end = start + token.len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(end).copied();
        let joined = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.');
        if !joined(before) && !joined(after) {
            return true;
        }
        from = end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_explained_by_their_provider_code() {
        let gmail = "550-5.7.26 This mail has been blocked because the sender is unauthenticated.";
        assert_eq!(explain(gmail).map(|k| k.code), Some("5.7.26"));
        assert_eq!(
            explain("421-4.7.28 [203.0.113.10] Our system has detected an unusual rate")
                .map(|k| k.provider),
            Some("Gmail")
        );
        assert_eq!(
            explain("421 4.7.0 [TSS04] Messages from 203.0.113.10 temporarily deferred")
                .map(|k| k.provider),
            Some("Yahoo")
        );
        assert_eq!(
            explain("550 5.7.515 Access denied, sending domain example.com does not meet")
                .map(|k| k.code),
            Some("5.7.515")
        );
        // A longer code is not a shorter one, and ordinary replies have no explanation.
        assert!(explain("550 5.7.2601 something").is_none());
        assert!(explain("550 5.1.1 user unknown").is_none());
        assert!(explain("250 2.0.0 OK 1.2.5.7.26").is_none());
    }
}
