//! Limits every node of a cluster counts together, in the cluster's database: the per-app
//! rate-limit buckets ([`crate::ratelimit::SharedBuckets`]) and the failed-AUTH counts
//! ([`crate::inbound::throttle::SharedFailures`]). The inbound code sees only those traits.
//!
//! Rate limits are token buckets, one row per app, taken from in one `INSERT … ON CONFLICT DO
//! UPDATE … RETURNING` (the row lock orders concurrent takes from every node). AUTH attempts
//! are rows (pending, failed, succeeded) in `herald_auth_attempts`; a reservation counts them
//! under an advisory lock per address and per user name, with the same rules as the node's own
//! throttle. Ages are measured on the database's clock, so the nodes' clocks may differ.

use std::net::IpAddr;
use std::time::Duration;

use crate::cluster::Db;
use crate::cluster::db::io_error;
use crate::ratelimit::{BoxFuture, Rate, SharedBuckets};
use crate::ratelimit::{Limits, Refusal, SharedFailures, SharedTry};

/// A reservation without a verdict after this long is ignored (its node died mid-check).
const PENDING_TTL: f64 = 60.0;

/// The cluster-wide limits on the cluster's database.
#[derive(Clone, Debug)]
pub(crate) struct PgLimits {
    db: Db,
}

impl PgLimits {
    /// Limits counted in `db`.
    pub(crate) fn new(db: Db) -> PgLimits {
        PgLimits { db }
    }

    async fn take_token(&self, key: &str, rate: Rate) -> std::io::Result<Result<(), Duration>> {
        let client = self.db.client().await?;
        // One statement: refill by the time since the last take (database clock), then take
        // one token if there is one. `granted` says which happened.
        let row = client
            .query_one(
                "INSERT INTO herald_rate_buckets AS b (key, tokens, granted, updated_at) \
                 VALUES ($1, $2::float8 - 1, true, clock_timestamp()) \
                 ON CONFLICT (key) DO UPDATE SET (tokens, granted, updated_at) = ( \
                   SELECT CASE WHEN r.level >= 1 THEN r.level - 1 ELSE r.level END, \
                          r.level >= 1, r.t \
                   FROM (SELECT least($2::float8, b.tokens + greatest(0, \
                           extract(epoch FROM c.t - b.updated_at)::float8) * $3::float8) AS level, c.t \
                         FROM (SELECT clock_timestamp() AS t) c) r) \
                 RETURNING granted, tokens",
                &[&key, &rate.burst(), &rate.per_sec()],
            )
            .await
            .map_err(|e| io_error("rate limit", e))?;
        let granted: bool = row.get(0);
        let tokens: f64 = row.get(1);
        if granted {
            Ok(Ok(()))
        } else {
            let wait = ((1.0 - tokens) / rate.per_sec()).clamp(0.0, 3600.0);
            Ok(Err(Duration::from_secs_f64(wait)))
        }
    }

