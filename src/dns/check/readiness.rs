//! "Will Gmail, Yahoo and Microsoft take this mail?": the providers' sender rules (Gmail and
//! Yahoo since February 2024, Microsoft since May 2025), each judged from what `herald check`
//! found in DNS, from herald's configuration, and from what the running herald has seen.
//!
//! herald cannot know whether a domain sends the 5,000 messages a day that make it a "bulk
//! sender" to a provider, so the verdict applies the bulk-sender rules, the strictest: SPF and
//! DKIM, aligned DMARC (p=none at least), forward-confirmed reverse DNS, TLS, RFC 5322 format,
//! one-click unsubscribe for bulk mail, and a low complaint rate. A rule a provider only
//! recommends is listed but does not decide its verdict.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Finding, Status};
use crate::config::{AppConfig, Config, UnsubscribeMode};

/// What the running herald has seen, asked through its admin endpoint by `herald check`.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// Each app's complaint rate (percent) and recipients counted over the last 24 hours, or
    /// why it is not known.
    pub complaints: Result<BTreeMap<String, (f64, u64)>, String>,
    /// Receivers' replies to herald's delivery attempts (the queue's last replies).
    pub replies: Vec<String>,
}

impl Default for Observed {
    fn default() -> Observed {
        Observed {
            complaints: Err("not asked".into()),
            replies: Vec::new(),
        }
    }
}

/// One provider's rule as applied to the domain (and app).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rule {
    /// Stable id: `dkim`, `spf`, `dmarc`, `ptr`, `tls`, `format`, `unsubscribe`, `complaints`.
    pub id: &'static str,
    /// Pass, fail, warn, or info when it could not be known.
    pub status: Status,
    /// Whether the provider requires it (false: recommended only, not part of the verdict).
    pub required: bool,
    /// What herald found, in words.
    pub evidence: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// One provider's verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Verdict {
    /// `gmail`, `yahoo` or `microsoft`.
    pub provider: &'static str,
    /// "ready" when no required rule fails, else "not ready".
    pub verdict: &'static str,
    /// True when ready.
    pub ready: bool,
    /// Every rule, in a fixed order.
    pub rules: Vec<Rule>,
}

/// A refusal herald has seen from a receiver, explained.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeenCode {
    /// The provider whose code it is.
    pub provider: &'static str,
    /// The code.
    pub code: &'static str,
    /// What it means and what to do.
    pub meaning: &'static str,
    /// How many of the replies seen carry it.
    pub count: usize,
    /// One of those replies, as received.
    pub example: String,
}

/// Which apps the verdict is about: the one named, or every app that may send as the domain.
pub(super) fn apps_for<'a>(
    cfg: &'a Config,
    domain: &str,
    app: Option<&str>,
) -> Vec<(&'a str, &'a AppConfig)> {
    cfg.apps
        .iter()
        .filter(|(name, a)| match app {
            Some(wanted) => name.as_str() == wanted,
            None => sender_domains(a).iter().any(|d| d == domain),
        })
        .map(|(n, a)| (n.as_str(), a))
        .collect()
}

