//! The classification of a remote refusal ([`classify`]): the operator's rules from
//! `[[bounce.rules]]` first, then the table shipped with herald ([`SHIPPED`]), then the enhanced
//! status code's own meaning (RFC 3463), then the reply code. Patterns are case-insensitive
//! substrings: cheap, and enough for the providers' fixed texts.

use crate::config::{BounceRule, RuleClass};
use crate::events::BounceClass;

/// One shipped rule: reply code (0: any), enhanced status or prefix (`""`: any), text (`""`:
/// any), class.
type Shipped = (u16, &'static str, &'static str, BounceClass);

use BounceClass::{Block, Hard, Other, Soft, Throttle};

/// The rules herald ships, most specific first. Sources: Gmail's SMTP error reference, the
/// Microsoft 365 NDR reference, Yahoo's sender hub (TSxx), and RFC 3463.
pub(crate) const SHIPPED: &[Shipped] = &[
    // Gmail: authentication and bulk-sender requirements, reputation, rate.
    (0, "4.7.26", "", Block),
    (0, "5.7.26", "", Block),
    (0, "4.7.27", "", Block),
    (0, "5.7.27", "", Block),
    (0, "4.7.28", "", Block),
    (0, "5.7.28", "", Block),
    (0, "4.7.29", "", Block),
    (0, "5.7.29", "", Block),
    (0, "4.7.30", "", Block),
    (0, "5.7.30", "", Block),
    (0, "4.7.32", "", Block),
    (0, "5.7.32", "", Block),
    (0, "4.7.40", "", Block),
    (0, "5.7.40", "", Block),
    (0, "4.7.0", "unusual rate", Throttle),
    (0, "4.2.1", "receiving mail at a rate", Throttle),
    (0, "4.2.1", "rate that prevents", Throttle),
    (0, "4.2.2", "", Soft),
    (0, "5.2.2", "over quota", Soft),
    (0, "5.2.2", "mailbox full", Soft),
    // Microsoft: 5.7.515 (authentication requirements for high-volume senders), S3150/S3140
    // blocks, 5.7.606-649 banned sending IPs, rate limits.
    (0, "5.7.515", "", Block),
    (0, "5.7.5", "", Block),
    (0, "5.7.606", "", Block),
    (0, "5.7.708", "", Block),
    (0, "5.7.750", "", Block),
    (0, "", "S3150", Block),
    (0, "", "S3140", Block),
    (0, "", "S3114", Block),
    (0, "4.7.650", "", Throttle),
    (0, "4.7.500", "", Throttle),
    (
        0,
        "5.4.1",
        "recipient address rejected: access denied",
        Hard,
    ),
    (0, "5.1.10", "", Hard),
    // Yahoo/AOL: TSS04 temporary reputation deferral, TS01-03 blocks, TSS09 rate.
    (0, "", "TSS04", Block),
    (0, "", "TSS05", Throttle),
    (0, "", "TSS09", Throttle),
    (0, "", "TSS11", Throttle),
    (0, "", "TS01", Block),
    (0, "", "TS02", Block),
    (0, "", "TS03", Block),
    (0, "", "TSS07", Block),
    (0, "", "TSS08", Block),
    // Common wording without (or with misleading) enhanced codes.
    (0, "", "spamhaus", Block),
    (0, "", "blocklist", Block),
    (0, "", "blacklist", Block),
    (0, "", "listed at", Block),
    (0, "", "rejected as spam", Block),
    (0, "", "spam detected", Block),
    (0, "", "reputation", Block),
    (0, "", "too many connections", Throttle),
    (0, "", "too many messages", Throttle),
    (0, "", "rate limit", Throttle),
    (0, "", "try again later", Soft),
    (5, "", "user unknown", Hard),
    (5, "", "unknown user", Hard),
    (5, "", "no such user", Hard),
    (5, "", "does not exist", Hard),
    (5, "", "mailbox not found", Hard),
    (5, "", "mailbox unavailable", Hard),
    (5, "", "recipient rejected", Hard),
    (5, "", "address rejected", Hard),
    (5, "", "invalid recipient", Hard),
    (5, "", "account has been disabled", Hard),
    (0, "", "mailbox full", Soft),
    (0, "", "over quota", Soft),
    (0, "", "quota exceeded", Soft),
    // RFC 3463 by subject.
    (0, "5.1.1", "", Hard),
    (0, "5.1.2", "", Hard),
    (0, "5.1.3", "", Hard),
    (0, "5.1.6", "", Hard),
    (0, "5.1.0", "", Hard),
    (0, "5.4.4", "", Hard),
    (0, "5.4.1", "", Hard),
    (0, "4.1.", "", Soft),
    (0, "5.2.1", "", Hard),
    (0, "5.2.", "", Soft),
    (0, "4.2.", "", Soft),
    (0, "5.3.", "", Other),
    (0, "4.3.", "", Soft),
    (0, "4.4.", "", Soft),
    (0, "5.4.", "", Other),
    (0, "5.5.", "", Other),
    (0, "5.6.", "", Other),
    (0, "4.7.", "", Block),
    (0, "5.7.", "", Block),
];