    async fn ip_refused(&self, ip: IpAddr, limits: Limits) -> std::io::Result<Option<Duration>> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                "SELECT extract(epoch FROM clock_timestamp() - at)::float8 \
                 FROM herald_auth_attempts \
                 WHERE ip = $1 AND outcome = 'f' AND at > clock_timestamp() - make_interval(secs => $2)",
                &[&ip.to_string(), &horizon(limits)],
            )
            .await
            .map_err(|e| io_error("AUTH throttle", e))?;
        let ages: Vec<f64> = rows.iter().map(|r| r.get(0)).collect();
        Ok(live_failures(&ages, limits.max_failures, limits.window, limits.block).1)
    }

    async fn reserve_attempt(
        &self,
        ip: IpAddr,
        user: &str,
        limits: Limits,
    ) -> std::io::Result<SharedTry> {
        let ip_text = ip.to_string();
        let mut client = self.db.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| io_error("AUTH throttle", e))?;
        // Always the address first, then the user name: no two reservations wait on each
        // other in opposite orders.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('herald.auth.ip:' || $1, 0)), \
                    pg_advisory_xact_lock(hashtextextended('herald.auth.user:' || $2, 0))",
            &[&ip_text, &user],
        )
        .await
        .map_err(|e| io_error("AUTH throttle", e))?;
        let rows = tx
            .query(
                "SELECT ip = $1, username = $2, outcome, \
                        extract(epoch FROM clock_timestamp() - at)::float8 \
                 FROM herald_auth_attempts \
                 WHERE (ip = $1 OR username = $2) \
                   AND at > clock_timestamp() - make_interval(secs => $3)",
                &[&ip_text, &user, &horizon(limits)],
            )
            .await
            .map_err(|e| io_error("AUTH throttle", e))?;
        let window = limits.window.as_secs_f64();
        let (mut ip_failures, mut user_failures) = (Vec::new(), Vec::new());
        let (mut ip_pending, mut user_pending, mut trusted) = (0usize, 0usize, false);
        for row in &rows {
            let (same_ip, same_user): (bool, bool) = (row.get(0), row.get(1));
            let outcome: String = row.get(2);
            let age: f64 = row.get(3);
            match outcome.as_str() {
                "f" => {
                    if same_ip {
                        ip_failures.push(age);
                    }
                    if same_user {
                        user_failures.push(age);
                    }
                }
                "p" if age < PENDING_TTL => {
                    ip_pending += usize::from(same_ip);
                    user_pending += usize::from(same_user);
                }
                "s" => trusted |= same_ip && same_user && age < window,
                _ => {}
            }
        }
        let (ip_live, ip_refused) = live_failures(
            &ip_failures,
            limits.max_failures,
            limits.window,
            limits.block,
        );
        let (user_live, user_refused) = live_failures(
            &user_failures,
            limits.max_user_failures,
            limits.window,
            limits.block,
        );
        let user_over = !trusted
            && (user_refused.is_some()
                || in_window(&user_live, window) + user_pending >= limits.max_user_failures);
        // What to answer; `Some(slowed)` reserves a place.
        let decision: Result<bool, SharedTry> = if let Some(d) = ip_refused {
            Err(SharedTry::Refused(Refusal::Address(d)))
        } else if in_window(&ip_live, window) + ip_pending >= limits.max_failures {
            Err(SharedTry::Busy)
        } else if user_over && ip_failures.is_empty() {
            // An address that never failed: slowed, one at a time per user name, never
            // locked out (as on a single node).
            if user_pending > 0 {
                Err(SharedTry::Busy)
            } else {
                Ok(true)
            }
        } else if user_over {
            Err(match user_refused {
                Some(d) => SharedTry::Refused(Refusal::User(d.min(limits.block))),
                None => SharedTry::Busy,
            })
        } else {
            Ok(false)
        };
        let answer = match decision {
            Err(answer) => answer,
            Ok(slowed) => {
                let row = tx
                    .query_one(
                        "INSERT INTO herald_auth_attempts (ip, username, outcome, node) \
                         VALUES ($1, $2, 'p', $3) RETURNING id",
                        &[&ip_text, &user, &self.db.node_id()],
                    )
                    .await
                    .map_err(|e| io_error("AUTH throttle", e))?;
                let id: i64 = row.get(0);
                if slowed {
                    SharedTry::Slowed(id)
                } else {
                    SharedTry::Reserved(id)
                }
            }
        };
        tx.commit()
            .await
            .map_err(|e| io_error("AUTH throttle", e))?;
        Ok(answer)
    }

    async fn resolve_attempt(&self, id: i64, verdict: Option<bool>) -> std::io::Result<()> {
        let client = self.db.client().await?;
        let result = match verdict {
            Some(ok) => {
                let outcome = if ok { "s" } else { "f" };
                client
                    .execute(
                        "UPDATE herald_auth_attempts SET outcome = $2, at = clock_timestamp() \
                         WHERE id = $1",
                        &[&id, &outcome],
                    )
                    .await
            }
            None => {
                client
                    .execute("DELETE FROM herald_auth_attempts WHERE id = $1", &[&id])
                    .await
            }
        };
        result.map_err(|e| io_error("AUTH throttle", e))?;
        Ok(())
    }
}