/// The domains an app's `senders` entries send as (lower case).
pub(crate) fn sender_domains(app: &AppConfig) -> Vec<String> {
    let mut out: Vec<String> = app
        .senders
        .iter()
        .filter_map(|s| s.rsplit_once('@').map(|(_, d)| d))
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Gmail, Yahoo and Microsoft, each with its rules.
pub(super) fn verdicts(
    cfg: &Config,
    domain: &str,
    apps: &[(&str, &AppConfig)],
    findings: &[Finding],
    observed: &Observed,
) -> Vec<Verdict> {
    let dkim = from_findings(
        "dkim",
        findings,
        |id| id.starts_with("dkim.") || id == "dmarc.alignment",
        "an active DKIM key aligned with the From: domain, published as herald signs with it",
        &format!("herald signs mail from {domain} with an aligned, published key"),
    );
    let spf = from_findings(
        "spf",
        findings,
        |id| {
            matches!(
                id,
                "spf.record" | "spf.include" | "spf.lookups" | "spf.eval"
            )
        },
        "SPF passes for herald's addresses",
        &format!("{domain}'s SPF record includes herald's addresses and passes for each"),
    );
    let dmarc = from_findings(
        "dmarc",
        findings,
        |id| id == "dmarc.record",
        "a DMARC record (p=none at least)",
        &findings
            .iter()
            .find(|f| f.id == "dmarc.record")
            .map(|f| format!("a DMARC record applies: {}", f.message))
            .unwrap_or_default(),
    );
    let ptr = from_findings(
        "ptr",
        findings,
        |id| id.starts_with("ptr."),
        "reverse DNS: each sending address has a PTR naming a host that resolves back to it",
        "each sending address has forward-confirmed reverse DNS",
    );
    let tls = tls_rule(cfg);
    let format = Rule {
        id: "format",
        status: Status::Pass,
        required: true,
        evidence: "herald adds Date: and Message-ID: when the app leaves them out and refuses \
                   mail without exactly one From: address, so what it sends carries all three"
            .into(),
        fix: None,
    };
    let unsubscribe = unsubscribe_rule(domain, apps);
    let mut out = Vec::new();
    for provider in ["gmail", "yahoo", "microsoft"] {
        // Microsoft's May 2025 rules require SPF, DKIM and DMARC; reverse DNS, TLS and
        // unsubscribe it recommends. Gmail requires TLS; Yahoo recommends it.
        let strict = provider != "microsoft";
        let rules = vec![
            dkim.clone().required(true),
            spf.clone().required(true),
            dmarc.clone().required(true),
            ptr.clone().required(strict),
            tls.clone().required(provider == "gmail"),
            format.clone(),
            unsubscribe.clone().required(strict),
            complaint_rule(provider, apps, observed),
        ];
        let ready = !rules
            .iter()
            .any(|r| r.required && matches!(r.status, Status::Fail | Status::Error));
        out.push(Verdict {
            provider,
            verdict: if ready { "ready" } else { "not ready" },
            ready,
            rules,
        });
    }
    out
}

impl Rule {
    fn required(mut self, required: bool) -> Rule {
        self.required = required;
        self
    }
}

/// The rule as the worst of the findings it rests on, with that finding's words.
fn from_findings(
    id: &'static str,
    findings: &[Finding],
    select: impl Fn(&str) -> bool,
    what: &str,
    all_well: &str,
) -> Rule {
    let relevant: Vec<&Finding> = findings.iter().filter(|f| select(&f.id)).collect();
    let rank = |s: Status| match s {
        Status::Error => 4,
        Status::Fail => 3,
        Status::Warn => 1,
        Status::Pass | Status::Info => 0,
    };
    let worst = relevant.iter().max_by_key(|f| rank(f.status));
    match worst {
        None => Rule {
            id,
            status: Status::Fail,
            required: true,
            evidence: format!("not checked: {what} could not be looked at"),
            fix: Some("make the checks above pass, then run again".into()),
        },
        Some(f) if rank(f.status) >= 3 => Rule {
            id,
            status: f.status,
            required: true,
            evidence: format!("{}: {}", f.id, f.message),
            fix: f.fix.clone(),
        },
        Some(_) => Rule {
            id,
            status: Status::Pass,
            required: true,
            evidence: all_well.to_string(),
            fix: None,
        },
    }
}

/// TLS to the provider's MX: herald starts TLS whenever the MX offers STARTTLS, and all three
/// providers' MX hosts do; a smart host in between takes that over.
fn tls_rule(cfg: &Config) -> Rule {
    match &cfg.delivery.relay_host {
        Some(relay) => Rule {
            id: "tls",
            status: Status::Warn,
            required: true,
            evidence: format!(
                "mail leaves through [delivery] relay_host {relay}: TLS to the provider's MX is that relay's to do"
            ),
            fix: Some(format!("make sure {relay} delivers with STARTTLS")),
        },
        None => Rule {
            id: "tls",
            status: Status::Pass,
            required: true,
            evidence: format!(
                "herald delivers straight to the provider's MX and starts TLS whenever it offers \
                 STARTTLS, as Gmail's, Yahoo's and Microsoft's MX hosts do{}",
                if cfg.mta_sts.enabled {
                    "; MTA-STS policies are enforced"
                } else {
                    ""
                }
            ),
            fix: None,
        },
    }
}

/// One-click unsubscribe (RFC 8058) for every bulk app among `apps`.
fn unsubscribe_rule(domain: &str, apps: &[(&str, &AppConfig)]) -> Rule {
    let bulk: Vec<&(&str, &AppConfig)> = apps.iter().filter(|(_, a)| a.bulk).collect();
    let missing: Vec<&str> = bulk
        .iter()
        .filter(|(_, a)| a.unsubscribe != UnsubscribeMode::OneClick)
        .map(|(n, _)| *n)
        .collect();
    if bulk.is_empty() {
        return Rule {
            id: "unsubscribe",
            status: Status::Pass,
            required: true,
            evidence: format!(
                "no app sending as {domain} is marked bulk = true; one-click unsubscribe is required of bulk mail only"
            ),
            fix: None,
        };
    }
    if missing.is_empty() {
        return Rule {
            id: "unsubscribe",
            status: Status::Pass,
            required: true,
            evidence: format!(
                "bulk app(s) {} send with one-click unsubscribe (List-Unsubscribe and List-Unsubscribe-Post, signed)",
                bulk.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
            fix: None,
        };
    }
    Rule {
        id: "unsubscribe",
        status: Status::Fail,
        required: true,
        evidence: format!(
            "app(s) {} are marked bulk = true but send without one-click unsubscribe",
            missing.join(", ")
        ),
        fix: Some(format!(
            "set unsubscribe = \"one-click\" in [apps.{}] (needs [web] listen), or have the app add RFC 8058 headers itself",
            missing.first().copied().unwrap_or_default()
        )),
    }
}

/// The complaint rate from the guard's counters, against the provider's published ceiling:
/// Gmail asks for under 0.1% and never 0.3%, Yahoo 0.3%; Microsoft publishes none.
fn complaint_rule(provider: &str, apps: &[(&str, &AppConfig)], observed: &Observed) -> Rule {
    let (warn_at, fail_at) = match provider {
        "gmail" => (Some(0.1), Some(0.3)),
        "yahoo" => (None, Some(0.3)),
        _ => (None, None),
    };
    let rates = match &observed.complaints {
        Err(why) => {
            return Rule {
                id: "complaints",
                status: Status::Info,
                required: fail_at.is_some(),
                evidence: format!("complaint rate unknown: {why}"),
                fix: None,
            };
        }
        Ok(rates) => rates,
    };
    let mut worst: Option<(&str, f64, u64)> = None;
    for (name, _) in apps {
        if let Some(&(rate, sent)) = rates.get(*name)
            && sent > 0
            && worst.is_none_or(|(_, w, _)| rate > w)
        {
            worst = Some((name, rate, sent));
        }
    }
    let Some((app, rate, sent)) = worst else {
        return Rule {
            id: "complaints",
            status: Status::Info,
            required: fail_at.is_some(),
            evidence: "complaint rate unknown: herald has counted no mail of these apps yet".into(),
            fix: None,
        };
    };
    let evidence = format!(
        "{app}: {rate:.3}% complaints over 24 h ({sent} recipients){}",
        match fail_at {
            Some(limit) => format!("; {provider} tolerates under {limit}%"),
            None => format!("; {provider} publishes no ceiling"),
        }
    );
    let status = if fail_at.is_some_and(|l| rate >= l) {
        Status::Fail
    } else if warn_at.is_some_and(|l| rate >= l) {
        Status::Warn
    } else {
        Status::Pass
    };
    Rule {
        id: "complaints",
        status,
        required: fail_at.is_some(),
        evidence,
        fix: (status != Status::Pass).then(|| {
            format!("send {app}'s mail only to people who asked for it; clean the list (`herald app stats`)")
        }),
    }
}

/// The refusals among `replies` that the providers' code table explains, most frequent first.
pub(super) fn seen_codes(replies: &[String]) -> Vec<SeenCode> {
    let mut by_code: BTreeMap<&'static str, SeenCode> = BTreeMap::new();
    for reply in replies {
        if let Some(k) = crate::providers::explain(reply) {
            by_code
                .entry(k.code)
                .or_insert_with(|| SeenCode {
                    provider: k.provider,
                    code: k.code,
                    meaning: k.meaning,
                    count: 0,
                    example: reply.clone(),
                })
                .count += 1;
        }
    }
    let mut out: Vec<SeenCode> = by_code.into_values().collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.count));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_seen_are_grouped_by_code_most_frequent_first() {
        let replies: Vec<String> = [
            "421-4.7.28 [203.0.113.10] Our system has detected an unusual rate of unsolicited mail",
            "550 5.1.1 user unknown",
            "421-4.7.28 [203.0.113.10] Our system has detected an unusual rate of unsolicited mail",
            "421 4.7.0 [TSS04] Messages from 203.0.113.10 temporarily deferred",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let seen = seen_codes(&replies);
        assert_eq!(seen.len(), 2, "the unknown code is left out");
        assert_eq!((seen[0].code, seen[0].count), ("4.7.28", 2));
        assert_eq!((seen[1].provider, seen[1].count), ("Yahoo", 1));
        assert!(seen[1].example.contains("TSS04"));
    }
}
