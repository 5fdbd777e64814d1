//! The operator's view of the PostgreSQL spool at scale (issue 29): a page of the queue read
//! by its primary key (`WHERE id > $1 ORDER BY id LIMIT $2`, whatever the queue holds), and
//! the summary counted by the database over the columns migration 0008 keeps for it (an
//! index-only scan of `herald_messages_summary`, no envelope, state or body read).

use super::{COLUMNS, Shared, entry, timed};
use crate::cluster::DbError;
use crate::spool::SpoolError;
use crate::spool::handle::{ClusterEntry, QueueCounts};

/// The summary in one statement: totals, then (messages, waiting recipients) per app, per age
/// bucket and per domain. `$1` is now (seconds since the epoch), `$2` the age buckets' upper
/// bounds. A message counts once per domain however many of its recipients wait there (the
/// first occurrence of the domain in its array).
const COUNTS: &str = "\
    WITH g AS MATERIALIZED (\
        SELECT app, width_bucket($1::bigint - received_at, $2::bigint[]) AS age, \
               count(*) AS n, coalesce(sum(cardinality(waiting_domains)), 0) AS r, \
               count(*) FILTER (WHERE held) AS h, \
               count(*) FILTER (WHERE NOT held AND next_attempt <= $1) AS due, \
               coalesce(sum(size), 0) AS b \
        FROM herald_messages GROUP BY 1, 2) \
    SELECT 'total' AS kind, '' AS key, coalesce(sum(n), 0)::bigint, coalesce(sum(r), 0)::bigint, \
           coalesce(sum(h), 0)::bigint, coalesce(sum(due), 0)::bigint, \
           coalesce(sum(b), 0)::bigint FROM g \
    UNION ALL SELECT 'app', app, sum(n)::bigint, sum(r)::bigint, 0, 0, 0 FROM g GROUP BY app \
    UNION ALL SELECT 'age', age::text, sum(n)::bigint, sum(r)::bigint, 0, 0, 0 FROM g GROUP BY age \
    UNION ALL SELECT 'domain', d, \
           count(*) FILTER (WHERE array_position(waiting_domains, d) = i), count(*), 0, 0, 0 \
        FROM herald_messages, unnest(waiting_domains) WITH ORDINALITY AS x(d, i) GROUP BY d";

impl Shared {
    /// At most `limit` messages after `after`, in id order: the primary key's index read
    /// from `after` on.
    pub(super) async fn list_page(
        &self,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<ClusterEntry>, SpoolError> {
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64);
        let rows = timed(async {
            let client = self.db.client().await?;
            let sql = format!(
                "SELECT {COLUMNS} FROM herald_messages \
                 WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"
            );
            client
                .query(&sql, &[&after, &limit])
                .await
                .map_err(DbError::doing("listing a page of the queue"))
        })
        .await?;
        rows.iter().map(entry).collect()
    }

    /// The queue counted by the database ([`COUNTS`]).
    pub(super) async fn counts(
        &self,
        now: u64,
        age_bounds: &[u64],
    ) -> Result<QueueCounts, SpoolError> {
        let now = now.min(i64::MAX as u64) as i64;
        let bounds: Vec<i64> = age_bounds
            .iter()
            .map(|b| (*b).min(i64::MAX as u64) as i64)
            .collect();
        let rows = timed(async {
            let client = self.db.client().await?;
            client
                .query(COUNTS, &[&now, &bounds])
                .await
                .map_err(DbError::doing("counting the queue"))
        })
        .await?;
        let mut counts = QueueCounts::default();
        let bad = DbError::doing("counting the queue");
        for row in &rows {
            let kind: &str = row.try_get(0).map_err(&bad)?;
            let key: Option<String> = row.try_get(1).map_err(&bad)?;
            let key = key.unwrap_or_default();
            let mut n = [0u64; 5];
            for (i, v) in n.iter_mut().enumerate() {
                let x: Option<i64> = row.try_get(i + 2).map_err(&bad)?;
                *v = x.unwrap_or(0).max(0) as u64;
            }
            let [messages, recipients, held, due, bytes] = n;
            match kind {
                "total" => {
                    counts.messages = messages;
                    counts.recipients = recipients;
                    counts.held = held;
                    counts.due = due;
                    counts.bytes = bytes;
                }
                "app" => counts.apps.push((key, messages, recipients)),
                "domain" => counts.domains.push((key, messages, recipients)),
                _ => {
                    let bucket = key.parse().unwrap_or(0);
                    counts.ages.push((bucket, messages, recipients));
                }
            }
        }
        Ok(counts)
    }
}