/// How far back attempts matter: the window plus the block, and at least the pending TTL.
fn horizon(limits: Limits) -> f64 {
    (limits.window + limits.block)
        .as_secs_f64()
        .max(PENDING_TTL)
}

fn in_window(ages: &[f64], window: f64) -> usize {
    ages.iter().filter(|a| **a < window).count()
}

/// The failures aged `ages` (seconds before now) that still count, and how long they refuse
/// their address or user name, by the node throttle's rules: `max` failures within a window
/// block for `block` after the one that reached `max`; when that block has ended, the
/// failures up to it are forgotten (so an `auth_block` shorter than the window ends when it
/// says).
fn live_failures(
    ages: &[f64],
    max: usize,
    window: Duration,
    block: Duration,
) -> (Vec<f64>, Option<Duration>) {
    let (w, b) = (window.as_secs_f64(), block.as_secs_f64());
    let max = max.max(1);
    let mut oldest_first = ages.to_vec();
    oldest_first.sort_by(|x, y| y.total_cmp(x));
    let mut kept: Vec<f64> = Vec::new();
    let mut left: f64 = 0.0;
    for a in oldest_first {
        // The failures within the window that ends with this one.
        kept.retain(|x| *x < a + w);
        kept.push(a);
        if kept.len() >= max {
            if b - a > 0.0 {
                left = left.max(b - a);
            } else {
                kept.clear();
            }
        }
    }
    (kept, (left > 0.0).then(|| Duration::from_secs_f64(left)))
}

impl SharedBuckets for PgLimits {
    fn take<'a>(
        &'a self,
        key: &'a str,
        rate: Rate,
    ) -> BoxFuture<'a, std::io::Result<Result<(), Duration>>> {
        Box::pin(self.take_token(key, rate))
    }
}

impl SharedFailures for PgLimits {
    fn refused(
        &self,
        ip: IpAddr,
        limits: Limits,
    ) -> BoxFuture<'_, std::io::Result<Option<Duration>>> {
        Box::pin(self.ip_refused(ip, limits))
    }

    fn reserve<'a>(
        &'a self,
        ip: IpAddr,
        user: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, std::io::Result<SharedTry>> {
        Box::pin(self.reserve_attempt(ip, user, limits))
    }

    fn resolve(&self, id: i64, verdict: Option<bool>) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(self.resolve_attempt(id, verdict))
    }
}

/// Forgets what no limit looks at any more: AUTH attempts older than `keep`, and rate buckets
/// untouched for an hour (a bucket refills completely within a minute).
pub(crate) async fn prune(db: &Db, keep: Duration) -> std::io::Result<()> {
    let client = db.client().await?;
    client
        .execute(
            "DELETE FROM herald_auth_attempts WHERE at < clock_timestamp() - make_interval(secs => $1)",
            &[&keep.as_secs_f64().max(PENDING_TTL)],
        )
        .await
        .map_err(|e| io_error("cluster: pruning AUTH attempts", e))?;
    client
        .execute(
            "DELETE FROM herald_rate_buckets WHERE updated_at < clock_timestamp() - interval '1 hour'",
            &[],
        )
        .await
        .map_err(|e| io_error("cluster: pruning rate buckets", e))?;
    Ok(())
}

/// The nodes alive now, this one included (at least 1): those whose lease in
/// `herald_node_leases` (migration 0006) has not expired. Traffic shaping divides each
/// destination's limits among them ([`crate::shaping::shared`]). One query.
pub(crate) async fn live_nodes(db: &Db) -> std::io::Result<u32> {
    let client = db.client().await?;
    let others: i64 = client
        .query_one(
            "SELECT count(*) FROM herald_node_leases \
             WHERE lease_until > clock_timestamp() AND node_id <> $1",
            &[&db.node_id()],
        )
        .await
        .map_err(|e| io_error("traffic shaping: counting the live nodes", e))?
        .get(0);
    Ok(u32::try_from(others)
        .unwrap_or(u32::MAX - 1)
        .saturating_add(1))
}

