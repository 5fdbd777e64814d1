//! The embedded report store: one SQLite file in `data_dir` (WAL journal, `synchronous=FULL`,
//! so a committed transaction survives a crash or power loss), on its own thread
//! ([`SqliteThread`]): report traffic is a few mails a day per receiver, far below what one
//! writer handles, and no query runs on a tokio worker.

use std::path::Path;

use mail_auth::report::{ActionDisposition, Disposition, DmarcResult};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    AcceptOutcome, BoxFuture, DmarcAggregate, DmarcReport, ParsedItem, ReceivedMail, RejectedPart,
    ReportStore, SqliteThread, StoreCounters, StoreError, TlsReportSummary,
};

/// Schema version 1. Rows keep the report's metadata by reference; the raw mail is kept so a
/// report can be re-parsed by a later version.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS mails (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    origin TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    id INTEGER PRIMARY KEY,
    mail_id INTEGER NOT NULL REFERENCES mails(id),
    org TEXT NOT NULL,
    report_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    begin_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    policy TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    UNIQUE (org, report_id)
);
CREATE INDEX IF NOT EXISTS dmarc_reports_domain ON dmarc_reports(domain, end_at);
CREATE TABLE IF NOT EXISTS dmarc_rows (
    id INTEGER PRIMARY KEY,
    report INTEGER NOT NULL REFERENCES dmarc_reports(id),
    source_ip TEXT NOT NULL,
    count INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    dkim_aligned INTEGER NOT NULL,
    spf_aligned INTEGER NOT NULL,
    header_from TEXT NOT NULL,
    dkim_json TEXT NOT NULL,
    spf_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dmarc_rows_report ON dmarc_rows(report);
CREATE INDEX IF NOT EXISTS mails_origin ON mails(origin, received_at);
CREATE INDEX IF NOT EXISTS dmarc_reports_mail ON dmarc_reports(mail_id);
CREATE TABLE IF NOT EXISTS tls_reports (
    id INTEGER PRIMARY KEY,
    mail_id INTEGER NOT NULL REFERENCES mails(id),
    org TEXT NOT NULL,
    report_id TEXT NOT NULL,
    begin_at INTEGER NOT NULL,
    end_at INTEGER NOT NULL,
    json TEXT NOT NULL,
    UNIQUE (org, report_id)
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    mail_id INTEGER NOT NULL REFERENCES mails(id),
    part TEXT NOT NULL,
    error TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#;

/// The SQLite report store.
pub(crate) struct SqliteStore {
    db: SqliteThread,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, with WAL and full sync, on its own
    /// thread.
    pub(crate) async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = SqliteThread::open(path, "reports", |c| {
            c.execute_batch(SCHEMA)?;
            add_verified_column(c)?;
            super::sqlite_totals::create(c)
        })
        .await?;
        Ok(SqliteStore { db })
    }
}

/// Databases made before reports were verified get the `verified` column; their reports
/// count as unverified (nobody checked who sent them).
fn add_verified_column(c: &Connection) -> rusqlite::Result<()> {
    let has: bool = c
        .prepare("SELECT 1 FROM pragma_table_info('dmarc_reports') WHERE name = 'verified'")?
        .exists([])?;
    if !has {
        c.execute_batch(
            "ALTER TABLE dmarc_reports ADD COLUMN verified INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

fn bump(tx: &Transaction<'_>, name: &str, by: usize) -> rusqlite::Result<()> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + ?2",
        params![name, by as i64],
    )?;
    Ok(())
}

/// The policy a receiver saw, in DMARC record words.
pub(crate) fn disposition_word(d: Disposition) -> &'static str {
    match d {
        Disposition::None | Disposition::Unspecified => "none",
        Disposition::Quarantine => "quarantine",
        Disposition::Reject => "reject",
    }
}

pub(super) fn action_word(d: ActionDisposition) -> &'static str {
    match d {
        ActionDisposition::None | ActionDisposition::Pass | ActionDisposition::Unspecified => {
            "none"
        }
        ActionDisposition::Quarantine => "quarantine",
        ActionDisposition::Reject => "reject",
    }
}

pub(super) fn lower_debug(v: impl std::fmt::Debug) -> String {
    format!("{v:?}").to_ascii_lowercase()
}

/// A report row's DKIM results (domain, selector, result) and SPF results (domain, result),
/// as both stores keep them.
pub(super) type AuthResults = (Vec<(String, String, String)>, Vec<(String, String)>);

/// The DKIM and SPF results of one report row, results in lower case.
pub(super) fn auth_results(rec: &mail_auth::report::Record) -> AuthResults {
    let dkim = rec
        .auth_results
        .dkim
        .iter()
        .map(|d| (d.domain.clone(), d.selector.clone(), lower_debug(d.result)))
        .collect();
    let spf = rec
        .auth_results
        .spf
        .iter()
        .map(|s| (s.domain.clone(), lower_debug(s.result)))
        .collect();
    (dkim, spf)
}

/// Inserts a DMARC report and its rows; `false` when it was already stored.
fn insert_dmarc(
    tx: &Transaction<'_>,
    mail_id: i64,
    at: i64,
    r: &DmarcReport,
    verified: bool,
) -> Result<bool, StoreError> {
    let m = &r.head.report_metadata;
    let p = &r.head.policy_published;
    if verified {
        // An unverified report holding this id (a forger guessing a receiver's next id) gives
        // way to the verified one.
        let forged: Option<i64> = tx
            .query_row(
                "SELECT id FROM dmarc_reports WHERE org = ?1 AND report_id = ?2 AND verified = 0",
                params![m.org_name, m.report_id],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = forged {
            super::sqlite_totals::remove_unverified(tx, id)?;
            tx.execute("DELETE FROM dmarc_rows WHERE report = ?1", params![id])?;
            tx.execute("DELETE FROM dmarc_reports WHERE id = ?1", params![id])?;
        }
    }
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO dmarc_reports
           (mail_id, org, report_id, domain, begin_at, end_at, policy, received_at, verified)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            mail_id,
            m.org_name,
            m.report_id,
            p.domain.trim_end_matches('.').to_ascii_lowercase(),
            m.date_range.begin.min(i64::MAX as u64) as i64,
            m.date_range.end.min(i64::MAX as u64) as i64,
            disposition_word(p.p),
            at,
            verified
        ],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let report = tx.last_insert_rowid();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO dmarc_rows (report, source_ip, count, disposition, dkim_aligned,
           spf_aligned, header_from, dkim_json, spf_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    // One record at a time, read from the report as it came (never all of them in memory).
    for rec in r.source.records() {
        let Some(ip) = rec.row.source_ip else {
            continue;
        };
        let (dkim, spf) = auth_results(&rec);
        let pe = &rec.row.policy_evaluated;
        stmt.execute(params![
            report,
            ip.to_string(),
            rec.row.count as i64,
            action_word(pe.disposition),
            pe.dkim == DmarcResult::Pass,
            pe.spf == DmarcResult::Pass,
            rec.identifiers.header_from.to_ascii_lowercase(),
            serde_json::to_string(&dkim)?,
            serde_json::to_string(&spf)?,
        ])?;
    }
    super::sqlite_totals::add_report(tx, report, verified)?;
    Ok(true)
}

impl ReportStore for SqliteStore {
    fn accept<'a>(
        &'a self,
        mail: &'a ReceivedMail,
        items: &'a [ParsedItem],
    ) -> BoxFuture<'a, Result<AcceptOutcome, StoreError>> {
        let (mail, items) = (mail.clone(), items.to_vec());
        Box::pin(self.db.call(move |conn| accept(conn, &mail, &items)))
    }

    fn dmarc_aggregate<'a>(
        &'a self,
        domain: Option<&'a str>,
        since: i64,
    ) -> BoxFuture<'a, Result<DmarcAggregate, StoreError>> {
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        Box::pin(
            self.db
                .call(move |conn| super::sqlite_aggregate::dmarc_aggregate(conn, domain, since)),
        )
    }

    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedPart>, StoreError>> {
        Box::pin(self.db.call(move |conn| rejected(conn, limit)))
    }

    fn tls_reports(&self, since: i64) -> BoxFuture<'_, Result<Vec<TlsReportSummary>, StoreError>> {
        Box::pin(self.db.call(move |conn| tls_reports(conn, since)))
    }

    fn last_dmarc_report<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        Box::pin(self.db.call(move |conn| {
            let at = conn
                .query_row(
                    "SELECT MAX(received_at) FROM dmarc_reports WHERE domain = ?1",
                    params![domain],
                    |row| row.get::<_, Option<i64>>(0),
                )
                .optional()?
                .flatten();
            Ok(at)
        }))
    }

    fn counters(&self) -> BoxFuture<'_, Result<StoreCounters, StoreError>> {
        Box::pin(self.db.call(counters))
    }

    fn rows_from<'a>(
        &'a self,
        origin: &'a str,
        since: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let origin = origin.to_string();
        Box::pin(self.db.call(move |conn| {
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM mails m
                   JOIN dmarc_reports r ON r.mail_id = m.id
                   JOIN dmarc_rows w ON w.report = r.id
                 WHERE m.origin = ?1 AND m.received_at >= ?2",
                params![origin, since],
                |row| row.get(0),
            )?;
            Ok(n.max(0) as u64)
        }))
    }
}

