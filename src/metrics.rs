//! What operators graph, in the Prometheus exposition format (`GET /metrics` on the admin
//! endpoint), through the `prometheus-client` crate: every family has `# HELP` and `# TYPE`.
//!
//! One process-wide registry, so each stage records with a one-line call where the event
//! happens (no handle threaded through every constructor). Label sets are bounded: apps and
//! DKIM domains come from the configuration, reasons and TLS results from fixed lists, and
//! destination domains are kept to the first [`MAX_DOMAINS`] seen — the rest count as `other`.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Distinct destination domains given their own label; later ones are counted as `other`.
pub(crate) const MAX_DOMAINS: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    app: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabel {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    policy: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DkimLabels {
    domain: String,
    algorithm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

/// Every metric herald exposes.
struct Metrics {
    registry: Registry,
    accepted: Family<AppLabel, Counter>,
    refused: Family<RefusalLabels, Counter>,
    delivered: Family<DomainLabel, Counter>,
    deferred: Family<DomainLabel, Counter>,
    bounced: Family<DomainLabel, Counter>,
    dsn_sent: Counter,
    tls: Family<TlsLabels, Counter>,
    dkim: Family<DkimLabels, Counter>,
    reloads: Family<OutcomeLabel, Counter>,
    queue_messages: Gauge,
    queue_oldest: Gauge<f64, AtomicU64>,
    connections: Family<ListenerLabel, Gauge>,
    submission_latency: Histogram,
    delivery_latency: Histogram,
    domains: Mutex<HashSet<String>>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            accepted: Family::default(),
            refused: Family::default(),
            delivered: Family::default(),
            deferred: Family::default(),
            bounced: Family::default(),
            dsn_sent: Counter::default(),
            tls: Family::default(),
            dkim: Family::default(),
            reloads: Family::default(),
            queue_messages: Gauge::default(),
            queue_oldest: Gauge::default(),
            connections: Family::default(),
            // 1 ms … ~33 s: an fsync is milliseconds, a stalled disk seconds.
            submission_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            // 100 ms … ~2.3 days: most mail leaves in seconds, retries take hours.
            delivery_latency: Histogram::new(exponential_buckets(0.1, 4.0, 13)),
            domains: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        registry.register(
            "herald_messages_accepted",
            "Messages accepted (250 after DATA), by app",
            m.accepted.clone(),
        );
        registry.register(
            "herald_messages_refused",
            "Messages and commands refused with an SMTP error, by app and reason",
            m.refused.clone(),
        );
        registry.register(
            "herald_recipients_delivered",
            "Recipients delivered (250 from the receiving MX), by destination domain",
            m.delivered.clone(),
        );
        registry.register(
            "herald_recipients_deferred",
            "Delivery attempts deferred (temporary failure, retried), by destination domain",
            m.deferred.clone(),
        );
        registry.register(
            "herald_recipients_bounced",
            "Recipients bounced (permanent failure or expired), by destination domain",
            m.bounced.clone(),
        );
        registry.register(
            "herald_dsn_sent",
            "Delivery status notifications (bounces, delay notices) queued",
            m.dsn_sent.clone(),
        );
        registry.register(
            "herald_tls_sessions",
            "Outbound SMTP sessions by TLS policy (mta-sts-enforce, mta-sts-testing, dane, \
             required, opportunistic) and result (success, or the TLS-RPT failure type, or plaintext)",
            m.tls.clone(),
        );
        registry.register(
            "herald_dkim_signatures",
            "DKIM signatures made, by signing domain and algorithm",
            m.dkim.clone(),
        );
        registry.register(
            "herald_config_reloads",
            "Configuration reloads (SIGHUP, herald reload), by outcome",
            m.reloads.clone(),
        );
        registry.register(
            "herald_queue_messages",
            "Messages in the queue (waiting, held or being delivered)",
            m.queue_messages.clone(),
        );
        registry.register(
            "herald_queue_oldest_message_age_seconds",
            "Age of the oldest message in the queue (0 when empty)",
            m.queue_oldest.clone(),
        );
        registry.register(
            "herald_smtp_connections",
            "Open inbound SMTP connections, by listener",
            m.connections.clone(),
        );
        registry.register(
            "herald_submission_duration_seconds",
            "From the end of DATA to herald's 250 (signing and fsync included)",
            m.submission_latency.clone(),
        );
        registry.register(
            "herald_delivery_duration_seconds",
            "From acceptance to delivery, per delivered recipient (retries included)",
            m.delivery_latency.clone(),
        );
        crate::events::stats::register(&mut registry);
        crate::suppress::metrics::register(&mut registry);
        crate::shaping::metrics::register(&mut registry);
        Metrics { registry, ..m }
    }

    /// `domain` as a label: itself while fewer than [`MAX_DOMAINS`] were seen, else `other`.
    fn domain_label(&self, domain: &str) -> DomainLabel {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut seen = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        let domain =
            if seen.contains(&domain) || seen.len() < MAX_DOMAINS && seen.insert(domain.clone()) {
                domain
            } else {
                "other".to_string()
            };
        DomainLabel { domain }
    }
}

/// A message was accepted for `app` (`-` for the plain listener).
pub(crate) fn message_accepted(app: &str) {
    metrics()
        .accepted
        .get_or_create(&AppLabel { app: app.into() })
        .inc();
}

/// A command or message of `app` was refused with `reply` (`550 5.7.1 …`); the reason label
/// is derived from the reply's code, so it stays a small fixed set.
pub(crate) fn message_refused(app: &str, reply: &str) {
    metrics()
        .refused
        .get_or_create(&RefusalLabels {
            app: app.into(),
            reason: refusal_reason(reply).into(),
        })
        .inc();
}

/// The reason label for an SMTP refusal, from its (enhanced) status code.
pub(crate) fn refusal_reason(reply: &str) -> &'static str {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    let enhanced = words.next().unwrap_or("");
    match (code, enhanced) {
        (_, "5.7.8") => "auth_failed",
        (_, "5.7.0") | ("530", _) => "auth_required",
        (_, "5.7.11") | ("538", _) => "tls_required",
        ("450", "4.7.1") => "rate_limit",
        ("421", "4.7.0") => "connection_limit",
        (_, "5.7.1") => "policy",
        (_, "5.3.4") | ("552", _) => "size",
        (_, "4.5.3") => "too_many_recipients",
        (_, "5.6.0") => "malformed_message",
        (_, "4.3.0") | ("451", _) => "local_error",
        (_, "4.4.2") => "timeout",
        (c, _) if c.starts_with('5') && c.len() == 3 && c.as_bytes()[1] == b'0' => "syntax",
        _ => "other",
    }
}

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The MX took it.
    Delivered,
    /// Temporary failure: retried later.
    Deferred,
    /// Permanent failure or expired: bounced.
    Bounced,
}