/// A destination's push-back as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pushback {
    /// The destination (a shaping rule's name or an MX host's parent domain).
    pub destination: String,
    /// How much longer it is held (database clock).
    pub held_for: Duration,
    /// The reply that caused it.
    pub reason: String,
    /// Grows with every push-back recorded for the destination.
    pub seq: i64,
    /// The node that recorded the latest.
    pub node: String,
}

/// Records that `destination` pushed back, holding it for `hold` (database clock): one
/// statement.
pub(crate) async fn record_pushback(
    db: &Db,
    destination: &str,
    hold: Duration,
    why: &str,
) -> std::io::Result<()> {
    let client = db.client().await?;
    let upsert = "INSERT INTO herald_shaping AS s (destination, held_until, reason, seq, node) \
         VALUES ($1, clock_timestamp() + make_interval(secs => $2), $3, 1, $4) \
         ON CONFLICT (destination) DO UPDATE SET \
           held_until = greatest(s.held_until, excluded.held_until), \
           reason = excluded.reason, seq = s.seq + 1, node = excluded.node";
    client
        .execute(
            upsert,
            &[&destination, &hold.as_secs_f64(), &why, &db.node_id()],
        )
        .await
        .map_err(|e| io_error("traffic shaping", e))?;
    Ok(())
}

/// The destinations held back now, cluster-wide: one query.
pub(crate) async fn pushbacks(db: &Db) -> std::io::Result<Vec<Pushback>> {
    let client = db.client().await?;
    let select = "SELECT destination, extract(epoch FROM held_until - clock_timestamp())::float8, \
                reason, seq, node FROM herald_shaping WHERE held_until > clock_timestamp()";
    let rows = client
        .query(select, &[])
        .await
        .map_err(|e| io_error("traffic shaping", e))?;
    Ok(rows
        .iter()
        .map(|r| Pushback {
            destination: r.get(0),
            held_for: Duration::from_secs_f64(r.get::<_, f64>(1).clamp(0.0, 86_400.0)),
            reason: r.get(2),
            seq: r.get(3),
            node: r.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(600);
    const B: Duration = Duration::from_secs(60);

    fn refused_for(ages: &[f64], max: usize, w: Duration, b: Duration) -> Option<Duration> {
        live_failures(ages, max, w, b).1
    }

    #[test]
    fn refused_for_the_block_after_max_failures_in_the_window() {
        assert_eq!(refused_for(&[5.0, 3.0], 3, W, B), None);
        let d = refused_for(&[5.0, 3.0, 1.0], 3, W, B).expect("refused");
        // The third failure (1 s ago) started a 60 s block.
        assert_eq!(d.as_secs(), 59);
    }

    #[test]
    fn a_block_shorter_than_the_window_ends_and_its_failures_are_forgotten() {
        // Three failures, the last 100 s ago: the 60 s block is over, and they no longer
        // count, although they are within the 600 s window.
        let (live, refused) = live_failures(&[104.0, 102.0, 100.0], 3, W, B);
        assert_eq!(refused, None);
        assert!(live.is_empty(), "{live:?}");
        // One more failure since: one counts, not four.
        let (live, refused) = live_failures(&[104.0, 102.0, 100.0, 5.0], 3, W, B);
        assert_eq!((live.len(), refused), (1, None));
    }

    #[test]
    fn the_block_outlasts_a_short_window() {
        let short = Duration::from_secs(10);
        let long_block = Duration::from_secs(300);
        // Three failures 20 s ago, within 10 s of each other: out of the window, still
        // blocked for 300 - 20 s.
        let d = refused_for(&[25.0, 22.0, 20.0], 3, short, long_block).expect("blocked");
        assert_eq!(d.as_secs(), 280);
        // Spread wider than the window: never three at once.
        assert_eq!(refused_for(&[50.0, 35.0, 20.0], 3, short, long_block), None);
    }
}
