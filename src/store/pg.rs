//! The report store of a cluster (`[cluster]`): the same tables as [`super::sqlite`] in the
//! cluster's PostgreSQL (`herald_report_mails`, `herald_dmarc_reports`, …), so `herald dmarc`
//! and the `/dmarc` page on any node show the reports every node received.
//!
//! [`ReportStore`] is synchronous (the SQLite store blocks on its file too). This store runs
//! its queries on a small runtime of its own, from a short-lived thread per call, so it can be
//! called from async code and from plain threads alike without nesting runtimes. Report
//! traffic is a few mails a day per receiver.

use std::future::Future;
use std::net::IpAddr;

use anyhow::Context;
use mail_auth::report::{DmarcResult, Report};

use super::sqlite::{action_word, auth_results, disposition_word};
use super::{
    AcceptOutcome, DmarcRow, ParsedItem, ReceivedMail, RejectedPart, ReportStore, StoreCounters,
    TlsReportSummary,
};
use crate::cluster::Db;

/// The PostgreSQL report store.
pub struct PgStore {
    db: Db,
    /// Drives the database connections; shut down in the background on drop (a runtime may
    /// not be dropped inside another's async context).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to the cluster's database (applying the schema migrations, as a node does).
    pub fn open(cfg: &crate::config::ClusterConfig) -> anyhow::Result<PgStore> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("report-store")
            .enable_all()
            .build()
            .context("report store: cannot start its runtime")?;
        let db = std::thread::scope(|s| {
            s.spawn(|| rt.block_on(crate::cluster::open(cfg)))
                .join()
                .map_err(|_| anyhow::anyhow!("report store: connection thread failed"))?
        })?;
        Ok(PgStore { db, rt: Some(rt) })
    }

    /// Runs `f` on the store's runtime and waits for it.
    fn run<T: Send>(&self, f: impl Future<Output = anyhow::Result<T>> + Send) -> anyhow::Result<T> {
        let Some(rt) = &self.rt else {
            anyhow::bail!("report store closed");
        };
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .map_err(|_| anyhow::anyhow!("report store: query thread failed"))?
        })
    }
}

async fn bump(tx: &tokio_postgres::Transaction<'_>, name: &str, by: usize) -> anyhow::Result<()> {
    if by == 0 {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO herald_report_counters (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = herald_report_counters.value + $2",
        &[&name, &(by as i64)],
    )
    .await?;
    Ok(())
}

/// Inserts a DMARC report and its rows; `false` when it was already stored.
async fn insert_dmarc(
    tx: &tokio_postgres::Transaction<'_>,
    mail_id: i64,
    at: i64,
    r: &Report,
) -> anyhow::Result<bool> {
    let m = &r.report_metadata;
    let p = &r.policy_published;
    let inserted = tx
        .query_opt(
            "INSERT INTO herald_dmarc_reports \
               (mail_id, org, report_id, domain, begin_at, end_at, policy, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
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
            ],
        )
        .await?;
    let Some(row) = inserted else {
        return Ok(false);
    };
    let report: i64 = row.get(0);
    for rec in &r.record {
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
        .await?;
    }
    Ok(true)
}

impl ReportStore for PgStore {
    fn accept(&self, mail: &ReceivedMail, items: &[ParsedItem]) -> anyhow::Result<AcceptOutcome> {
        self.run(async {
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
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
                .await?
                .get(0);
            let mut out = AcceptOutcome::default();
            let (mut dmarc, mut tls) = (0, 0);
            for item in items {
                match item {
                    ParsedItem::Dmarc(r) => {
                        if insert_dmarc(&tx, mail_id, mail.received_at, r).await? {
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
                            .await?;
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
                        .await?;
                        out.rejected += 1;
                    }
                }
            }
            bump(&tx, "mails", 1).await?;
            bump(&tx, "dmarc_reports", dmarc).await?;
            bump(&tx, "tls_reports", tls).await?;
            bump(&tx, "duplicates", out.duplicates).await?;
            bump(&tx, "rejected", out.rejected).await?;
            tx.commit()
                .await
                .context("cannot commit the report to the cluster database")?;
            Ok(out)
        })
    }

    fn dmarc_rows(&self, domain: Option<&str>, since: i64) -> anyhow::Result<Vec<DmarcRow>> {
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        self.run(async {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT r.domain, r.org, r.report_id, r.begin_at, r.end_at, r.policy, \
                            w.source_ip, w.count, w.disposition, w.dkim_aligned, \
                            w.spf_aligned, w.header_from, w.dkim_json, w.spf_json \
                     FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
                     WHERE r.end_at >= $1 AND ($2::text IS NULL OR r.domain = $2) \
                     ORDER BY r.domain, r.begin_at, w.id",
                    &[&since, &domain],
                )
                .await?;
            let mut out = Vec::new();
            for row in rows {
                let Ok(ip) = row.get::<_, String>(6).parse::<IpAddr>() else {
                    continue;
                };
                out.push(DmarcRow {
                    domain: row.get(0),
                    org: row.get(1),
                    report_id: row.get(2),
                    begin: row.get(3),
                    end: row.get(4),
                    policy: row.get(5),
                    source_ip: ip,
                    count: row.get::<_, i64>(7).max(0) as u64,
                    disposition: row.get(8),
                    dkim_aligned: row.get(9),
                    spf_aligned: row.get(10),
                    header_from: row.get(11),
                    dkim: serde_json::from_str(row.get(12)).unwrap_or_default(),
                    spf: serde_json::from_str(row.get(13)).unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    fn rejected(&self, limit: usize) -> anyhow::Result<Vec<RejectedPart>> {
        self.run(async {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT j.mail_id, m.received_at, m.origin, j.part, j.error \
                     FROM herald_report_rejected j JOIN herald_report_mails m \
                       ON j.mail_id = m.id \
                     ORDER BY j.id DESC LIMIT $1",
                    &[&(limit.min(i64::MAX as usize) as i64)],
                )
                .await?;
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
        })
    }

    fn tls_reports(&self, since: i64) -> anyhow::Result<Vec<TlsReportSummary>> {
        self.run(async {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT json FROM herald_tls_reports WHERE end_at >= $1 ORDER BY begin_at",
                    &[&since],
                )
                .await?;
            let out: Vec<TlsReportSummary> = rows
                .iter()
                .filter_map(|row| TlsReportSummary::of_json(row.get::<_, &str>(0)))
                .collect();
            Ok(out)
        })
    }

    fn last_dmarc_report(&self, domain: &str) -> anyhow::Result<Option<i64>> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.run(async {
            let client = self.db.client().await?;
            let row = client
                .query_one(
                    "SELECT max(received_at) FROM herald_dmarc_reports WHERE domain = $1",
                    &[&domain],
                )
                .await?;
            Ok(row.get::<_, Option<i64>>(0))
        })
    }

    fn counters(&self) -> anyhow::Result<StoreCounters> {
        self.run(async {
            let client = self.db.client().await?;
            let rows = client
                .query("SELECT name, value FROM herald_report_counters", &[])
                .await?;
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
        })
    }
}
