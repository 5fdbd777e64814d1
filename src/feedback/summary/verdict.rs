//! The verdict for one domain: the policy now and the next step (`fix`, `wait`, `quarantine`,
//! `reject`, `keep`), with the numbers behind it and the sources a stricter policy would hurt.

use std::net::IpAddr;

use serde::Serialize;

use super::{Source, percent};
use crate::feedback::classify::SourceClass;

/// A legitimate source must pass DMARC for at least this share of its mail before tightening.
pub(crate) const LEGIT_PASS_THRESHOLD: f64 = 98.0;
/// Failing mail from unknown sources above this share of the domain's mail blocks tightening:
/// that much is more likely a real sender nobody listed than forgery.
pub(crate) const UNKNOWN_FAIL_THRESHOLD: f64 = 2.0;
/// Days of reports wanted before a policy change is advised.
pub(crate) const MIN_DAYS: i64 = 7;

/// The advice for one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The policy now.
    pub policy: String,
    /// `quarantine`, `reject`, `fix`, `wait` or `keep`.
    pub next: String,
    /// True when tightening is advised now.
    pub safe: bool,
    /// The advice in one or two sentences, with numbers.
    pub text: String,
    /// Sources whose failing mail would be quarantined or rejected by a stricter policy.
    pub hurt: Vec<Hurt>,
}

/// A source that a stricter policy would hurt.
#[derive(Debug, Clone, Serialize)]
pub struct Hurt {
    /// The address.
    pub ip: IpAddr,
    /// Its class.
    pub class: SourceClass,
    /// Failing messages.
    pub failing: u64,
    /// What to do about it.
    pub advice: String,
}

