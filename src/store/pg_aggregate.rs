//! [`super::ReportStore::dmarc_aggregate`] for [`super::pg::PgStore`]: the same four grouped
//! queries as [`super::sqlite_aggregate`], in PostgreSQL.

use super::{DmarcAggregate, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg, StoreError};
use crate::cluster::{Db, DbError};

/// The rows of the period: `$1` is `since`, `$2` the domain or NULL.
const PERIOD: &str = "FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
     WHERE r.end_at >= $1 AND ($2::text IS NULL OR r.domain = $2)";

/// Reads the aggregate from the cluster database.
pub(super) async fn dmarc_aggregate(
    db: &Db,
    domain: Option<String>,
    since: i64,
) -> Result<DmarcAggregate, StoreError> {
    let client = db.client().await?;
    let mut out = DmarcAggregate::default();
    let rows = client
        .query(
            &format!(
                "SELECT r.domain, r.verified, w.source_ip, \
                        r.begin_at - ((r.begin_at % 86400) + 86400) % 86400, \
                        w.dkim_aligned, w.spf_aligned, \
                        CASE WHEN w.disposition IN ('quarantine', 'reject') \
                             THEN w.disposition ELSE '' END, \
                        SUM(GREATEST(w.count, 0))::bigint \
                 {PERIOD} \
                 GROUP BY 1, 2, 3, 4, 5, 6, 7"
            ),
            &[&since, &domain],
        )
        .await
        .map_err(DbError::doing("summing DMARC rows"))?;
    for row in rows {
        let Ok(source_ip) = row.get::<_, String>(2).parse() else {
            continue;
        };
        out.groups.push(DmarcGroup {
            domain: row.get(0),
            verified: row.get(1),
            source_ip,
            day: row.get(3),
            dkim_aligned: row.get(4),
            spf_aligned: row.get(5),
            disposition: row.get(6),
            count: row.get::<_, i64>(7).max(0) as u64,
        });
    }
    let rows = client
        .query(
            &format!(
                "SELECT r.domain, r.verified, r.org, r.report_id, r.begin_at, r.end_at, \
                        r.policy, MAX(w.id) \
                 {PERIOD} \
                 GROUP BY r.id"
            ),
            &[&since, &domain],
        )
        .await
        .map_err(DbError::doing("reading DMARC reports"))?;
    out.reports = rows
        .iter()
        .map(|row| DmarcReportFacts {
            domain: row.get(0),
            verified: row.get(1),
            org: row.get(2),
            report_id: row.get(3),
            begin: row.get(4),
            end: row.get(5),
            policy: row.get(6),
            last_row: row.get(7),
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT domain, source_ip, org, begin_at, id FROM ( \
                   SELECT r.domain, w.source_ip, r.org, r.begin_at, w.id, \
                          ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, r.org \
                                             ORDER BY r.begin_at, w.id) AS n \
                   {PERIOD} AND r.verified \
                 ) t WHERE n = 1"
            ),
            &[&since, &domain],
        )
        .await
        .map_err(DbError::doing("reading DMARC reporters"))?;
    for row in rows {
        let Ok(source_ip) = row.get::<_, String>(1).parse() else {
            continue;
        };
        out.source_orgs.push(SourceOrg {
            domain: row.get(0),
            source_ip,
            org: row.get(2),
            first: (row.get(3), row.get(4)),
        });
    }
    let rows = client
        .query(
            "SELECT domain, source_ip, sig::text, begin_at, id, k FROM ( \
               SELECT r.domain, w.source_ip, e.sig, r.begin_at, w.id, e.k, \
                      ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, e.sig \
                                         ORDER BY r.begin_at, w.id, e.k) AS n \
               FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
               CROSS JOIN LATERAL jsonb_array_elements( \
                   CASE WHEN jsonb_typeof(w.dkim_json::jsonb) = 'array' \
                        THEN w.dkim_json::jsonb ELSE '[]'::jsonb END) \
                 WITH ORDINALITY AS e(sig, k) \
               WHERE r.end_at >= $1 AND ($2::text IS NULL OR r.domain = $2) AND r.verified \
             ) t WHERE n = 1",
            &[&since, &domain],
        )
        .await
        .map_err(DbError::doing("reading DMARC signatures"))?;
    for row in rows {
        let (Ok(source_ip), Ok(signature)) = (
            row.get::<_, String>(1).parse(),
            serde_json::from_str(row.get::<_, &str>(2)),
        ) else {
            continue;
        };
        out.source_dkim.push(SourceDkim {
            domain: row.get(0),
            source_ip,
            signature,
            first: (row.get(3), row.get(4), row.get(5)),
        });
    }
    Ok(out)
}
