//! DMARC totals kept at store time in [`super::sqlite::SqliteStore`], so the summary reads
//! O(days × sources), never the rows (a year of a large domain's reports is millions of rows):
//! - `dmarc_totals`: messages and rows per (domain, report end, UTC day the report begins,
//!   verified, source, DKIM/SPF verdict, disposition); the unverified reports of a domain are
//!   collapsed to one source `0.0.0.0` with no result per report end, so a forger adds one
//!   total per report, never one per row, and nothing of theirs counts toward "safe";
//! - `dmarc_source_orgs`, `dmarc_source_dkim`: per (domain, source), each organization that
//!   reported it and each DKIM signature seen for it (verified reports only), with where it
//!   was first seen (the order they are listed in) and the latest report end (the period).
//!
//! The same statements fill them for one report (in the transaction that stores it) and for
//! every stored report (the backfill when a database made before them is opened).

use rusqlite::{Connection, Transaction, params};

use super::StoreError;

/// The tables (created with the others; [`backfill`] fills them once for older databases).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS dmarc_totals (
    domain TEXT NOT NULL,
    end_at INTEGER NOT NULL,
    day INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    source_ip TEXT NOT NULL,
    dkim_aligned INTEGER NOT NULL,
    spf_aligned INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    count INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    PRIMARY KEY (domain, end_at, day, verified, source_ip, dkim_aligned, spf_aligned,
                 disposition)
);
CREATE TABLE IF NOT EXISTS dmarc_source_orgs (
    domain TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    org TEXT NOT NULL,
    first_begin INTEGER NOT NULL,
    first_row INTEGER NOT NULL,
    last_end INTEGER NOT NULL,
    PRIMARY KEY (domain, source_ip, org)
);
CREATE TABLE IF NOT EXISTS dmarc_source_dkim (
    domain TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    signature TEXT NOT NULL,
    first_begin INTEGER NOT NULL,
    first_row INTEGER NOT NULL,
    first_pos INTEGER NOT NULL,
    last_end INTEGER NOT NULL,
    PRIMARY KEY (domain, source_ip, signature)
);
"#;

/// Adds (`sign` 1) or takes away (`sign` -1) the rows of the reports in `scope` to the totals.
fn totals_sql(scope: &str, sign: i32) -> String {
    format!(
        "INSERT INTO dmarc_totals (domain, end_at, day, verified, source_ip, dkim_aligned,
           spf_aligned, disposition, count, rows)
         SELECT r.domain, r.end_at,
                CASE WHEN r.verified THEN r.begin_at - ((r.begin_at % 86400) + 86400) % 86400
                     ELSE 0 END,
                r.verified,
                CASE WHEN r.verified THEN w.source_ip ELSE '0.0.0.0' END,
                CASE WHEN r.verified THEN w.dkim_aligned ELSE 0 END,
                CASE WHEN r.verified THEN w.spf_aligned ELSE 0 END,
                CASE WHEN r.verified AND w.disposition IN ('quarantine', 'reject')
                     THEN w.disposition ELSE '' END,
                {sign} * SUM(MAX(w.count, 0)), {sign} * COUNT(*)
         FROM dmarc_rows w JOIN dmarc_reports r ON w.report = r.id
         WHERE {scope}
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
         ON CONFLICT (domain, end_at, day, verified, source_ip, dkim_aligned, spf_aligned,
                      disposition)
         DO UPDATE SET count = count + excluded.count, rows = rows + excluded.rows"
    )
}

/// Each organization's first row per source, among the verified reports in `scope`.
fn source_orgs_sql(scope: &str) -> String {
    format!(
        "INSERT INTO dmarc_source_orgs (domain, source_ip, org, first_begin, first_row, last_end)
         SELECT domain, source_ip, org, begin_at, id, last_end FROM (
           SELECT r.domain, w.source_ip, r.org, r.begin_at, w.id,
                  MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, r.org) AS last_end,
                  ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, r.org
                                     ORDER BY r.begin_at, w.id) AS n
           FROM dmarc_rows w JOIN dmarc_reports r ON w.report = r.id
           WHERE {scope} AND r.verified
         ) WHERE n = 1
         ON CONFLICT (domain, source_ip, org) DO UPDATE SET
           first_begin = CASE WHEN (excluded.first_begin, excluded.first_row)
                                   < (first_begin, first_row)
                              THEN excluded.first_begin ELSE first_begin END,
           first_row = CASE WHEN (excluded.first_begin, excluded.first_row)
                                 < (first_begin, first_row)
                            THEN excluded.first_row ELSE first_row END,
           last_end = MAX(last_end, excluded.last_end)"
    )
}

