//! The DMARC totals of [`super::pg::PgStore`], kept at store time as in
//! [`super::sqlite_totals`] (the tables, what they hold and why): `herald_dmarc_totals`,
//! `herald_dmarc_source_orgs`, `herald_dmarc_source_dkim`, created and backfilled by the
//! migration `0004_dmarc_totals.sql` with the same statements over every stored report.

use tokio_postgres::Transaction;

use super::StoreError;
use crate::cluster::DbError;

/// Adds (`sign` 1) or takes away (`sign` -1) the rows of report `$1` to the totals.
fn totals_sql(sign: i32) -> String {
    format!(
        "INSERT INTO herald_dmarc_totals (domain, end_at, day, verified, source_ip, \
           dkim_aligned, spf_aligned, disposition, count, rows) \
         SELECT r.domain, r.end_at, \
                CASE WHEN r.verified \
                     THEN r.begin_at - ((r.begin_at % 86400) + 86400) % 86400 ELSE 0 END, \
                r.verified, \
                CASE WHEN r.verified THEN w.source_ip ELSE '0.0.0.0' END, \
                r.verified AND w.dkim_aligned, r.verified AND w.spf_aligned, \
                CASE WHEN r.verified AND w.disposition IN ('quarantine', 'reject') \
                     THEN w.disposition ELSE '' END, \
                {sign} * SUM(GREATEST(w.count, 0))::bigint, {sign} * COUNT(*) \
         FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
         WHERE r.id = $1 \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 \
         ON CONFLICT (domain, end_at, day, verified, source_ip, dkim_aligned, spf_aligned, \
                      disposition) \
         DO UPDATE SET count = herald_dmarc_totals.count + excluded.count, \
                       rows = herald_dmarc_totals.rows + excluded.rows"
    )
}

/// Each organization's first row per source in report `$1` (when verified).
const SOURCE_ORGS: &str = "INSERT INTO herald_dmarc_source_orgs AS o \
       (domain, source_ip, org, first_begin, first_row, last_end) \
     SELECT domain, source_ip, org, begin_at, id, last_end FROM ( \
       SELECT r.domain, w.source_ip, r.org, r.begin_at, w.id, \
              MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, r.org) AS last_end, \
              ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, r.org \
                                 ORDER BY r.begin_at, w.id) AS n \
       FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
       WHERE r.id = $1 AND r.verified \
     ) t WHERE n = 1 \
     ON CONFLICT (domain, source_ip, org) DO UPDATE SET \
       first_begin = CASE WHEN (excluded.first_begin, excluded.first_row) \
                               < (o.first_begin, o.first_row) \
                          THEN excluded.first_begin ELSE o.first_begin END, \
       first_row = CASE WHEN (excluded.first_begin, excluded.first_row) \
                             < (o.first_begin, o.first_row) \
                        THEN excluded.first_row ELSE o.first_row END, \
       last_end = GREATEST(o.last_end, excluded.last_end)";

/// Each DKIM signature's first sighting per source in report `$1` (when verified).
const SOURCE_DKIM: &str = "INSERT INTO herald_dmarc_source_dkim AS d \
       (domain, source_ip, signature, first_begin, first_row, first_pos, last_end) \
     SELECT domain, source_ip, sig, begin_at, id, k, last_end FROM ( \
       SELECT r.domain, w.source_ip, e.sig::text AS sig, r.begin_at, w.id, e.k, \
              MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, e.sig) AS last_end, \
              ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, e.sig \
                                 ORDER BY r.begin_at, w.id, e.k) AS n \
       FROM herald_dmarc_rows w JOIN herald_dmarc_reports r ON w.report = r.id \
       CROSS JOIN LATERAL jsonb_array_elements( \
           CASE WHEN jsonb_typeof(w.dkim_json::jsonb) = 'array' \
                THEN w.dkim_json::jsonb ELSE '[]'::jsonb END) \
         WITH ORDINALITY AS e(sig, k) \
       WHERE r.id = $1 AND r.verified \
     ) t WHERE n = 1 \
     ON CONFLICT (domain, source_ip, signature) DO UPDATE SET \
       first_begin = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos) \
                               < (d.first_begin, d.first_row, d.first_pos) \
                          THEN excluded.first_begin ELSE d.first_begin END, \
       first_row = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos) \
                             < (d.first_begin, d.first_row, d.first_pos) \
                        THEN excluded.first_row ELSE d.first_row END, \
       first_pos = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos) \
                             < (d.first_begin, d.first_row, d.first_pos) \
                        THEN excluded.first_pos ELSE d.first_pos END, \
       last_end = GREATEST(d.last_end, excluded.last_end)";

/// Counts the stored rows of report `report` (in the transaction that stored them).
pub(super) async fn add_report(
    tx: &Transaction<'_>,
    report: i64,
    verified: bool,
) -> Result<(), StoreError> {
    tx.execute(&totals_sql(1), &[&report])
        .await
        .map_err(DbError::doing("counting a DMARC report"))?;
    if verified {
        tx.execute(SOURCE_ORGS, &[&report])
            .await
            .map_err(DbError::doing("counting a DMARC report's reporters"))?;
        tx.execute(SOURCE_DKIM, &[&report])
            .await
            .map_err(DbError::doing("counting a DMARC report's signatures"))?;
    }
    Ok(())
}

/// Takes an unverified report's rows out of the totals, before it gives way to the verified
/// report with its id.
pub(super) async fn remove_unverified(tx: &Transaction<'_>, report: i64) -> Result<(), StoreError> {
    tx.execute(&totals_sql(-1), &[&report])
        .await
        .map_err(DbError::doing("replacing an unverified DMARC report"))?;
    tx.execute(
        "DELETE FROM herald_dmarc_totals WHERE rows <= 0 AND NOT verified \
           AND (domain, end_at) IN \
             (SELECT domain, end_at FROM herald_dmarc_reports WHERE id = $1)",
        &[&report],
    )
    .await
    .map_err(DbError::doing("replacing an unverified DMARC report"))?;
    Ok(())
}
