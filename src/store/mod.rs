//! The report store: DMARC aggregate and TLS-RPT reports received by the feedback listener (or
//! imported), with the raw mail they came in, kept for `herald dmarc` and the `/dmarc` page.
//!
//! Everything goes through [`ReportStore`]: [`sqlite::SqliteStore`] is the embedded one in
//! `data_dir`; with `[cluster]`, [`pg::PgStore`] keeps the same tables in the cluster's
//! PostgreSQL so every node shows every node's reports.
//! [`ReportStore::accept`] is the durability point: the raw mail and every report parsed from
//! it are committed (fsynced) in one transaction before the listener answers `250`.
//!
//! # Adding a store (the pattern every table of herald follows)
//! Storage is async at its boundary and never blocks a tokio worker:
//! 1. **The interface**: a trait whose methods return [`BoxFuture`] (the one boxed-future
//!    alias of herald's storage, so the trait works as `Arc<dyn …>`), errors as
//!    [`StoreError`] (add a variant when a caller must tell a case apart). Like
//!    [`ReportStore`] here.
//! 2. **SQLite (single node)**: one file, one [`SqliteThread`]:
//!    `SqliteThread::open(&path, "suppressions", |c| c.execute_batch(SCHEMA)).await?` opens it
//!    on a thread of its own (WAL, `synchronous=FULL`); each method is
//!    `self.db.call(move |conn| { … Ok(value) }).await`, the closure owning what it needs
//!    (clone the arguments in). See [`sqlite::SqliteStore`].
//! 3. **PostgreSQL (`[cluster]`)**: take the node's [`crate::cluster::Db`] (one pool per
//!    node, from [`crate::cluster::open`], which also applies the migrations); the tables come
//!    from a numbered migration in `src/cluster/migrations/`; each method is plain async
//!    tokio-postgres: `let client = self.db.client().await?;` then
//!    `client.query(…).await.map_err(DbError::doing("reading suppressions"))?`
//!    ([`crate::cluster::DbError`]). See [`pg::PgStore`].
//! 4. **Choosing**: an `open` like [`open`] here: PostgreSQL with `[cluster]`, else SQLite in
//!    `data_dir`.

mod aggregate;
mod error;
pub(crate) mod pg;
mod pg_aggregate;
mod pg_totals;
pub(crate) mod sqlite;
mod sqlite_aggregate;
mod sqlite_thread;
mod sqlite_totals;

pub(crate) use self::aggregate::{
    DmarcAggregate, DmarcDay, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg,
};
pub(crate) use self::error::StoreError;
pub(crate) use self::sqlite_thread::{SqliteThread, open_connection};
/// The boxed future every storage trait method returns (object-safe async methods).
pub(crate) use futures_util::future::BoxFuture;

use std::path::PathBuf;
use std::sync::Arc;

use mail_auth::report::tlsrpt::TlsReport;
use mail_auth::report::{Record, Report};
use serde::Serialize;

use crate::cluster::Db;
use crate::config::Config;

/// One mail as it arrived (or as it was imported), before parsing.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Unix seconds when it arrived.
    pub received_at: i64,
    /// Where it came from: the client IP, or `import:<file>`.
    pub origin: String,
    /// The envelope sender (may be empty: reports are often sent with a null sender).
    pub mail_from: String,
    /// The report address it was sent to (`dmarc@…`, `tlsrpt@…`, or `import`).
    pub rcpt: String,
    /// The message as received.
    pub raw: Vec<u8>,
    /// The DMARC reports of this mail, as `(org_name, report_id)`, that may move a verdict:
    /// their mail is authenticated for the reporting organization's domain
    /// ([`crate::feedback::verify`]), or the operator imported them. The others are stored
    /// as unverified.
    pub verified: Vec<(String, String)>,
}

