//! Flushing: pending counts become reports in the outbox, and each outbox report goes to its
//! domain's `rua` addresses; run periodically, from the admin endpoint and from the CLI.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster::Days;
use super::send::{ReportSender, SendOutcome};
use super::store::OutboxItem;
use super::{FLUSH_PATH, OUTBOX_MAX_AGE, TlsReporter};
use crate::clock::unix_now;

/// What one flush did, for logs, `herald report flush` and the admin endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlushSummary {
    /// Reports built from pending counts by this flush.
    pub built: usize,
    /// `domain: destinations` for each report sent.
    pub sent: Vec<String>,
    /// `domain: reason` for each report kept for the next flush.
    pub kept: Vec<String>,
    /// `domain: reason` for each report given up (no `_smtp._tls` record, too old).
    pub dropped: Vec<String>,
}

/// Sends every pending report now: builds reports from the counts, then delivers each one in
/// the outbox (`mailto:` into the spool, `https:` by POST). Undelivered reports stay in the
/// outbox for the next flush. Call from the periodic task, the admin endpoint and the CLI.
pub async fn flush(reporter: &TlsReporter, sender: &ReportSender) -> anyhow::Result<FlushSummary> {
    flush_days(reporter, sender, Days::All).await
}

/// [`flush`] of `days`: with `[cluster]`, through the cluster's database (see
/// [`super::cluster`]); `days` matters only there (a single node reports every pending day).
async fn flush_days(
    reporter: &TlsReporter,
    sender: &ReportSender,
    days: Days,
) -> anyhow::Result<FlushSummary> {
    let now = unix_now();
    if let Some(cluster) = &reporter.cluster {
        reporter
            .push_to_cluster()
            .await
            .map_err(|e| anyhow::anyhow!("tls-rpt: cannot move the counts to the cluster: {e}"))?;
        let who = reporter
            .shared
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let built = cluster
            .build(days, &who, now)
            .await
            .map_err(|e| anyhow::anyhow!("tls-rpt: cannot build the cluster's reports: {e}"))?;
        let mut summary = FlushSummary {
            built,
            ..FlushSummary::default()
        };
        // Each report no other node is sending, under its row lock.
        let outbox = |e| anyhow::anyhow!("tls-rpt: cluster report outbox: {e}");
        let mut seen = Vec::new();
        while let Some(mut locked) = cluster.lock_next(&mut seen).await.map_err(outbox)? {
            let done = send_one(sender, &mut locked.item, now, &mut summary).await;
            locked.finish(done).await.map_err(outbox)?;
        }
        return Ok(summary);
    }
    let shared = reporter.shared.clone();
    let pending = shared.lock_counts().len();
    let items = tokio::task::spawn_blocking(move || shared.take_into_outbox(now))
        .await
        .map_err(|e| anyhow::anyhow!("tls-rpt: flush task failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("tls-rpt: cannot write the report outbox: {e}"))?;
    let mut summary = FlushSummary {
        built: pending,
        ..FlushSummary::default()
    };
    for mut item in items {
        let before = item.delivered.len();
        let domain = item.domain.clone();
        let remove = send_one(sender, &mut item, now, &mut summary).await;
        if let Some(dir) = &reporter.shared.dir {
            let result = if remove {
                dir.remove_item(&item)
            } else if item.delivered.len() != before {
                dir.save_item(&item)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::error!(domain = %domain, "tls-rpt: cannot update the outbox: {e}");
            }
        }
    }
    Ok(summary)
}

/// Sends one outbox report (or gives it up when too old), noting the outcome in `summary`;
/// true when the report is done with (sent or given up), false to keep it for a retry.
async fn send_one(
    sender: &ReportSender,
    item: &mut OutboxItem,
    now: u64,
    summary: &mut FlushSummary,
) -> bool {
    let outcome = if now.saturating_sub(item.created_at) > OUTBOX_MAX_AGE {
        None
    } else {
        Some(sender.send(item).await)
    };
    let domain = item.domain.clone();
    match outcome {
        None => {
            summary
                .dropped
                .push(format!("{domain}: undelivered for 7 days, given up"));
            true
        }
        Some(SendOutcome::Sent(to)) => {
            summary.sent.push(format!("{domain}: {}", to.join(", ")));
            true
        }
        Some(SendOutcome::NoRecipient) => {
            summary
                .dropped
                .push(format!("{domain}: no _smtp._tls record"));
            true
        }
        Some(SendOutcome::Retry(why)) => {
            tracing::warn!(domain = %domain, "tls-rpt report kept for retry: {why}");
            summary.kept.push(format!("{domain}: {why}"));
            false
        }
    }
}

/// The admin route `POST /report/flush` ([`FLUSH_PATH`]): runs [`flush`] in the serving herald
/// and answers its [`FlushSummary`]. Merge it into the admin router.
pub fn routes(reporter: Arc<TlsReporter>, sender: Arc<ReportSender>) -> axum::Router {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    axum::Router::new().route(
        FLUSH_PATH,
        axum::routing::post(move || async move {
            match flush(&reporter, &sender).await {
                Ok(summary) => axum::Json(summary).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
            }
        }),
    )
}

/// Runs [`flush`] every `[report] interval` until the runtime stops, while `[report] enabled`
/// (both read from `sender` before each wait, so a reload changes them).
pub fn spawn_periodic(
    reporter: Arc<TlsReporter>,
    sender: Arc<ReportSender>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (enabled, interval) = sender.schedule();
            tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
            if !enabled || !sender.schedule().0 {
                continue;
            }
            // In a cluster only ended days: one report per domain and day, whichever node's
            // timer fires first.
            match flush_days(&reporter, &sender, Days::Ended).await {
                Ok(s) if s.sent.is_empty() && s.kept.is_empty() && s.dropped.is_empty() => {}
                Ok(s) => tracing::info!(
                    built = s.built,
                    sent = s.sent.len(),
                    kept = s.kept.len(),
                    dropped = s.dropped.len(),
                    "tls-rpt reports flushed"
                ),
                Err(e) => tracing::error!("tls-rpt flush failed: {e:#}"),
            }
        }
    })
}