/// [`ReportStore::accept`] on the store's thread: one transaction.
fn accept(
    conn: &mut Connection,
    mail: &ReceivedMail,
    items: &[ParsedItem],
) -> Result<AcceptOutcome, StoreError> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO mails (received_at, origin, mail_from, rcpt, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            mail.received_at,
            mail.origin,
            mail.mail_from,
            mail.rcpt,
            mail.raw
        ],
    )?;
    let mail_id = tx.last_insert_rowid();
    let mut out = AcceptOutcome::default();
    let (mut dmarc, mut tls) = (0, 0);
    for item in items {
        match item {
            ParsedItem::Dmarc(r) => {
                if insert_dmarc(&tx, mail_id, mail.received_at, r, mail.vouches_for(r))? {
                    out.stored += 1;
                    dmarc += 1;
                } else {
                    out.duplicates += 1;
                }
            }
            ParsedItem::Tls(r) => {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO tls_reports
                       (mail_id, org, report_id, begin_at, end_at, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        mail_id,
                        r.organization_name.clone().unwrap_or_default(),
                        r.report_id,
                        r.date_range.start_datetime.to_timestamp(),
                        r.date_range.end_datetime.to_timestamp(),
                        serde_json::to_string(r)?,
                    ],
                )?;
                if n == 1 {
                    out.stored += 1;
                    tls += 1;
                } else {
                    out.duplicates += 1;
                }
            }
            ParsedItem::Rejected { part, error } => {
                tx.execute(
                    "INSERT INTO rejected (mail_id, part, error) VALUES (?1, ?2, ?3)",
                    params![mail_id, part, error],
                )?;
                out.rejected += 1;
            }
        }
    }
    bump(&tx, "mails", 1)?;
    bump(&tx, "dmarc_reports", dmarc)?;
    bump(&tx, "tls_reports", tls)?;
    bump(&tx, "duplicates", out.duplicates)?;
    bump(&tx, "rejected", out.rejected)?;
    tx.commit().map_err(StoreError::Commit)?;
    Ok(out)
}

