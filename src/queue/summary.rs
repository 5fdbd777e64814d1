//! `herald queue summary` and `herald queue list --limit/--after` (issue 29): what a big queue
//! holds at a glance — messages and waiting recipients per destination domain, per app and per
//! age — with traffic shaping's held-back destinations, and the queue listed a page at a time.
//! The summary reads the counts the queue's table keeps as messages come and go (no walk over
//! the queue); a page reads only its own messages from the spool (README, "Traffic shaping
//! and scale").

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::control::Control;
use super::manager::QueueManager;
use super::view::MessageView;
use crate::shaping::DestinationView;
use crate::spool::{Leases, RecipientStatus, SpoolError, SpooledMessage};

/// The age buckets (upper bound in seconds, label), the last open-ended.
const AGE_BUCKETS: [(u64, &str); 6] = [
    (5 * 60, "< 5m"),
    (3600, "5m - 1h"),
    (6 * 3600, "1h - 6h"),
    (24 * 3600, "6h - 1d"),
    (3 * 24 * 3600, "1d - 3d"),
    (u64::MAX, ">= 3d"),
];

/// The age bucket of a message `age` seconds old.
fn age_bucket(age: u64) -> usize {
    AGE_BUCKETS
        .iter()
        .position(|(upper, _)| age < *upper)
        .unwrap_or(AGE_BUCKETS.len() - 1)
}

/// The upper bounds of the age buckets but the last (what the database buckets ages by).
const AGE_BOUNDS: [u64; AGE_BUCKETS.len() - 1] = {
    let mut bounds = [0; AGE_BUCKETS.len() - 1];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = AGE_BUCKETS[i].0;
        i += 1;
    }
    bounds
};

/// The summary of a cluster's queue, counted by the database ([`Leases::counts`]) at `now`;
/// `in_flight` is what this node is delivering (the database does not know), taken off the
/// messages due.
pub async fn cluster_summary(
    leases: &dyn Leases,
    now: u64,
    in_flight: u64,
) -> Result<QueueSummary, SpoolError> {
    let c = leases.counts(now, &AGE_BOUNDS).await?;
    let map = |v: Vec<(String, u64, u64)>| -> HashMap<String, (u64, u64)> {
        v.into_iter().map(|(k, m, r)| (k, (m, r))).collect()
    };
    // A bucket's lower bound stands for its ages.
    let ages = c.ages.into_iter().map(|(bucket, m, r)| {
        let age = match bucket {
            0 => 0,
            b => AGE_BUCKETS[(b - 1).min(AGE_BUCKETS.len() - 1)].0,
        };
        (age, m, r)
    });
    let totals = [
        c.messages,
        c.recipients,
        c.held,
        in_flight,
        c.due.saturating_sub(in_flight),
        c.bytes,
    ];
    Ok(Tally::of_counts(totals, map(c.domains), map(c.apps), ages).finish())
}

/// Destinations shown by name in the text form (the JSON has them all).
const TOP: usize = 20;

/// One line of a breakdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Count {
    /// The domain, app (`-` for none) or age bucket.
    pub key: String,
    /// Messages with at least one waiting recipient there.
    pub messages: u64,
    /// Waiting recipients there.
    pub recipients: u64,
}

/// What the queue holds, broken down.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueSummary {
    /// Messages queued.
    pub messages: u64,
    /// Recipients still waiting.
    pub recipients: u64,
    /// Messages held by the operator (or a paused app).
    pub held: u64,
    /// Messages being delivered now.
    pub in_flight: u64,
    /// Messages due for an attempt now but not started yet (a backlog).
    pub due: u64,
    /// Bytes queued.
    pub bytes: u64,
    /// By recipient domain, most waiting recipients first.
    pub domains: Vec<Count>,
    /// By submitting app, most messages first.
    pub apps: Vec<Count>,
    /// By age since acceptance, youngest first.
    pub ages: Vec<Count>,
    /// Destinations traffic shaping holds back or slows now.
    pub shaping: Vec<DestinationView>,
    /// herald started recently and is still reading its spool: the counts grow until it is
    /// done.
    #[serde(default)]
    pub recovering: bool,
}

