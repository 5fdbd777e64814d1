//! The DMARC rows of a period, aggregated ([`super::ReportStore::dmarc_aggregate`]): what
//! `herald dmarc summary` and `/dmarc` need, read from totals the store keeps when it stores a
//! report. Time follows the totals of the period (days x sources), memory the days, the
//! (source, result) groups and the reports; never the stored rows (a year of a large domain's
//! reports is millions of rows).

use std::net::IpAddr;

/// Everything the summary reads, for one domain or all.
#[derive(Debug, Clone, Default)]
pub struct DmarcAggregate {
    /// Message counts per (domain, source, result); one group per domain for the unverified.
    pub groups: Vec<DmarcGroup>,
    /// Messages per (domain, UTC day) of the verified reports.
    pub days: Vec<DmarcDay>,
    /// One entry per stored report that has at least one row.
    pub reports: Vec<DmarcReportFacts>,
    /// Where each organization first reported each source (verified reports only).
    pub source_orgs: Vec<SourceOrg>,
    /// Where each DKIM signature was first seen per source (verified reports only).
    pub source_dkim: Vec<SourceDkim>,
}

/// The messages of one (domain, source, result) group of verified reports over the period. The
/// unverified reports of a domain, which only ever show their total, are one group (source
/// `0.0.0.0`, no result), however many rows a forger sends.
#[derive(Debug, Clone)]
pub struct DmarcGroup {
    /// The policy domain.
    pub domain: String,
    /// Whether the reports' mail was authenticated for their organization.
    pub verified: bool,
    /// The sending IP.
    pub source_ip: IpAddr,
    /// DMARC's DKIM verdict.
    pub dkim_aligned: bool,
    /// DMARC's SPF verdict.
    pub spf_aligned: bool,
    /// `quarantine`, `reject`, or empty for anything else.
    pub disposition: String,
    /// Messages, summed.
    pub count: u64,
}

impl DmarcGroup {
    /// True when the messages passed DMARC (an aligned DKIM or SPF pass).
    pub fn passes(&self) -> bool {
        self.dkim_aligned || self.spf_aligned
    }
}

/// The verified messages of one domain on one UTC day (the day its reports' periods begin).
#[derive(Debug, Clone)]
pub struct DmarcDay {
    /// The policy domain.
    pub domain: String,
    /// Start of the day (unix seconds, UTC midnight).
    pub day: i64,
    /// Messages.
    pub messages: u64,
    /// Messages that passed DMARC.
    pub pass: u64,
}

/// One report's own facts.
#[derive(Debug, Clone)]
pub struct DmarcReportFacts {
    /// The policy domain.
    pub domain: String,
    /// Whether its mail was authenticated for its organization.
    pub verified: bool,
    /// Reporting organization.
    pub org: String,
    /// The report's id at that organization.
    pub report_id: String,
    /// Start of its period (unix seconds).
    pub begin: i64,
    /// End of its period (unix seconds).
    pub end: i64,
    /// Published `p=` as the receiver saw it.
    pub policy: String,
    /// Its id in the store: with `begin`, the order reports were stored in (a tie between
    /// two reports of the same period goes to the one stored last).
    pub stored: i64,
}

/// An organization that reported `source_ip` in the period, with the first row (by report
/// start, then row id) in which it ever did: the order reporters are listed in.
#[derive(Debug, Clone)]
pub struct SourceOrg {
    /// The policy domain.
    pub domain: String,
    /// The sending IP.
    pub source_ip: IpAddr,
    /// Reporting organization.
    pub org: String,
    /// `(report start, row id)` of its first row: the order reporters are listed in.
    pub first: (i64, i64),
}

/// A DKIM signature seen for `source_ip` in the period, with the first row (by report start,
/// row id, position) in which it ever was: the order signatures are listed in.
#[derive(Debug, Clone)]
pub struct SourceDkim {
    /// The policy domain.
    pub domain: String,
    /// The sending IP.
    pub source_ip: IpAddr,
    /// `(domain, selector, result)`.
    pub signature: (String, String, String),
    /// `(report start, row id, position in the row)`: the order signatures are listed in.
    pub first: (i64, i64, i64),
}
