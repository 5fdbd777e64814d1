//! What the reports say, per domain: messages, pass share, each source with its class, the
//! daily pass rate, and a verdict — the policy now and the next step, with the numbers behind
//! it. `herald dmarc summary`, `herald dmarc sources` and `/dmarc` all show this value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use super::classify::{Classifier, SourceClass};
use crate::config::Config;
use crate::store::{
    DmarcGroup, DmarcReportFacts, ReportStore, SourceDkim, SourceOrg, StoreCounters,
    TlsReportSummary,
};

/// A legitimate source must pass DMARC for at least this share of its mail before tightening.
pub(crate) const LEGIT_PASS_THRESHOLD: f64 = 98.0;
/// Failing mail from unknown sources above this share of the domain's mail blocks tightening:
/// that much is more likely a real sender nobody listed than forgery.
pub(crate) const UNKNOWN_FAIL_THRESHOLD: f64 = 2.0;
/// Days of reports wanted before a policy change is advised.
pub(crate) const MIN_DAYS: i64 = 7;
/// Sources looked up in DNS at most per domain (the rest are shown as unknown, unresolved).
const MAX_CLASSIFIED: usize = 200;

/// The whole picture for a period.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Unix seconds when this was computed.
    pub generated_at: i64,
    /// Length of the period in days.
    pub days: u32,
    /// Reports whose period ends at or after this (unix seconds) are included.
    pub since: i64,
    /// Store counters (all time).
    pub counters: StoreCounters,
    /// One entry per reported domain.
    pub domains: Vec<DomainSummary>,
    /// TLS-RPT reports received at `tlsrpt@` for the period.
    pub tls_reports: Vec<TlsReportSummary>,
}

/// One domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainSummary {
    /// The policy domain.
    pub domain: String,
    /// Whether herald signs for this domain (reports for other domains are kept but flagged).
    pub signed_by_herald: bool,
    /// The policy receivers saw most recently (`none`, `quarantine`, `reject`).
    pub policy: String,
    /// Reports counted.
    pub reports: usize,
    /// Organizations that reported.
    pub reporters: Vec<String>,
    /// Messages reported.
    pub messages: u64,
    /// Messages that passed DMARC.
    pub pass: u64,
    /// Share of messages that passed, in percent (one decimal).
    pub pass_rate: f64,
    /// Days between the first report's start and the last report's end.
    pub days_covered: i64,
    /// Messages and passes per UTC day.
    pub daily: Vec<Day>,
    /// Every sending address, most messages first.
    pub sources: Vec<Source>,
    /// What to do next.
    pub verdict: Verdict,
    /// Reports whose mail was not authenticated for the organization they name: shown here,
    /// never counted above ([`super::verify`]).
    pub unverified: Unverified,
}

/// The unverified reports of one domain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Unverified {
    /// Reports.
    pub reports: usize,
    /// Messages they claim.
    pub messages: u64,
    /// The organizations they name.
    pub reporters: Vec<String>,
}

/// One UTC day.
#[derive(Debug, Clone, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Messages.
    pub messages: u64,
    /// Passing messages.
    pub pass: u64,
}

/// One sending address for one domain.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// The address.
    pub ip: IpAddr,
    /// Its PTR name.
    pub ptr: Option<String>,
    /// herald, authorized or unknown.
    pub class: SourceClass,
    /// Why it got that class.
    pub why: String,
    /// Messages reported.
    pub messages: u64,
    /// Messages that passed DMARC.
    pub pass: u64,
    /// Messages with an aligned DKIM pass.
    pub dkim_aligned: u64,
    /// Messages with an aligned SPF pass.
    pub spf_aligned: u64,
    /// Messages receivers quarantined.
    pub quarantined: u64,
    /// Messages receivers rejected.
    pub rejected: u64,
    /// Organizations that reported this source.
    pub reporters: Vec<String>,
}

impl Source {
    /// Share passing, in percent.
    pub fn pass_rate(&self) -> f64 {
        percent(self.pass, self.messages)
    }
}

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

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).floor() / 10.0
}

