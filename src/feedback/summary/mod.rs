//! What the reports say, per domain: messages, pass share, each source with its class, the
//! daily pass rate, and a verdict — the policy now and the next step, with the numbers behind
//! it. `herald dmarc summary`, `herald dmarc sources` and `/dmarc` all show this value.
//!
//! [`build`] reads the store's aggregate and splits it per domain; [`domain`] turns one
//! domain's share into its numbers and sources; [`verdict`] judges them.

mod domain;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;

use super::classify::{Classifier, SourceClass};
use crate::config::Config;
use crate::store::{ReportStore, StoreCounters, TlsReportSummary};

use self::domain::{DomainData, domain_summary};
pub(crate) use self::verdict::Verdict;

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
    for d in aggregate.days {
        if let Some(data) = by_domain.get_mut(&d.domain) {
            data.days.push(d);
        }
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

/// `YYYY-MM-DD` of a unix time, in UTC.
pub(crate) fn utc_date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}
