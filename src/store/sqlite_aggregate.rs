//! [`super::ReportStore::dmarc_aggregate`] for [`super::sqlite::SqliteStore`]: four grouped
//! queries, so SQLite sums the rows and herald holds only the groups.

use rusqlite::{Connection, params};

use super::{DmarcAggregate, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg, StoreError};

/// The rows of the period: `?1` is `since`, `?2` the domain or NULL.
const PERIOD: &str = "FROM dmarc_rows w JOIN dmarc_reports r ON w.report = r.id
     WHERE r.end_at >= ?1 AND (?2 IS NULL OR r.domain = ?2)";

/// Reads the aggregate on the store's thread.
pub(super) fn dmarc_aggregate(
    conn: &mut Connection,
    domain: Option<String>,
    since: i64,
) -> Result<DmarcAggregate, StoreError> {
    let mut out = DmarcAggregate::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.domain, r.verified, w.source_ip,
                r.begin_at - ((r.begin_at % 86400) + 86400) % 86400,
                w.dkim_aligned, w.spf_aligned,
                CASE WHEN w.disposition IN ('quarantine', 'reject') THEN w.disposition
                     ELSE '' END,
                SUM(MAX(w.count, 0))
         {PERIOD}
         GROUP BY 1, 2, 3, 4, 5, 6, 7"
    ))?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok((
            row.get::<_, String>(2)?,
            DmarcGroup {
                domain: row.get(0)?,
                verified: row.get(1)?,
                source_ip: [0, 0, 0, 0].into(),
                day: row.get(3)?,
                dkim_aligned: row.get(4)?,
                spf_aligned: row.get(5)?,
                disposition: row.get(6)?,
                count: row.get::<_, i64>(7)?.max(0) as u64,
            },
        ))
    })?;
    for r in rows {
        let (ip, mut g) = r?;
        let Ok(ip) = ip.parse() else { continue };
        g.source_ip = ip;
        out.groups.push(g);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.domain, r.verified, r.org, r.report_id, r.begin_at, r.end_at, r.policy,
                MAX(w.id)
         {PERIOD}
         GROUP BY r.id"
    ))?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok(DmarcReportFacts {
            domain: row.get(0)?,
            verified: row.get(1)?,
            org: row.get(2)?,
            report_id: row.get(3)?,
            begin: row.get(4)?,
            end: row.get(5)?,
            policy: row.get(6)?,
            last_row: row.get(7)?,
        })
    })?;
    out.reports = rows.collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT domain, source_ip, org, begin_at, id FROM (
           SELECT r.domain, w.source_ip, r.org, r.begin_at, w.id,
                  ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, r.org
                                     ORDER BY r.begin_at, w.id) AS n
           {PERIOD} AND r.verified
         ) WHERE n = 1"
    ))?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok((
            row.get::<_, String>(1)?,
            row.get::<_, String>(0)?,
            row.get::<_, String>(2)?,
            (row.get::<_, i64>(3)?, row.get::<_, i64>(4)?),
        ))
    })?;
    for r in rows {
        let (ip, domain, org, first) = r?;
        let Ok(source_ip) = ip.parse() else { continue };
        out.source_orgs.push(SourceOrg {
            domain,
            source_ip,
            org,
            first,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT domain, source_ip, sig, begin_at, id, k FROM (
           SELECT r.domain, w.source_ip, e.value AS sig, r.begin_at, w.id, e.key AS k,
                  ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, e.value
                                     ORDER BY r.begin_at, w.id, e.key) AS n
           FROM dmarc_rows w JOIN dmarc_reports r ON w.report = r.id,
                json_each(CASE WHEN json_valid(w.dkim_json) THEN w.dkim_json
                               ELSE '[]' END) e
           WHERE r.end_at >= ?1 AND (?2 IS NULL OR r.domain = ?2) AND r.verified
         ) WHERE n = 1",
    )?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok((
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(0)?,
            (
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
            ),
        ))
    })?;
    for r in rows {
        let (ip, sig, domain, first) = r?;
        let (Ok(source_ip), Ok(signature)) = (ip.parse(), serde_json::from_str(&sig)) else {
            continue;
        };
        out.source_dkim.push(SourceDkim {
            domain,
            source_ip,
            signature,
            first,
        });
    }
    Ok(out)
}
