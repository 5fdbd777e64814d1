//! [`super::ReportStore::dmarc_aggregate`] for [`super::sqlite::SqliteStore`]: reads the
//! totals kept at store time ([`super::sqlite_totals`]) and the reports of the period, so the
//! time and memory of a summary follow the days, sources and reports, never the rows.

use rusqlite::{Connection, params};

use super::{
    DmarcAggregate, DmarcDay, DmarcGroup, DmarcReportFacts, SourceDkim, SourceOrg, StoreError,
};

/// `AND domain = ?2` when one domain is asked for (so its index is used), else nothing.
fn domain_filter(domain: &Option<String>, column: &str) -> String {
    match domain {
        Some(_) => format!("AND {column} = ?2"),
        None => "AND ?2 IS NULL".into(),
    }
}

/// Reads the aggregate on the store's thread.
pub(super) fn dmarc_aggregate(
    conn: &mut Connection,
    domain: Option<String>,
    since: i64,
) -> Result<DmarcAggregate, StoreError> {
    let mut out = DmarcAggregate::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT domain, verified, source_ip, dkim_aligned, spf_aligned, disposition, SUM(count)
         FROM dmarc_totals
         WHERE end_at >= ?1 {}
         GROUP BY 1, 2, 3, 4, 5, 6",
        domain_filter(&domain, "domain")
    ))?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok((
            row.get::<_, String>(2)?,
            DmarcGroup {
                domain: row.get(0)?,
                verified: row.get(1)?,
                source_ip: [0, 0, 0, 0].into(),
                dkim_aligned: row.get(3)?,
                spf_aligned: row.get(4)?,
                disposition: row.get(5)?,
                count: row.get::<_, i64>(6)?.max(0) as u64,
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
        "SELECT domain, day, SUM(count),
                SUM(CASE WHEN dkim_aligned OR spf_aligned THEN count ELSE 0 END)
         FROM dmarc_totals
         WHERE end_at >= ?1 {} AND verified
         GROUP BY 1, 2",
        domain_filter(&domain, "domain")
    ))?;
    let rows = stmt.query_map(params![since, domain], |row| {
        Ok(DmarcDay {
            domain: row.get(0)?,
            day: row.get(1)?,
            messages: row.get::<_, i64>(2)?.max(0) as u64,
            pass: row.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    out.days = rows.collect::<Result<_, _>>()?;
    // The reports with at least one row: one index probe each.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT r.domain, r.verified, r.org, r.report_id, r.begin_at, r.end_at, r.policy, r.id
         FROM dmarc_reports r
         WHERE r.end_at >= ?1 {}
           AND EXISTS (SELECT 1 FROM dmarc_rows w WHERE w.report = r.id)",
        domain_filter(&domain, "r.domain")
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
            stored: row.get(7)?,
        })
    })?;
    out.reports = rows.collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT domain, source_ip, org, first_begin, first_row FROM dmarc_source_orgs
         WHERE last_end >= ?1 {}",
        domain_filter(&domain, "domain")
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
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT domain, source_ip, signature, first_begin, first_row, first_pos
         FROM dmarc_source_dkim
         WHERE last_end >= ?1 {}",
        domain_filter(&domain, "domain")
    ))?;
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};
    use std::net::IpAddr;

    use super::super::ReportStore;
    use super::super::sqlite::SqliteStore;
    use super::*;

    const DAYS: i64 = 365;
    const ROWS_PER_REPORT: i64 = 100;
    const SOURCES: i64 = 5;
    /// 2024-01-01T00:00:00Z.
    const START: i64 = 1_704_067_200;
    /// `(org, verified)`: two authenticated receivers and one forger.
    const ORGS: [(&str, bool); 3] = [
        ("google.com", true),
        ("microsoft.com", true),
        ("forger.test", false),
    ];

    /// Stores a year of daily reports from three organizations, 100 rows each, straight into
    /// the tables of a database from before the totals (dropped); returns the expected
    /// `(verified messages, verified passing, unverified messages)`.
    fn fill(path: &std::path::Path) -> (u64, u64, u64) {
        let mut conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "DROP TABLE dmarc_totals; DROP TABLE dmarc_source_orgs; DROP TABLE dmarc_source_dkim;",
        )
        .unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute(
            "INSERT INTO mails (received_at, origin, mail_from, rcpt, raw)
             VALUES (0, 'test', '', 'dmarc@reports.test', x'')",
            [],
        )
        .unwrap();
        let mail = tx.last_insert_rowid();
        let (mut messages, mut pass, mut forged) = (0u64, 0u64, 0u64);
        for day in 0..DAYS {
            for (org, verified) in ORGS {
                let begin = START + day * 86_400 + 3_600;
                tx.execute(
                    "INSERT INTO dmarc_reports (mail_id, org, report_id, domain, begin_at,
                       end_at, policy, received_at, verified)
                     VALUES (?1, ?2, ?3, 'example.com', ?4, ?5, 'none', 0, ?6)",
                    params![
                        mail,
                        org,
                        format!("{org}-{day}"),
                        begin,
                        begin + 86_399,
                        verified
                    ],
                )
                .unwrap();
                let report = tx.last_insert_rowid();
                let mut row = tx
                    .prepare_cached(
                        "INSERT INTO dmarc_rows (report, source_ip, count, disposition,
                           dkim_aligned, spf_aligned, header_from, dkim_json, spf_json)
                         VALUES (?1, ?2, ?3, 'none', ?4, 0, 'example.com', ?5, '[]')",
                    )
                    .unwrap();
                for i in 0..ROWS_PER_REPORT {
                    let count = (i % 7 + 1) as u64;
                    let passes = i % 2 == 0;
                    let ip = format!("192.0.2.{}", i % SOURCES + 1);
                    let dkim = format!(r#"[["example.com","s{}","pass"]]"#, i % SOURCES);
                    row.execute(params![report, ip, count as i64, passes, dkim])
                        .unwrap();
                    if verified {
                        messages += count;
                        pass += if passes { count } else { 0 };
                    } else {
                        forged += count;
                    }
                }
            }
        }
        tx.commit().unwrap();
        (messages, pass, forged)
    }

    #[tokio::test]
    async fn a_year_of_rows_stored_before_the_totals_comes_back_as_its_groups_with_the_same_sums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        drop(SqliteStore::open(&path).await.unwrap());
        let (messages, pass, forged) = fill(&path);
        // Opening the upgraded database counts what it holds.
        let store = SqliteStore::open(&path).await.unwrap();
        let rows = DAYS * ROWS_PER_REPORT * ORGS.len() as i64;

        let agg = store
            .dmarc_aggregate(Some("Example.com."), 0)
            .await
            .unwrap();

        // One group per (source, result) of the verified reports, one for all the
        // unverified: bounded by the sources, not the rows, and a forger adds one.
        assert_eq!(agg.groups.len() as i64, SOURCES * 2 + 1);
        assert!((agg.days.len() as i64) * 100 < rows, "{}", agg.days.len());
        let sum = |verified: bool, passing: bool| -> u64 {
            agg.groups
                .iter()
                .filter(|g| g.verified == verified && (!passing || g.passes()))
                .map(|g| g.count)
                .sum()
        };
        assert_eq!((sum(true, false), sum(true, true)), (messages, pass));
        assert_eq!(sum(false, false), forged);
        let days: BTreeSet<i64> = agg.days.iter().map(|d| d.day).collect();
        assert_eq!(days.len() as i64, DAYS);
        assert_eq!(agg.days.len() as i64, DAYS);
        let daily = |f: fn(&DmarcDay) -> u64| agg.days.iter().map(f).sum::<u64>();
        assert_eq!((daily(|d| d.messages), daily(|d| d.pass)), (messages, pass));
        assert!(days.iter().all(|d| d % 86_400 == 0 && *d >= START));
        // Per report facts: one per stored report, the verified ones apart.
        assert_eq!(agg.reports.len(), DAYS as usize * ORGS.len());
        assert_eq!(
            agg.reports.iter().filter(|r| r.verified).count(),
            2 * DAYS as usize
        );
        // Each verified organization once per source, first seen on the first day; the
        // forger never.
        assert_eq!(agg.source_orgs.len() as i64, 2 * SOURCES);
        assert!(agg.source_orgs.iter().all(|o| o.org != "forger.test"));
        assert!(agg.source_orgs.iter().all(|o| o.first.0 == START + 3_600));
        // Each source's one signature, once.
        let sigs: HashMap<IpAddr, Vec<&str>> =
            agg.source_dkim.iter().fold(HashMap::new(), |mut m, k| {
                m.entry(k.source_ip).or_default().push(&k.signature.1);
                m
            });
        assert_eq!(sigs.len() as i64, SOURCES);
        assert!(sigs.values().all(|s| s.len() == 1));
        assert_eq!(sigs[&"192.0.2.2".parse::<IpAddr>().unwrap()], ["s1"]);
        // A later period leaves only its own days.
        let recent = store
            .dmarc_aggregate(None, START + (DAYS - 10) * 86_400)
            .await
            .unwrap();
        let days: BTreeSet<i64> = recent.days.iter().map(|d| d.day).collect();
        assert_eq!(days.len(), 11);
    }
}