/// Each DKIM signature's first sighting per source, among the verified reports in `scope`.
fn source_dkim_sql(scope: &str) -> String {
    format!(
        "INSERT INTO dmarc_source_dkim (domain, source_ip, signature, first_begin, first_row,
           first_pos, last_end)
         SELECT domain, source_ip, sig, begin_at, id, k, last_end FROM (
           SELECT r.domain, w.source_ip, e.value AS sig, r.begin_at, w.id, e.key AS k,
                  MAX(r.end_at) OVER (PARTITION BY r.domain, w.source_ip, e.value) AS last_end,
                  ROW_NUMBER() OVER (PARTITION BY r.domain, w.source_ip, e.value
                                     ORDER BY r.begin_at, w.id, e.key) AS n
           FROM dmarc_rows w JOIN dmarc_reports r ON w.report = r.id,
                json_each(CASE WHEN json_valid(w.dkim_json) THEN w.dkim_json
                               ELSE '[]' END) e
           WHERE {scope} AND r.verified
         ) WHERE n = 1
         ON CONFLICT (domain, source_ip, signature) DO UPDATE SET
           first_begin = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos)
                                   < (first_begin, first_row, first_pos)
                              THEN excluded.first_begin ELSE first_begin END,
           first_row = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos)
                                 < (first_begin, first_row, first_pos)
                            THEN excluded.first_row ELSE first_row END,
           first_pos = CASE WHEN (excluded.first_begin, excluded.first_row, excluded.first_pos)
                                 < (first_begin, first_row, first_pos)
                            THEN excluded.first_pos ELSE first_pos END,
           last_end = MAX(last_end, excluded.last_end)"
    )
}

/// One report, by id.
const ONE_REPORT: &str = "r.id = ?1";

/// Counts the stored rows of report `report` (in the transaction that stored them).
pub(super) fn add_report(
    tx: &Transaction<'_>,
    report: i64,
    verified: bool,
) -> Result<(), StoreError> {
    tx.prepare_cached(&totals_sql(ONE_REPORT, 1))?
        .execute(params![report])?;
    if verified {
        tx.prepare_cached(&source_orgs_sql(ONE_REPORT))?
            .execute(params![report])?;
        tx.prepare_cached(&source_dkim_sql(ONE_REPORT))?
            .execute(params![report])?;
    }
    Ok(())
}

/// Takes an unverified report's rows out of the totals, before it gives way to the verified
/// report with its id (unverified reports are in no other table).
pub(super) fn remove_unverified(tx: &Transaction<'_>, report: i64) -> Result<(), StoreError> {
    tx.prepare_cached(&totals_sql(ONE_REPORT, -1))?
        .execute(params![report])?;
    tx.execute(
        "DELETE FROM dmarc_totals WHERE rows <= 0 AND verified = 0 AND (domain, end_at) IN
           (SELECT domain, end_at FROM dmarc_reports WHERE id = ?1)",
        params![report],
    )?;
    Ok(())
}

/// Whether the database already has the totals (a database made before them has not).
pub(super) fn present(c: &Connection) -> rusqlite::Result<bool> {
    c.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dmarc_totals'")?
        .exists([])
}