/// The class of a refusal with `code`, enhanced `status` (`5.1.1`, or empty) and `text`: the
/// first matching rule of `custom`, then of [`SHIPPED`], then by the reply code alone (`5xx`
/// without a better clue: [`BounceClass::Other`]; `4xx`: [`BounceClass::Soft`]).
pub(crate) fn classify(custom: &[BounceRule], code: u16, status: &str, text: &str) -> BounceClass {
    let lower = text.to_ascii_lowercase();
    for r in custom {
        if matches(
            r.code.unwrap_or(0),
            r.status.as_deref().unwrap_or(""),
            &r.contains.as_deref().unwrap_or("").to_ascii_lowercase(),
            code,
            status,
            &lower,
        ) {
            return from_rule(r.class);
        }
    }
    for &(c, s, t, class) in SHIPPED {
        if matches(c, s, &t.to_ascii_lowercase(), code, status, &lower) {
            return class;
        }
    }
    match code {
        400..=499 => Soft,
        550 | 551 | 553 => Hard,
        _ => Other,
    }
}

fn from_rule(c: RuleClass) -> BounceClass {
    match c {
        RuleClass::Hard => Hard,
        RuleClass::Soft => Soft,
        RuleClass::Block => Block,
        RuleClass::Throttle => Throttle,
        RuleClass::Other => Other,
    }
}

fn matches(
    rule_code: u16,
    rule_status: &str,
    rule_text: &str,
    code: u16,
    status: &str,
    text: &str,
) -> bool {
    let code_ok = match rule_code {
        0 => true,
        1..=9 => code / 100 == rule_code,
        c => c == code,
    };
    let status_ok = rule_status.is_empty()
        || if rule_status.ends_with('.') {
            status.starts_with(rule_status)
        } else {
            status == rule_status
        };
    code_ok && status_ok && (rule_text.is_empty() || text.contains(rule_text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: u16, status: &str, text: &str) -> BounceClass {
        classify(&[], code, status, text)
    }

    #[test]
    fn providers_answers_get_their_class() {
        assert_eq!(
            c(
                550,
                "5.1.1",
                "The email account that you tried to reach does not exist"
            ),
            Hard
        );
        assert_eq!(c(421, "4.7.28", "unusual rate of unsolicited mail"), Block);
        assert_eq!(c(550, "5.7.26", "unauthenticated email"), Block);
        assert_eq!(
            c(
                550,
                "5.7.515",
                "Access denied, sending domain does not meet the required authentication level"
            ),
            Block
        );
        assert_eq!(
            c(
                421,
                "4.7.0",
                "[TSS04] Messages from 192.0.2.1 temporarily deferred"
            ),
            Block
        );
        assert_eq!(
            c(
                452,
                "4.2.2",
                "The email account that you tried to reach is over quota"
            ),
            Soft
        );
        assert_eq!(
            c(421, "4.7.0", "Try again later, closing connection. (TSS09)"),
            Throttle
        );
        assert_eq!(
            c(550, "", "Requested action not taken: mailbox unavailable"),
            Hard
        );
        assert_eq!(
            c(
                554,
                "5.7.1",
                "Service unavailable; client host blocked using Spamhaus"
            ),
            Block
        );
        assert_eq!(c(451, "", "local problem"), Soft);
        assert_eq!(c(554, "", "transaction failed"), Other);
    }

    #[test]
    fn the_operators_rules_come_first() {
        let custom = vec![BounceRule {
            code: Some(5),
            status: Some("5.1.".into()),
            contains: Some("Mailbox Disabled".into()),
            class: RuleClass::Soft,
        }];
        assert_eq!(
            classify(&custom, 550, "5.1.1", "mailbox disabled for now"),
            Soft
        );
        assert_eq!(classify(&custom, 550, "5.1.1", "no such user"), Hard);
    }
}
