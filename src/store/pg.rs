//! The report store of a cluster (`[cluster]`): the same tables as [`super::sqlite`] in the
//! cluster's PostgreSQL (`herald_report_mails`, `herald_dmarc_reports`, …), so `herald dmarc`
//! and the `/dmarc` page on any node show the reports every node received.
//!
//! Plain async tokio-postgres on the node's connection pool ([`Db`]): the pattern for a
//! PostgreSQL store (module documentation of [`super`]).

use mail_auth::report::{DmarcResult, Record};
use tokio_postgres::Transaction;

use super::sqlite::{action_word, auth_results, disposition_word};
use super::{
    AcceptOutcome, BoxFuture, DmarcAggregate, DmarcReport, ParsedItem, ReceivedMail, RejectedPart,
    ReportStore, StoreCounters, StoreError, TlsReportSummary,
};
use crate::cluster::{Db, DbError};

/// Records of one report read and sent to the database at a time.
const RECORDS_PER_CHUNK: usize = 500;

/// The PostgreSQL report store.
pub(crate) struct PgStore {
    db: Db,
}

impl PgStore {
    /// The store on the cluster's database (opened, migrations applied, by
    /// [`crate::cluster::open`]).
    pub(crate) fn new(db: Db) -> PgStore {
        PgStore { db }
    }

    async fn accept(
        &self,
        mail: &ReceivedMail,
        items: &[ParsedItem],
    ) -> Result<AcceptOutcome, StoreError> {
        let mut client = self.db.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(DbError::doing("storing a report"))?;
        let mail_id: i64 = tx
            .query_one(
                "INSERT INTO herald_report_mails \
                   (received_at, origin, mail_from, rcpt, raw, node) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &mail.received_at,
                    &mail.origin,
                    &mail.mail_from,
                    &mail.rcpt,
                    &mail.raw,
                    &self.db.node_id(),
                ],
            )
            .await
            .map_err(DbError::doing("storing a report"))?
            .get(0);
        let mut out = AcceptOutcome::default();
        let (mut dmarc, mut tls) = (0, 0);
        for item in items {
            match item {
                ParsedItem::Dmarc(r) => {
                    if insert_dmarc(&tx, mail_id, mail.received_at, r, mail.vouches_for(r)).await? {
                        out.stored += 1;
                        dmarc += 1;
                    } else {
                        out.duplicates += 1;
                    }
                }
                ParsedItem::Tls(r) => {
                    let n = tx
                        .execute(
                            "INSERT INTO herald_tls_reports \
                               (mail_id, org, report_id, begin_at, end_at, json) \
                             VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (org, report_id) DO NOTHING",
                            &[
                                &mail_id,
                                &r.organization_name.clone().unwrap_or_default(),
                                &r.report_id,
                                &r.date_range.start_datetime.to_timestamp(),
                                &r.date_range.end_datetime.to_timestamp(),
                                &serde_json::to_string(r)?,
                            ],
                        )
                        .await
                        .map_err(DbError::doing("storing a TLS report"))?;
                    if n == 1 {
                        out.stored += 1;
                        tls += 1;
                    } else {
                        out.duplicates += 1;
                    }
                }
                ParsedItem::Rejected { part, error } => {
                    tx.execute(
                        "INSERT INTO herald_report_rejected (mail_id, part, error) \
                         VALUES ($1, $2, $3)",
                        &[&mail_id, part, error],
                    )
                    .await
                    .map_err(DbError::doing("storing a rejected part"))?;
                    out.rejected += 1;
                }
            }
        }
        bump(&tx, "mails", 1).await?;
        bump(&tx, "dmarc_reports", dmarc).await?;
        bump(&tx, "tls_reports", tls).await?;
        bump(&tx, "duplicates", out.duplicates).await?;
        bump(&tx, "rejected", out.rejected).await?;
        tx.commit().await.map_err(DbError::doing(
            "cannot commit the report to the cluster database",
        ))?;
        Ok(out)
    }

    async fn rejected(&self, limit: usize) -> Result<Vec<RejectedPart>, StoreError> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                "SELECT j.mail_id, m.received_at, m.origin, j.part, j.error \
                 FROM herald_report_rejected j JOIN herald_report_mails m \
                   ON j.mail_id = m.id \
                 ORDER BY j.id DESC LIMIT $1",
                &[&(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(DbError::doing("reading rejected parts"))?;
        Ok(rows
            .iter()
            .map(|row| RejectedPart {
                mail_id: row.get(0),
                received_at: row.get(1),
                origin: row.get(2),
                part: row.get(3),
                error: row.get(4),
            })
            .collect())
    }

    async fn tls_reports(&self, since: i64) -> Result<Vec<TlsReportSummary>, StoreError> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                "SELECT json FROM herald_tls_reports WHERE end_at >= $1 ORDER BY begin_at",
                &[&since],
            )
            .await
            .map_err(DbError::doing("reading TLS reports"))?;
        Ok(rows
            .iter()
            .filter_map(|row| TlsReportSummary::of_json(row.get::<_, &str>(0)))
            .collect())
    }

    async fn last_dmarc_report(&self, domain: String) -> Result<Option<i64>, StoreError> {
        let client = self.db.client().await?;
        let row = client
            .query_one(
                "SELECT max(received_at) FROM herald_dmarc_reports WHERE domain = $1",
                &[&domain],
            )
            .await
            .map_err(DbError::doing("reading the last DMARC report"))?;
        Ok(row.get::<_, Option<i64>>(0))
    }

    async fn counters(&self) -> Result<StoreCounters, StoreError> {
        let client = self.db.client().await?;
        let rows = client
            .query("SELECT name, value FROM herald_report_counters", &[])
            .await
            .map_err(DbError::doing("reading the report counters"))?;
        let mut c = StoreCounters::default();
        for row in rows {
            let name: String = row.get(0);
            let v = row.get::<_, i64>(1).max(0) as u64;
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
}

async fn bump(tx: &Transaction<'_>, name: &str, by: usize) -> Result<(), StoreError> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO herald_report_counters (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = herald_report_counters.value + $2",
        &[&name, &(by as i64)],
    )
    .await
    .map_err(DbError::doing("counting reports"))?;
    Ok(())
}

