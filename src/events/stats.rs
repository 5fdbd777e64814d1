//! The `/metrics` families of the message history and the webhooks: events stored and lost,
//! and per app the webhook backlog, deliveries, failures, events dropped after a day of
//! retries and events refused because the outbox was full. Registered into herald's registry
//! by [`register`] (one line in `crate::metrics`); updated from `history` and `webhook`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `app` label of the webhook families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The app (its `[apps]` name).
    pub app: String,
}

/// Every history and webhook metric.
pub struct Stats {
    /// Events written to the history store.
    pub stored: Counter,
    /// Events lost before the store (a subscriber's channel was full, or a write failed).
    pub lost: Counter,
    /// Events waiting in the outbox (not yet acknowledged by the endpoint), by app.
    pub backlog: Family<AppLabel, Gauge>,
    /// Batches the endpoint acknowledged (2xx), by app.
    pub delivered: Family<AppLabel, Counter>,
    /// POST attempts that failed (refused, timed out, non-2xx), by app.
    pub failures: Family<AppLabel, Counter>,
    /// Events given up after the retry period, by app.
    pub dropped: Family<AppLabel, Counter>,
    /// Events not queued because the app's outbox was full, by app.
    pub overflow: Family<AppLabel, Counter>,
}

/// The process's history and webhook metrics.
pub fn stats() -> &'static Stats {
    static STATS: OnceLock<Stats> = OnceLock::new();
    STATS.get_or_init(|| Stats {
        stored: Counter::default(),
        lost: Counter::default(),
        backlog: Family::default(),
        delivered: Family::default(),
        failures: Family::default(),
        dropped: Family::default(),
        overflow: Family::default(),
    })
}

/// The label for `app`.
pub fn app(app: &str) -> AppLabel {
    AppLabel {
        app: app.to_string(),
    }
}

/// Adds the families to herald's registry.
pub fn register(registry: &mut Registry) {
    let s = stats();
    registry.register(
        "herald_events_stored",
        "Message events (accepted, delivered, bounced, ...) written to the history store",
        s.stored.clone(),
    );
    registry.register(
        "herald_events_lost",
        "Message events lost before the history store (its queue was full, or a write failed)",
        s.lost.clone(),
    );
    registry.register(
        "herald_webhook_backlog_events",
        "Events waiting in the webhook outbox, by app",
        s.backlog.clone(),
    );
    registry.register(
        "herald_webhook_batches_delivered",
        "Webhook batches the app's endpoint acknowledged with 2xx, by app",
        s.delivered.clone(),
    );
    registry.register(
        "herald_webhook_failures",
        "Webhook POSTs that failed (refused, timed out, non-2xx, address not allowed), by app",
        s.failures.clone(),
    );
    registry.register(
        "herald_webhook_events_dropped",
        "Webhook events given up after the retry period, by app",
        s.dropped.clone(),
    );
    registry.register(
        "herald_webhook_events_overflowed",
        "Webhook events not queued because the app's outbox was full, by app",
        s.overflow.clone(),
    );
}