/// Builds the summary of the last `days` days, for one domain or all.
pub(crate) async fn build(
    cfg: &Config,
    store: &dyn ReportStore,
    domain: Option<&str>,
    days: u32,
) -> anyhow::Result<Summary> {
    let now = crate::store::now();
    let since = now - i64::from(days) * 86_400;
    let aggregate = store.dmarc_aggregate(domain, since).await?;
    let counters = store.counters().await?;
    let classifier = Classifier::new(cfg);
    let signing: BTreeSet<String> = cfg
        .dkim
        .keys
        .iter()
        .map(|k| k.domain.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut by_domain: BTreeMap<String, DomainData> = BTreeMap::new();
    for g in aggregate.groups {
        by_domain
            .entry(g.domain.clone())
            .or_default()
            .groups
            .push(g);
    }
    for r in aggregate.reports {
        if let Some(d) = by_domain.get_mut(&r.domain) {
            d.reports.push(r);
        }
    }
    for o in aggregate.source_orgs {
        if let Some(d) = by_domain.get_mut(&o.domain) {
            d.source_orgs.push(o);
        }
    }
    for k in aggregate.source_dkim {
        if let Some(d) = by_domain.get_mut(&k.domain) {
            d.source_dkim.push(k);
        }
    }
    let mut domains = Vec::new();
    for (name, data) in by_domain {
        let signed = signing.contains(&name);
        domains.push(domain_summary(&classifier, name, signed, data, cfg).await);
    }
    let tls_reports = store.tls_reports(since).await?;
    Ok(Summary {
        generated_at: now,
        days,
        since,
        counters,
        domains,
        tls_reports,
    })
}

/// One domain's share of a [`crate::store::DmarcAggregate`].
#[derive(Default)]
struct DomainData {
    groups: Vec<DmarcGroup>,
    reports: Vec<DmarcReportFacts>,
    source_orgs: Vec<SourceOrg>,
    source_dkim: Vec<SourceDkim>,
}

async fn domain_summary(
    classifier: &Classifier,
    domain: String,
    signed_by_herald: bool,
    mut data: DomainData,
    cfg: &Config,
) -> DomainSummary {
    let unverified = unverified(&data);
    let mut reports = BTreeSet::new();
    let mut reporters = BTreeSet::new();
    let mut daily: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut per_ip: HashMap<IpAddr, Source> = HashMap::new();
    let mut dkim_seen: HashMap<IpAddr, Vec<(String, String, String)>> = HashMap::new();
    let (mut first, mut last, mut latest_policy) = (i64::MAX, 0i64, (0i64, String::new()));
    // Reports in the order they were stored: the latest period's policy wins, a tie going to
    // the report stored last.
    data.reports.sort_by_key(|r| (r.begin, r.stored));
    for r in data.reports.iter().filter(|r| r.verified) {
        reports.insert((r.org.as_str(), r.report_id.as_str()));
        reporters.insert(r.org.clone());
        first = first.min(r.begin);
        last = last.max(r.end);
        if r.end >= latest_policy.0 {
            latest_policy = (r.end, r.policy.clone());
        }
    }
    for g in data.groups.iter().filter(|g| g.verified) {
        let passing = if g.passes() { g.count } else { 0 };
        let day = daily.entry(utc_date(g.day)).or_default();
        day.0 = day.0.saturating_add(g.count);
        day.1 = day.1.saturating_add(passing);
        let s = per_ip.entry(g.source_ip).or_insert_with(|| Source {
            ip: g.source_ip,
            ptr: None,
            class: SourceClass::Unknown,
            why: String::new(),
            messages: 0,
            pass: 0,
            dkim_aligned: 0,
            spf_aligned: 0,
            quarantined: 0,
            rejected: 0,
            reporters: Vec::new(),
        });
        s.messages = s.messages.saturating_add(g.count);
        s.pass = s.pass.saturating_add(passing);
        if g.dkim_aligned {
            s.dkim_aligned = s.dkim_aligned.saturating_add(g.count);
        }
        if g.spf_aligned {
            s.spf_aligned = s.spf_aligned.saturating_add(g.count);
        }
        match g.disposition.as_str() {
            "quarantine" => s.quarantined = s.quarantined.saturating_add(g.count),
            "reject" => s.rejected = s.rejected.saturating_add(g.count),
            _ => {}
        }
    }
    // Reporters and signatures in the order they first appeared.
    data.source_orgs.sort_by_key(|o| o.first);
    for o in data.source_orgs {
        if let Some(s) = per_ip.get_mut(&o.source_ip) {
            s.reporters.push(o.org);
        }
    }
    data.source_dkim.sort_by_key(|k| k.first);
    for k in data.source_dkim {
        dkim_seen.entry(k.source_ip).or_default().push(k.signature);
    }
    let mut sources: Vec<Source> = per_ip.into_values().collect();
    sources.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.ip.cmp(&b.ip)));
    // DNS look-ups run concurrently per source; a slow resolver costs one timeout, not many.
    let looked_up = sources.iter().take(MAX_CLASSIFIED).map(|s| {
        let seen = dkim_seen.get(&s.ip).cloned().unwrap_or_default();
        let (ip, domain) = (s.ip, domain.clone());
        async move {
            let (class, why) = classifier.classify(&domain, ip, &seen).await;
            let ptr = classifier.ptr(ip).await;
            (class, why, ptr)
        }
    });
    let results = join_all(looked_up).await;
    for (s, (class, why, ptr)) in sources.iter_mut().zip(results) {
        s.class = class;
        s.why = why;
        s.ptr = ptr;
    }
    for s in sources.iter_mut().skip(MAX_CLASSIFIED) {
        s.why = format!("not looked up (only the {MAX_CLASSIFIED} largest sources are)");
    }
    let messages: u64 = sources.iter().map(|s| s.messages).sum();
    let pass: u64 = sources.iter().map(|s| s.pass).sum();
    let days_covered = if last > first {
        (last - first + 86_399) / 86_400
    } else {
        0
    };
    let policy = latest_policy.1;
    let rua = crate::dns::records::dmarc_rua_for(cfg);
    let mut verdict = verdict(
        &domain,
        &policy,
        messages,
        pass,
        days_covered,
        &sources,
        rua,
    );
    if unverified.reports > 0 {
        verdict.text.push_str(&format!(
            " ({} unverified report{} claiming {} messages, from {}, not counted: their mail \
             is not authenticated for the organization they name)",
            unverified.reports,
            if unverified.reports == 1 { "" } else { "s" },
            unverified.messages,
            unverified.reporters.join(", ")
        ));
    }
    DomainSummary {
        domain,
        signed_by_herald,
        policy,
        reports: reports.len(),
        reporters: reporters.into_iter().collect(),
        messages,
        pass,
        pass_rate: percent(pass, messages),
        days_covered,
        daily: daily
            .into_iter()
            .map(|(date, (messages, pass))| Day {
                date,
                messages,
                pass,
            })
            .collect(),
        sources,
        verdict,
        unverified,
    }
}

/// Counts the unverified reports and the messages they claim.
fn unverified(data: &DomainData) -> Unverified {
    let mut reports = BTreeSet::new();
    let mut reporters = BTreeSet::new();
    for r in data.reports.iter().filter(|r| !r.verified) {
        reports.insert((r.org.as_str(), r.report_id.as_str()));
        reporters.insert(r.org.clone());
    }
    let messages = data
        .groups
        .iter()
        .filter(|g| !g.verified)
        .fold(0u64, |sum, g| sum.saturating_add(g.count));
    Unverified {
        reports: reports.len(),
        messages,
        reporters: reporters.into_iter().collect(),
    }
}

/// Awaits every future, concurrently, keeping their order.
async fn join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(futs.len());
    let mut pending: Vec<_> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}

/// The next step for a domain, from its numbers.
fn verdict(
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

/// `YYYY-MM-DD` of a unix time, in UTC.
pub(crate) fn utc_date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
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