impl ReceivedMail {
    /// Whether the DMARC report `r` of this mail is verified (see [`ReceivedMail::verified`]).
    pub fn vouches_for(&self, r: &DmarcReport) -> bool {
        let m = &r.head.report_metadata;
        self.verified
            .iter()
            .any(|(org, id)| *org == m.org_name && *id == m.report_id)
    }
}

/// A DMARC aggregate report as parsed: its metadata and policy, and where its records are read
/// from, one at a time, when it is stored (a report's records never all sit in memory).
#[derive(Debug, Clone)]
pub struct DmarcReport {
    /// The report without its records (`record` is empty).
    pub head: Report,
    /// How many `<record>` elements it has.
    pub records: usize,
    /// Its records.
    pub source: Arc<dyn RecordSource>,
}

#[cfg(test)]
impl DmarcReport {
    /// A report already in memory, as the tests build them.
    pub(crate) fn in_memory(mut report: Report) -> DmarcReport {
        let records = std::mem::take(&mut report.record);
        DmarcReport {
            head: report,
            records: records.len(),
            source: Arc::new(InMemory(records)),
        }
    }
}

/// Where a stored report's records come from: read again, one at a time, by the store.
pub trait RecordSource: Send + Sync + std::fmt::Debug {
    /// The records, in document order.
    fn records(&self) -> Box<dyn Iterator<Item = Record> + Send + '_>;
}

/// Records already parsed.
#[cfg(test)]
#[derive(Debug)]
struct InMemory(Vec<Record>);

#[cfg(test)]
impl RecordSource for InMemory {
    fn records(&self) -> Box<dyn Iterator<Item = Record> + Send + '_> {
        Box::new(self.0.iter().cloned())
    }
}

/// What parsing found in one mail: reports, or a part that could not be read.
#[derive(Debug, Clone)]
pub enum ParsedItem {
    /// A DMARC aggregate report (RFC 7489 Appendix C / RFC 9990).
    Dmarc(Box<DmarcReport>),
    /// A TLS-RPT report (RFC 8460).
    Tls(Box<TlsReport>),
    /// A part that is not a readable report, with the reason.
    Rejected {
        /// Which part: an attachment name or `(message)`.
        part: String,
        /// Why it was refused, in words.
        error: String,
    },
}

/// What [`ReportStore::accept`] did with one mail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AcceptOutcome {
    /// Reports stored for the first time.
    pub stored: usize,
    /// Reports already known (same organization and report id): counted once.
    pub duplicates: usize,
    /// Parts kept as rejected, with their error.
    pub rejected: usize,
}

/// A report part that could not be read, kept for inspection.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedPart {
    /// The stored mail it belongs to.
    pub mail_id: i64,
    /// Unix seconds when the mail arrived.
    pub received_at: i64,
    /// Where it came from.
    pub origin: String,
    /// Which part.
    pub part: String,
    /// Why it was refused.
    pub error: String,
}

/// A TLS-RPT report received, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct TlsReportSummary {
    /// Reporting organization.
    pub org: String,
    /// The report's id.
    pub report_id: String,
    /// Start of the period (unix seconds).
    pub begin: i64,
    /// End of the period (unix seconds).
    pub end: i64,
    /// Policy domains reported on.
    pub domains: Vec<String>,
    /// Sessions that negotiated TLS successfully.
    pub successful: u64,
    /// Sessions that failed.
    pub failed: u64,
}

impl TlsReportSummary {
    /// The summary of a stored report (its JSON as received); `None` when it does not parse.
    pub fn of_json(json: &str) -> Option<TlsReportSummary> {
        let r = serde_json::from_str::<TlsReport>(json).ok()?;
        let mut s = TlsReportSummary {
            org: r.organization_name.clone().unwrap_or_default(),
            report_id: r.report_id.clone(),
            begin: r.date_range.start_datetime.to_timestamp(),
            end: r.date_range.end_datetime.to_timestamp(),
            domains: Vec::new(),
            successful: 0,
            failed: 0,
        };
        for p in &r.policies {
            s.domains.push(p.policy.policy_domain.clone());
            s.successful += p.summary.total_success as u64;
            s.failed += p.summary.total_failure as u64;
        }
        Some(s)
    }
}