/// Adds messages up into a [`QueueSummary`].
#[derive(Default)]
pub struct Tally {
    sum: QueueSummary,
    domains: HashMap<String, (u64, u64)>,
    apps: HashMap<String, (u64, u64)>,
    ages: [(u64, u64); AGE_BUCKETS.len()],
}

impl Tally {
    /// A tally of counts kept elsewhere (the queue's table): totals as `[messages,
    /// recipients, held, in_flight, due, bytes]`, (messages, recipients) by domain and by
    /// app, and (age in seconds, messages, recipients) by time of acceptance.
    pub(super) fn of_counts(
        totals: [u64; 6],
        domains: HashMap<String, (u64, u64)>,
        apps: HashMap<String, (u64, u64)>,
        ages: impl Iterator<Item = (u64, u64, u64)>,
    ) -> Tally {
        let [messages, recipients, held, in_flight, due, bytes] = totals;
        let mut tally = Tally {
            sum: QueueSummary {
                messages,
                recipients,
                held,
                in_flight,
                due,
                bytes,
                ..QueueSummary::default()
            },
            domains,
            apps,
            ages: Default::default(),
        };
        for (age, messages, recipients) in ages {
            let bucket = age_bucket(age);
            tally.ages[bucket].0 += messages;
            tally.ages[bucket].1 += recipients;
        }
        tally
    }

    /// Counts one message at `now` (seconds since the epoch).
    pub fn add(&mut self, m: &SpooledMessage, in_flight: bool, now: u64) {
        let s = &mut self.sum;
        s.messages += 1;
        s.bytes += m.size;
        s.held += u64::from(m.state.held);
        s.in_flight += u64::from(in_flight);
        s.due += u64::from(
            !in_flight && !m.state.held && m.state.next_attempt().is_some_and(|t| t <= now),
        );
        let mut waiting = 0u64;
        let mut seen: Vec<&str> = Vec::new();
        for r in &m.state.recipients {
            if r.status != RecipientStatus::Pending {
                continue;
            }
            waiting += 1;
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            let first = !seen.iter().any(|d| d.eq_ignore_ascii_case(domain));
            if first {
                seen.push(domain);
            }
            let e = match self.domains.get_mut(domain) {
                Some(e) => e,
                None => self.domains.entry(domain.to_ascii_lowercase()).or_default(),
            };
            e.0 += u64::from(first);
            e.1 += 1;
        }
        s.recipients += waiting;
        let app = m.envelope.app.as_deref().unwrap_or("-");
        let e = match self.apps.get_mut(app) {
            Some(e) => e,
            None => self.apps.entry(app.to_string()).or_default(),
        };
        e.0 += 1;
        e.1 += waiting;
        let bucket = age_bucket(now.saturating_sub(m.envelope.received_at));
        self.ages[bucket].0 += 1;
        self.ages[bucket].1 += waiting;
    }

    /// The summary, with traffic shaping's destinations as they stand now.
    pub fn finish(self) -> QueueSummary {
        let sorted = |map: HashMap<String, (u64, u64)>, by_recipients: bool| {
            let mut v: Vec<Count> = map
                .into_iter()
                .map(|(key, (messages, recipients))| Count {
                    key,
                    messages,
                    recipients,
                })
                .collect();
            v.sort_by(|a, b| {
                let (x, y) = if by_recipients {
                    (b.recipients, a.recipients)
                } else {
                    (b.messages, a.messages)
                };
                x.cmp(&y).then_with(|| a.key.cmp(&b.key))
            });
            v
        };
        QueueSummary {
            domains: sorted(self.domains, true),
            apps: sorted(self.apps, false),
            ages: AGE_BUCKETS
                .iter()
                .zip(self.ages)
                .map(|((_, label), (messages, recipients))| Count {
                    key: label.to_string(),
                    messages,
                    recipients,
                })
                .collect(),
            shaping: crate::shaping::snapshot(),
            ..self.sum
        }
    }
}

