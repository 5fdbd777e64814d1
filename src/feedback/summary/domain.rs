//! One domain's summary from its share of the aggregate: messages, daily pass rate, each
//! source with its class (DNS look-ups, bounded), the unverified reports apart, and the
//! verdict ([`super::verdict`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::verdict::verdict;
use super::{Day, DomainSummary, Source, Unverified, percent, utc_date};
use crate::config::Config;
use crate::feedback::classify::{Classifier, SourceClass};
use crate::store::{DmarcDay, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg};

/// Sources looked up in DNS at most per domain (the rest are shown as unknown, unresolved).
const MAX_CLASSIFIED: usize = 200;

/// One domain's share of a [`crate::store::DmarcAggregate`].
#[derive(Default)]
pub(super) struct DomainData {
    pub(super) groups: Vec<DmarcGroup>,
    pub(super) days: Vec<DmarcDay>,
    pub(super) reports: Vec<DmarcReportFacts>,
    pub(super) source_orgs: Vec<SourceOrg>,
    pub(super) source_dkim: Vec<SourceDkim>,
}

/// The summary of one domain.
pub(super) async fn domain_summary(
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
    for d in &data.days {
        let day = daily.entry(utc_date(d.day)).or_default();
        day.0 = day.0.saturating_add(d.messages);
        day.1 = day.1.saturating_add(d.pass);
    }
    for g in data.groups.iter().filter(|g| g.verified) {
        let passing = if g.passes() { g.count } else { 0 };
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