/// The next step for a domain, from its numbers.
pub(super) fn verdict(
    domain: &str,
    policy: &str,
    messages: u64,
    pass: u64,
    days: i64,
    sources: &[Source],
    rua: Option<String>,
) -> Verdict {
    let rua = rua.map(|r| format!("; rua=mailto:{r}")).unwrap_or_default();
    let mut hurt = Vec::new();
    let mut blockers = Vec::new();
    let mut unknown_failing = 0;
    for s in sources {
        let failing = s.messages - s.pass;
        if failing == 0 {
            continue;
        }
        let name = match &s.ptr {
            Some(p) => format!("{} ({p})", s.ip),
            None => format!("{} (no PTR)", s.ip),
        };
        let advice = match s.class {
            SourceClass::Unknown => {
                unknown_failing += failing;
                format!("{name}: forged or an unlisted sender: find it before moving on")
            }
            _ => {
                let cause = if s.dkim_aligned == 0 && s.spf_aligned == 0 {
                    format!(
                        "no aligned DKIM signature and SPF not aligned: have it sign with a key for \
                         {domain}, or send with an envelope sender at {domain}"
                    )
                } else {
                    "part of its mail is not aligned (forwarding or a second sending path)".into()
                };
                let line = format!(
                    "{name} ({}) passes DMARC for {:.1}% of {} messages: {cause}",
                    s.class.as_str(),
                    s.pass_rate(),
                    s.messages
                );
                if s.pass_rate() < LEGIT_PASS_THRESHOLD {
                    blockers.push(line.clone());
                }
                line
            }
        };
        hurt.push(Hurt {
            ip: s.ip,
            class: s.class,
            failing,
            advice,
        });
    }
    let rate = percent(pass, messages);
    let unknown_share = percent(unknown_failing, messages);
    let evidence = format!(
        "{messages} messages over {days} day{}, {rate:.1}% pass DMARC; {unknown_failing} failing \
         from unknown sources ({unknown_share:.1}%)",
        if days == 1 { "" } else { "s" }
    );
    let (next, safe, text) = if messages == 0 {
        (
            "wait",
            false,
            format!("no messages reported for {domain} yet: keep p=none and wait for reports"),
        )
    } else if policy == "reject" {
        (
            "keep",
            false,
            format!(
                "p=reject is in force ({evidence}); keep reading the reports for new senders. \
                 Last step: BIMI, your logo beside your mail (`[bimi]`, then `herald check \
                 {domain}` checks the record, the SVG Tiny PS logo and the VMC)"
            ),
        )
    } else if !blockers.is_empty() {
        (
            "fix",
            false,
            format!(
                "fix first, then tighten: {} ({evidence})",
                blockers.join("; ")
            ),
        )
    } else if unknown_share > UNKNOWN_FAIL_THRESHOLD {
        (
            "fix",
            false,
            format!(
                "{unknown_share:.1}% of the mail fails from unknown sources, more than \
                 {UNKNOWN_FAIL_THRESHOLD}%: find out whether they are yours before tightening \
                 ({evidence})"
            ),
        )
    } else if days < MIN_DAYS {
        (
            "wait",
            false,
            format!(
                "only {days} days of reports; wait for at least {MIN_DAYS} before changing \
                 p={policy} ({evidence})"
            ),
        )
    } else if policy == "quarantine" {
        (
            "reject",
            true,
            format!(
                "p=reject is safe for {domain}: every known source passes ({evidence}). \
                 Publish _dmarc.{domain} TXT \"v=DMARC1; p=reject{rua}\""
            ),
        )
    } else {
        (
            "quarantine",
            true,
            format!(
                "p=quarantine is safe for {domain}: every known source passes ({evidence}). \
                 Publish _dmarc.{domain} TXT \"v=DMARC1; p=quarantine{rua}\""
            ),
        )
    };
    Verdict {
        policy: policy.to_string(),
        next: next.into(),
        safe,
        text,
        hurt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(ip: &str, class: SourceClass, messages: u64, pass: u64) -> Source {
        Source {
            ip: ip.parse().unwrap(),
            ptr: None,
            class,
            why: String::new(),
            messages,
            pass,
            dkim_aligned: pass,
            spf_aligned: 0,
            quarantined: 0,
            rejected: 0,
            reporters: vec!["google.com".into()],
        }
    }

    fn judge(policy: &str, days: i64, sources: &[Source]) -> Verdict {
        let messages = sources.iter().map(|s| s.messages).sum();
        let pass = sources.iter().map(|s| s.pass).sum();
        verdict(
            "example.com",
            policy,
            messages,
            pass,
            days,
            sources,
            Some("dmarc@reports.test".into()),
        )
    }

    #[test]
    fn tightening_follows_the_numbers() {
        let herald = src("203.0.113.10", SourceClass::Herald, 10_000, 10_000);
        let forger = src("198.51.100.7", SourceClass::Unknown, 100, 0);
        let v = judge("none", 14, &[herald.clone(), forger.clone()]);
        assert_eq!((v.next.as_str(), v.safe), ("quarantine", true));
        assert!(
            v.text
                .contains("p=quarantine; rua=mailto:dmarc@reports.test")
        );
        assert_eq!(v.hurt.len(), 1);
        assert_eq!(
            judge("quarantine", 14, std::slice::from_ref(&herald)).next,
            "reject"
        );
        assert_eq!(
            judge("reject", 14, std::slice::from_ref(&herald)).next,
            "keep"
        );
        assert_eq!(judge("none", 3, std::slice::from_ref(&herald)).next, "wait");
        assert_eq!(judge("none", 14, &[]).next, "wait");
    }

    #[test]
    fn a_failing_known_source_or_much_unknown_mail_blocks() {
        let herald = src("203.0.113.10", SourceClass::Herald, 10_000, 10_000);
        let tool = src("198.51.100.20", SourceClass::Authorized, 1_000, 900);
        let v = judge("none", 14, &[herald.clone(), tool]);
        assert_eq!((v.next.as_str(), v.safe), ("fix", false));
        assert!(v.text.contains("198.51.100.20"), "{}", v.text);
        let lots = src("198.51.100.7", SourceClass::Unknown, 500, 0);
        let v = judge("none", 14, &[herald, lots]);
        assert_eq!(v.next, "fix");
        assert!(v.text.contains("unknown sources"), "{}", v.text);
    }
}