impl QueueSummary {
    /// The summary as a person reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} message(s), {} recipient(s) waiting, {} held, {} being delivered, {} due now, {} bytes",
            self.messages, self.recipients, self.held, self.in_flight, self.due, self.bytes
        );
        if self.recovering {
            let _ = writeln!(
                out,
                "(herald is still reading its spool after the start: more messages to come)"
            );
        }
        let table = |out: &mut String, title: &str, rows: &[Count], limit: usize| {
            let _ = writeln!(out, "\n{title:<32} {:>10} {:>10}", "messages", "recipients");
            for c in rows.iter().take(limit) {
                let key = if c.key.is_empty() { "(none)" } else { &c.key };
                let _ = writeln!(out, "{key:<32} {:>10} {:>10}", c.messages, c.recipients);
            }
            if rows.len() > limit {
                let rest = &rows[limit..];
                let (m, r) = rest
                    .iter()
                    .fold((0, 0), |(m, r), c| (m + c.messages, r + c.recipients));
                let other = format!("({} more)", rest.len());
                let _ = writeln!(out, "{other:<32} {m:>10} {r:>10}");
            }
        };
        table(&mut out, "destination domain", &self.domains, TOP);
        table(&mut out, "app", &self.apps, TOP);
        table(&mut out, "age", &self.ages, AGE_BUCKETS.len());
        if self.shaping.is_empty() {
            let _ = writeln!(
                out,
                "\ntraffic shaping: every destination at its full limits"
            );
        } else {
            let _ = writeln!(out, "\ntraffic shaping:");
            for d in &self.shaping {
                let state = if d.held_for_secs > 0 {
                    format!("held for {}s", d.held_for_secs)
                } else {
                    "sending".to_string()
                };
                let _ = writeln!(
                    out,
                    "{:<32} {state}, at {:.0}% of its limits, {} running, {} push-back(s){}",
                    d.destination,
                    d.limits * 100.0,
                    d.active,
                    d.pushbacks,
                    d.reason
                        .as_ref()
                        .map(|r| format!("; last: {r}"))
                        .unwrap_or_default()
                );
            }
        }
        out
    }
}

/// A page of `herald queue list`: at most `limit` messages whose id sorts after `after`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// How many messages (none: all).
    pub limit: Option<usize>,
    /// Only ids after this one (the last id of the previous page).
    pub after: Option<String>,
}