/// Inserts a DMARC report and its rows; `false` when it was already stored.
async fn insert_dmarc(
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
        let forged = tx
            .query_opt(
                "SELECT id FROM herald_dmarc_reports \
                 WHERE org = $1 AND report_id = $2 AND NOT verified",
                &[&m.org_name, &m.report_id],
            )
            .await
            .map_err(DbError::doing("storing a DMARC report"))?;
        if let Some(row) = forged {
            let id: i64 = row.get(0);
            super::pg_totals::remove_unverified(tx, id).await?;
            tx.execute("DELETE FROM herald_dmarc_rows WHERE report = $1", &[&id])
                .await
                .map_err(DbError::doing("replacing an unverified DMARC report"))?;
            tx.execute("DELETE FROM herald_dmarc_reports WHERE id = $1", &[&id])
                .await
                .map_err(DbError::doing("replacing an unverified DMARC report"))?;
        }
    }
    let inserted = tx
        .query_opt(
            "INSERT INTO herald_dmarc_reports \
               (mail_id, org, report_id, domain, begin_at, end_at, policy, received_at, \
                verified) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (org, report_id) DO NOTHING RETURNING id",
            &[
                &mail_id,
                &m.org_name,
                &m.report_id,
                &p.domain.trim_end_matches('.').to_ascii_lowercase(),
                &(m.date_range.begin.min(i64::MAX as u64) as i64),
                &(m.date_range.end.min(i64::MAX as u64) as i64),
                &disposition_word(p.p),
                &at,
                &verified,
            ],
        )
        .await
        .map_err(DbError::doing("storing a DMARC report"))?;
    let Some(row) = inserted else {
        return Ok(false);
    };
    let report: i64 = row.get(0);
    // Records are read from the report as it came, a chunk at a time (never all in memory).
    let mut records = r.source.records();
    loop {
        let chunk: Vec<Record> = records.by_ref().take(RECORDS_PER_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        for rec in &chunk {
            let Some(ip) = rec.row.source_ip else {
                continue;
            };
            let (dkim, spf) = auth_results(rec);
            let pe = &rec.row.policy_evaluated;
            tx.execute(
                "INSERT INTO herald_dmarc_rows (report, source_ip, count, disposition, \
                   dkim_aligned, spf_aligned, header_from, dkim_json, spf_json) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &report,
                    &ip.to_string(),
                    &(rec.row.count as i64),
                    &action_word(pe.disposition),
                    &(pe.dkim == DmarcResult::Pass),
                    &(pe.spf == DmarcResult::Pass),
                    &rec.identifiers.header_from.to_ascii_lowercase(),
                    &serde_json::to_string(&dkim)?,
                    &serde_json::to_string(&spf)?,
                ],
            )
            .await
            .map_err(DbError::doing("storing a DMARC report row"))?;
        }
    }
    super::pg_totals::add_report(tx, report, verified).await?;
    Ok(true)
}

impl ReportStore for PgStore {
    fn accept<'a>(
        &'a self,
        mail: &'a ReceivedMail,
        items: &'a [ParsedItem],
    ) -> BoxFuture<'a, Result<AcceptOutcome, StoreError>> {
        Box::pin(self.accept(mail, items))
    }

    fn dmarc_aggregate<'a>(
        &'a self,
        domain: Option<&'a str>,
        since: i64,
    ) -> BoxFuture<'a, Result<DmarcAggregate, StoreError>> {
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        Box::pin(super::pg_aggregate::dmarc_aggregate(
            &self.db, domain, since,
        ))
    }

    fn rejected(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RejectedPart>, StoreError>> {
        Box::pin(self.rejected(limit))
    }

    fn tls_reports(&self, since: i64) -> BoxFuture<'_, Result<Vec<TlsReportSummary>, StoreError>> {
        Box::pin(self.tls_reports(since))
    }

    fn last_dmarc_report<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(self.last_dmarc_report(domain.trim_end_matches('.').to_ascii_lowercase()))
    }

    fn counters(&self) -> BoxFuture<'_, Result<StoreCounters, StoreError>> {
        Box::pin(self.counters())
    }

    fn rows_from<'a>(
        &'a self,
        origin: &'a str,
        since: i64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM herald_report_mails m \
                       JOIN herald_dmarc_reports r ON r.mail_id = m.id \
                       JOIN herald_dmarc_rows w ON w.report = r.id \
                     WHERE m.origin = $1 AND m.received_at >= $2",
                    &[&origin, &since],
                )
                .await
                .map_err(DbError::doing("counting a sender's DMARC rows"))?
                .get(0);
            Ok(n.max(0) as u64)
        })
    }
}