/// A recipient at `domain` came to `outcome`.
pub(crate) fn recipient(outcome: Outcome, domain: &str) {
    let m = metrics();
    let label = m.domain_label(domain);
    match outcome {
        Outcome::Delivered => m.delivered.get_or_create(&label).inc(),
        Outcome::Deferred => m.deferred.get_or_create(&label).inc(),
        Outcome::Bounced => m.bounced.get_or_create(&label).inc(),
    };
}

/// A delivered recipient's message was accepted `latency` ago.
pub(crate) fn delivered_after(latency: Duration) {
    metrics().delivery_latency.observe(latency.as_secs_f64());
}

/// A DSN (bounce or delay notice) was queued.
pub(crate) fn dsn_sent() {
    metrics().dsn_sent.inc();
}

/// An outbound session ran under `policy` (`mta-sts-enforce`, `mta-sts-testing`, `dane`,
/// `required`, `opportunistic`) with `result` (`success`, a TLS-RPT result type, or `plaintext`).
pub(crate) fn tls_session(policy: &str, result: &str) {
    metrics()
        .tls
        .get_or_create(&TlsLabels {
            policy: policy.into(),
            result: result.into(),
        })
        .inc();
}

/// A DKIM signature was made for `domain` with `algorithm` (`rsa`, `ed25519`).
pub(crate) fn dkim_signature(domain: &str, algorithm: &str) {
    metrics()
        .dkim
        .get_or_create(&DkimLabels {
            domain: domain.to_ascii_lowercase(),
            algorithm: algorithm.into(),
        })
        .inc();
}

/// A configuration reload came to `outcome` (`applied` or `refused`).
pub(crate) fn reload(outcome: &str) {
    metrics()
        .reloads
        .get_or_create(&OutcomeLabel {
            outcome: outcome.into(),
        })
        .inc();
}

/// A submission's end of DATA was answered after `latency`.
pub(crate) fn submission_answered(latency: Duration) {
    metrics().submission_latency.observe(latency.as_secs_f64());
}

/// The queue holds `messages`, the oldest accepted `oldest` ago.
pub(crate) fn set_queue(messages: usize, oldest: Duration) {
    let m = metrics();
    m.queue_messages.set(messages as i64);
    m.queue_oldest.set(oldest.as_secs_f64());
}

/// An open inbound connection on `listener`, counted until dropped.
pub(crate) struct ConnectionGauge {
    listener: &'static str,
}

/// Counts an inbound connection on `listener` while the returned guard lives.
pub(crate) fn connection_opened(listener: &'static str) -> ConnectionGauge {
    metrics()
        .connections
        .get_or_create(&ListenerLabel {
            listener: listener.into(),
        })
        .inc();
    ConnectionGauge { listener }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics()
            .connections
            .get_or_create(&ListenerLabel {
                listener: self.listener.into(),
            })
            .dec();
    }
}

/// The exposition text (OpenMetrics / Prometheus text format).
pub(crate) fn render() -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &metrics().registry) {
        tracing::error!("metrics: cannot encode: {e}");
    }
    out
}

/// The `Content-Type` of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_a_fixed_set() {
        assert_eq!(
            refusal_reason("535 5.7.8 authentication credentials invalid"),
            "auth_failed"
        );
        assert_eq!(
            refusal_reason("450 4.7.1 app billing over its rate"),
            "rate_limit"
        );
        assert_eq!(refusal_reason("550 5.7.1 sender not allowed"), "policy");
        assert_eq!(refusal_reason("552 5.3.4 too big"), "size");
        assert_eq!(refusal_reason("500 5.5.2 line too long"), "syntax");
        assert_eq!(refusal_reason("nonsense"), "other");
    }

    #[test]
    fn domains_beyond_the_cap_are_other() {
        let m = Metrics::new();
        for i in 0..MAX_DOMAINS {
            assert_eq!(
                m.domain_label(&format!("d{i}.test")).domain,
                format!("d{i}.test")
            );
        }
        assert_eq!(m.domain_label("late.test").domain, "other");
        assert_eq!(m.domain_label("D0.test.").domain, "d0.test");
    }
}