/// Creates the tables and, when they are new, counts every stored report into them, in one
/// transaction (a database upgraded from before the totals is summarised as before).
pub(super) fn create(c: &mut Connection) -> rusqlite::Result<()> {
    let had = present(c)?;
    let tx = c.transaction()?;
    tx.execute_batch(SCHEMA)?;
    if !had {
        tx.execute_batch(&totals_sql("1", 1))?;
        tx.execute_batch(&source_orgs_sql("1"))?;
        tx.execute_batch(&source_dkim_sql("1"))?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use mail_auth::report::{
        Disposition, DkimResult, DmarcResult, PolicyPublished, Record, Report,
    };

    use super::super::sqlite::SqliteStore;
    use super::super::{DmarcAggregate, DmarcReport, ParsedItem, ReceivedMail, ReportStore};

    fn report(org: &str, id: &str, day: u64, sources: &[(&str, u32, bool)]) -> Report {
        let begin = 1_704_067_200 + day * 86_400;
        let mut r = Report::new()
            .with_org_name(org)
            .with_report_id(id)
            .with_date_range_begin(begin)
            .with_date_range_end(begin + 86_399)
            .with_policy_published(PolicyPublished {
                domain: "example.com".into(),
                p: Disposition::None,
                ..Default::default()
            });
        for (ip, count, pass) in sources {
            let result = if *pass {
                DmarcResult::Pass
            } else {
                DmarcResult::Fail
            };
            r.add_record(
                Record::new()
                    .with_source_ip(ip.parse().unwrap())
                    .with_count(*count)
                    .with_dmarc_dkim_result(result)
                    .with_dmarc_spf_result(DmarcResult::Fail)
                    .with_header_from("example.com")
                    .with_dkim_auth_result(
                        mail_auth::report::DKIMAuthResult::new()
                            .with_domain("example.com")
                            .with_selector(format!("s{count}"))
                            .with_result(DkimResult::Pass),
                    ),
            );
        }
        r
    }

    fn mail(verified: &[(&str, &str)]) -> ReceivedMail {
        ReceivedMail {
            received_at: 1_704_100_000,
            origin: "192.0.2.9".into(),
            mail_from: String::new(),
            rcpt: "dmarc@reports.test".into(),
            raw: b"Subject: x\r\n\r\nx\r\n".to_vec(),
            verified: verified
                .iter()
                .map(|(o, i)| (o.to_string(), i.to_string()))
                .collect(),
        }
    }

    /// Everything an aggregate holds, in a fixed order, to compare two.
    fn facts(a: &DmarcAggregate) -> Vec<String> {
        let mut out: Vec<String> = a
            .groups
            .iter()
            .map(|g| {
                format!(
                    "g {} {} {} {} {} {} {}",
                    g.domain,
                    g.verified,
                    g.source_ip,
                    g.dkim_aligned,
                    g.spf_aligned,
                    g.disposition,
                    g.count
                )
            })
            .chain(
                a.days
                    .iter()
                    .map(|d| format!("d {} {} {} {}", d.domain, d.day, d.messages, d.pass)),
            )
            .chain(a.reports.iter().map(|r| {
                format!(
                    "r {} {} {} {} {} {}",
                    r.domain, r.verified, r.org, r.report_id, r.begin, r.policy
                )
            }))
            .chain(
                a.source_orgs
                    .iter()
                    .map(|o| format!("o {} {} {} {:?}", o.domain, o.source_ip, o.org, o.first)),
            )
            .chain(a.source_dkim.iter().map(|k| {
                format!(
                    "k {} {} {:?} {:?}",
                    k.domain, k.source_ip, k.signature, k.first
                )
            }))
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn totals_kept_at_store_time_match_the_backfill_and_a_forgery_replaced_leaves_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        let google = report(
            "google.com",
            "g1",
            0,
            &[("192.0.2.1", 10, true), ("192.0.2.2", 3, false)],
        );
        let google2 = report("google.com", "g2", 1, &[("192.0.2.1", 5, true)]);
        // A forger takes Microsoft's next id first; the real report replaces it.
        let forged = report("microsoft.com", "m1", 1, &[("198.51.100.7", 1_000, true)]);
        let microsoft = report("microsoft.com", "m1", 1, &[("192.0.2.1", 20, true)]);
        let other = report("forger.test", "f1", 1, &[("198.51.100.8", 42, true)]);
        for (r, verified) in [
            (google, true),
            (google2, true),
            (forged, false),
            (microsoft, true),
            (other, false),
        ] {
            let m = &r.report_metadata;
            let vouched = [(m.org_name.as_str(), m.report_id.as_str())];
            let mail = mail(if verified { &vouched } else { &[] });
            store
                .accept(
                    &mail,
                    &[ParsedItem::Dmarc(Box::new(DmarcReport::in_memory(
                        r.clone(),
                    )))],
                )
                .await
                .unwrap();
        }
        let kept = store.dmarc_aggregate(None, 0).await.unwrap();
        let unverified: u64 = kept
            .groups
            .iter()
            .filter(|g| !g.verified)
            .map(|g| g.count)
            .sum();
        assert_eq!(unverified, 42, "{:?}", kept.groups);
        let verified: u64 = kept
            .groups
            .iter()
            .filter(|g| g.verified)
            .map(|g| g.count)
            .sum();
        assert_eq!(verified, 38);
        let first_of_1: Vec<_> = kept
            .source_orgs
            .iter()
            .filter(|o| o.source_ip.to_string() == "192.0.2.1")
            .map(|o| o.org.as_str())
            .collect();
        assert_eq!(first_of_1.len(), 2, "{first_of_1:?}");
        // The later period leaves the first day's source out.
        let later = store
            .dmarc_aggregate(Some("example.com"), 1_704_067_200 + 86_400)
            .await
            .unwrap();
        assert!(
            later
                .groups
                .iter()
                .all(|g| g.source_ip.to_string() != "192.0.2.2")
        );
        assert!(
            later
                .source_orgs
                .iter()
                .all(|o| o.source_ip.to_string() != "192.0.2.2")
        );
        drop(store);

        // The same database counted from scratch, as an upgrade does: the same aggregate.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TABLE dmarc_totals; DROP TABLE dmarc_source_orgs; \
                 DROP TABLE dmarc_source_dkim;",
            )
            .unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        let backfilled = store.dmarc_aggregate(None, 0).await.unwrap();
        assert_eq!(facts(&kept), facts(&backfilled));
    }
}