/// Counters since the store was created.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoreCounters {
    /// Mails accepted (listener and import).
    pub mails: u64,
    /// DMARC aggregate reports stored.
    pub dmarc_reports: u64,
    /// TLS-RPT reports stored.
    pub tls_reports: u64,
    /// Reports received again (counted once).
    pub duplicates: u64,
    /// Parts rejected.
    pub rejected: u64,
}

/// Where reports live. Implementations must make [`ReportStore::accept`] durable before its
/// future completes: the listener answers `250` right after.
pub trait ReportStore: Send + Sync {
    /// Stores one mail and what was parsed from it, atomically and durably.
    fn accept<'a>(
        &'a self,
        mail: &'a ReceivedMail,
        items: &'a [ParsedItem],
    ) -> BoxFuture<'a, Result<AcceptOutcome, StoreError>>;
    /// The DMARC rows of the reports whose period ends at or after `since` (unix seconds),
    /// for one domain or all, aggregated ([`DmarcAggregate`]): what the summary reads, from
    /// totals kept when each report is stored, in time and memory bounded by the (domain,
    /// source, day, result) groups and the reports, not by the rows.
    fn dmarc_aggregate<'a>(
        &'a self,
        domain: Option<&'a str>,
        since: i64,
    ) -> BoxFuture<'a, Result<DmarcAggregate, StoreError>>;
    /// The most recently received rejected parts, newest first.
    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedPart>, StoreError>>;
    /// TLS-RPT reports whose period ends at or after `since`.
    fn tls_reports(&self, since: i64) -> BoxFuture<'_, Result<Vec<TlsReportSummary>, StoreError>>;
    /// When a DMARC report for `domain` last arrived (unix seconds).
    fn last_dmarc_report<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>>;
    /// Counters since the store was created.
    fn counters(&self) -> BoxFuture<'_, Result<StoreCounters, StoreError>>;
    /// DMARC rows stored from mails that came from `origin` (a client address) since `since`
    /// (unix seconds), for the per-sender daily bound.
    fn rows_from<'a>(
        &'a self,
        origin: &'a str,
        since: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

/// The report database of this configuration: `[feedback] database`, by default
/// `<data_dir>/reports.sqlite`.
pub(crate) fn database_path(cfg: &Config) -> PathBuf {
    cfg.feedback
        .database
        .clone()
        .unwrap_or_else(|| cfg.server.data_dir.join("reports.sqlite"))
}

/// Opens the configured store: the cluster's PostgreSQL with `[cluster]` (connecting and
/// applying the migrations, as a node does), else SQLite in `data_dir`. For the commands that
/// run without a node.
pub(crate) async fn open(cfg: &Config) -> anyhow::Result<Arc<dyn ReportStore>> {
    let db = match &cfg.cluster {
        Some(cluster) => Some(crate::cluster::open(cluster).await?),
        None => None,
    };
    open_on(cfg, db).await
}

/// The store on the node's own cluster database `db` (one pool per node), or, without
/// `[cluster]` (`db` is `None`), SQLite in `data_dir`.
pub(crate) async fn open_on(cfg: &Config, db: Option<Db>) -> anyhow::Result<Arc<dyn ReportStore>> {
    if let Some(db) = db {
        return Ok(Arc::new(pg::PgStore::new(db)));
    }
    Ok(Arc::new(
        sqlite::SqliteStore::open(&database_path(cfg)).await?,
    ))
}

/// Every DMARC report among `items` as `(org_name, report_id)`: for reports the operator
/// imports, which they vouch for ([`ReceivedMail::verified`]).
pub(crate) fn imported(items: &[ParsedItem]) -> Vec<(String, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            ParsedItem::Dmarc(r) => Some((
                r.head.report_metadata.org_name.clone(),
                r.head.report_metadata.report_id.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Now, in unix seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
