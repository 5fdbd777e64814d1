//! [`super::ReportStore::dmarc_aggregate`] for [`super::pg::PgStore`]: reads the totals kept
//! at store time ([`super::pg_totals`]) and the reports of the period, as
//! [`super::sqlite_aggregate`] does in SQLite.

use super::{
    DmarcAggregate, DmarcDay, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg, StoreError,
};
use crate::cluster::{Db, DbError};

/// `AND column = $2` when one domain is asked for (so its index is used), else a no-op that
/// still types `$2`.
fn domain_filter(domain: &Option<String>, column: &str) -> String {
    match domain {
        Some(_) => format!("AND {column} = $2"),
        None => "AND $2::text IS NULL".into(),
    }
}

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
                "SELECT domain, verified, source_ip, dkim_aligned, spf_aligned, disposition, \
                        SUM(count)::bigint \
                 FROM herald_dmarc_totals \
                 WHERE end_at >= $1 {} \
                 GROUP BY 1, 2, 3, 4, 5, 6",
                domain_filter(&domain, "domain")
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
            dkim_aligned: row.get(3),
            spf_aligned: row.get(4),
            disposition: row.get(5),
            count: row.get::<_, i64>(6).max(0) as u64,
        });
    }
    let rows = client
        .query(
            &format!(
                "SELECT domain, day, SUM(count)::bigint, \
                        SUM(CASE WHEN dkim_aligned OR spf_aligned THEN count ELSE 0 END)::bigint \
                 FROM herald_dmarc_totals \
                 WHERE end_at >= $1 {} AND verified \
                 GROUP BY 1, 2",
                domain_filter(&domain, "domain")
            ),
            &[&since, &domain],
        )
        .await
        .map_err(DbError::doing("summing DMARC days"))?;
    out.days = rows
        .iter()
        .map(|row| DmarcDay {
            domain: row.get(0),
            day: row.get(1),
            messages: row.get::<_, i64>(2).max(0) as u64,
            pass: row.get::<_, i64>(3).max(0) as u64,
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT r.domain, r.verified, r.org, r.report_id, r.begin_at, r.end_at, \
                        r.policy, r.id \
                 FROM herald_dmarc_reports r \
                 WHERE r.end_at >= $1 {} \
                   AND EXISTS (SELECT 1 FROM herald_dmarc_rows w WHERE w.report = r.id)",
                domain_filter(&domain, "r.domain")
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
            stored: row.get(7),
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT domain, source_ip, org, first_begin, first_row \
                 FROM herald_dmarc_source_orgs WHERE last_end >= $1 {}",
                domain_filter(&domain, "domain")
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
            &format!(
                "SELECT domain, source_ip, signature, first_begin, first_row, first_pos \
                 FROM herald_dmarc_source_dkim WHERE last_end >= $1 {}",
                domain_filter(&domain, "domain")
            ),
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