impl Page {
    /// This page of `views` (already in id order).
    pub fn of(&self, views: Vec<MessageView>) -> Vec<MessageView> {
        let after = self.after.as_deref().unwrap_or("");
        views
            .into_iter()
            .filter(|v| v.id.as_str() > after)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

impl QueueManager {
    /// The summary of the queue: this node's, or with `[cluster]` the whole cluster's.
    pub async fn summary(&self) -> Result<QueueSummary, Control> {
        let now = crate::clock::unix_now();
        if let Some(leases) = self.inner.spool.leases() {
            // Counted by the database; what is in flight is known here for this node only.
            let (in_flight, recovering) = {
                let table = self.inner.table();
                (table.in_flight(), table.recovering)
            };
            let summary = cluster_summary(leases, now, in_flight)
                .await
                .map_err(|e| Control::Failed(format!("cannot read the cluster's queue: {e}")))?;
            return Ok(QueueSummary {
                recovering,
                ..summary
            });
        }
        // The table keeps the counts: no walk over the queue.
        let (tally, recovering) = {
            let table = self.inner.table();
            (table.tally(now), table.recovering)
        };
        Ok(QueueSummary {
            recovering,
            ..tally.finish()
        })
    }

    /// A page of the queue in id order: only the page's messages are read from the spool
    /// (with `[cluster]`, from the database by the primary key).
    pub async fn page(&self, page: &Page) -> Result<Vec<MessageView>, Control> {
        if let Some(leases) = self.inner.spool.leases() {
            let entries = leases
                .list_page(page.after.as_deref(), page.limit)
                .await
                .map_err(|e| Control::Failed(format!("cannot read the cluster's queue: {e}")))?;
            let table = self.inner.table();
            return Ok(entries
                .iter()
                .map(|e| {
                    let in_flight = table.get(&e.message.id).is_some_and(|l| l.in_flight());
                    MessageView::of_cluster(e, in_flight)
                })
                .collect());
        }
        let ids = self
            .inner
            .table()
            .page(page.after.as_deref(), page.limit.unwrap_or(usize::MAX));
        Ok(self.views_of(&ids).await)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::spool::{DeliveryState, Envelope, TlsRequest};

    /// A spooled message of `app` to `rcpts`, accepted at `received_at`, for the queue's tests.
    pub(in crate::queue) fn message(
        id: &str,
        app: Option<&str>,
        rcpts: &[&str],
        received_at: u64,
    ) -> SpooledMessage {
        let envelope = Envelope {
            app: app.map(str::to_string),
            mail_from: "a@example.test".into(),
            mail_from_params: vec![],
            recipients: rcpts.iter().map(|r| r.to_string()).collect(),
            received_at,
            client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            helo: "client".into(),
            tls: None,
            tls_report: false,
            tls_request: TlsRequest::default(),
            return_path_domain: None,
        };
        SpooledMessage {
            id: id.into(),
            state: DeliveryState::new(&envelope),
            envelope,
            size: 100,
        }
    }

    #[test]
    fn counts_messages_and_waiting_recipients_per_domain_app_and_age() {
        let now = 1_000_000;
        let mut tally = Tally::default();
        tally.add(
            &message(
                "a",
                Some("shop"),
                &["x@Big.test", "y@big.test", "z@small.test"],
                now - 10,
            ),
            false,
            now,
        );
        let mut done = message("b", None, &["w@big.test", "v@small.test"], now - 7200);
        done.state.recipients[1].status = RecipientStatus::Delivered;
        tally.add(&done, true, now);
        let s = tally.finish();
        assert_eq!(
            (s.messages, s.recipients, s.in_flight, s.bytes),
            (2, 4, 1, 200)
        );
        let row = |rows: &[Count], key: &str| {
            rows.iter()
                .find(|c| c.key == key)
                .map(|c| (c.messages, c.recipients))
        };
        assert_eq!(s.domains[0].key, "big.test");
        assert_eq!(row(&s.domains, "big.test"), Some((2, 3)));
        assert_eq!(row(&s.domains, "small.test"), Some((1, 1)));
        assert_eq!(row(&s.apps, "shop"), Some((1, 3)));
        assert_eq!(row(&s.apps, "-"), Some((1, 1)));
        assert_eq!(row(&s.ages, "< 5m"), Some((1, 3)));
        assert_eq!(row(&s.ages, "1h - 6h"), Some((1, 1)));
        assert!(s.render().contains("2 message(s), 4 recipient(s) waiting"));
    }

    #[test]
    fn the_databases_age_buckets_are_the_summarys() {
        // PostgreSQL buckets ages by AGE_BOUNDS (width_bucket); bucket i must be age_bucket's.
        for (i, bound) in AGE_BOUNDS.iter().enumerate() {
            assert_eq!(age_bucket(bound - 1), i);
            assert_eq!(age_bucket(*bound), i + 1);
        }
    }

    #[test]
    fn a_page_starts_after_the_given_id() {
        let views: Vec<MessageView> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| MessageView::of(&message(id, None, &["x@y.test"], 0), false))
            .collect();
        let ids = |p: Page| {
            p.of(views.clone())
                .into_iter()
                .map(|v| v.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(Page {
                limit: Some(2),
                after: None
            }),
            ["a", "b"]
        );
        assert_eq!(
            ids(Page {
                limit: Some(2),
                after: Some("b".into())
            }),
            ["c", "d"]
        );
        assert_eq!(
            ids(Page {
                limit: None,
                after: Some("c".into())
            }),
            ["d"]
        );
    }
}