fn rejected(conn: &mut Connection, limit: usize) -> Result<Vec<RejectedPart>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT j.mail_id, m.received_at, m.origin, j.part, j.error
         FROM rejected j JOIN mails m ON j.mail_id = m.id
         ORDER BY j.id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |row| {
        Ok(RejectedPart {
            mail_id: row.get(0)?,
            received_at: row.get(1)?,
            origin: row.get(2)?,
            part: row.get(3)?,
            error: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn tls_reports(conn: &mut Connection, since: i64) -> Result<Vec<TlsReportSummary>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT json FROM tls_reports WHERE end_at >= ?1 ORDER BY begin_at")?;
    let rows = stmt.query_map(params![since], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for json in rows {
        out.extend(TlsReportSummary::of_json(&json?));
    }
    Ok(out)
}

fn counters(conn: &mut Connection) -> Result<StoreCounters, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name, value FROM counters")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut c = StoreCounters::default();
    for r in rows {
        let (name, v) = r?;
        let v = v.max(0) as u64;
        match name.as_str() {
            "mails" => c.mails = v,
            "dmarc_reports" => c.dmarc_reports = v,
            "tls_reports" => c.tls_reports = v,
            "duplicates" => c.duplicates = v,
            "rejected" => c.rejected = v,
            _ => {}
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::report::{PolicyPublished, Record, Report};

    fn report(id: &str) -> Report {
        let mut r = Report::new()
            .with_org_name("acme.test")
            .with_report_id(id)
            .with_date_range_begin(1_700_000_000)
            .with_date_range_end(1_700_086_399)
            .with_policy_published(PolicyPublished {
                domain: "Example.COM".into(),
                p: Disposition::Quarantine,
                ..Default::default()
            });
        r.add_record(
            Record::new()
                .with_source_ip("192.0.2.1".parse().unwrap())
                .with_count(7)
                .with_dmarc_dkim_result(DmarcResult::Pass)
                .with_dmarc_spf_result(DmarcResult::Fail)
                .with_header_from("example.com"),
        );
        r
    }

    fn mail() -> ReceivedMail {
        ReceivedMail {
            received_at: 1_700_100_000,
            origin: "192.0.2.9".into(),
            mail_from: String::new(),
            rcpt: "dmarc@reports.test".into(),
            raw: b"Subject: x\r\n\r\nx\r\n".to_vec(),
            verified: vec![("acme.test".into(), "r1".into())],
        }
    }

    #[tokio::test]
    async fn stores_rows_counts_duplicates_once_and_keeps_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.sqlite"))
            .await
            .unwrap();
        let items = vec![
            ParsedItem::Dmarc(Box::new(DmarcReport::in_memory(report("r1")))),
            ParsedItem::Rejected {
                part: "bad.zip".into(),
                error: "not a zip".into(),
            },
        ];
        let o = store.accept(&mail(), &items).await.unwrap();
        assert_eq!((o.stored, o.duplicates, o.rejected), (1, 0, 1));
        let o = store.accept(&mail(), &items[..1]).await.unwrap();
        assert_eq!((o.stored, o.duplicates), (0, 1));
        let agg = store.dmarc_aggregate(Some("example.com"), 0).await.unwrap();
        assert_eq!(agg.groups.len(), 1);
        assert_eq!(agg.groups[0].count, 7);
        assert!(agg.groups[0].passes());
        assert_eq!(agg.reports.len(), 1);
        assert_eq!(agg.reports[0].policy, "quarantine");
        let c = store.counters().await.unwrap();
        assert_eq!(
            (c.mails, c.dmarc_reports, c.duplicates, c.rejected),
            (2, 1, 1, 1)
        );
        assert_eq!(store.rejected(10).await.unwrap()[0].error, "not a zip");
        assert_eq!(
            store.last_dmarc_report("example.com").await.unwrap(),
            Some(1_700_100_000)
        );
    }
}
