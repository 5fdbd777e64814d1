//! The `/metrics` families of bounces, complaints, suppression and the per-app guard, in
//! herald's one registry (registered by [`crate::metrics`]). Labels are bounded: classes and
//! reasons are fixed lists, apps come from the configuration.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLabels {
    app: String,
    window: String,
    kind: String,
}

#[derive(Default)]
struct Families {
    classified: Family<ClassLabels, Counter>,
    suppressions: Family<ReasonLabel, Counter>,
    suppressed_rcpt: Family<AppLabel, Counter>,
    complaints: Family<AppLabel, Counter>,
    refused_feedback: Family<ReasonLabel, Counter>,
    rates: Family<RateLabels, Gauge<f64, AtomicU64>>,
    paused: Family<AppLabel, Gauge>,
    pauses: Family<AppLabel, Counter>,
    paused_submissions: Family<AppLabel, Counter>,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(Families::default)
}

/// Adds the families to herald's registry.
pub fn register(registry: &mut Registry) {
    let f = families();
    registry.register(
        "herald_bounces_classified",
        "Remote refusals by class (hard, soft, block, throttle, other) and source (delivery, dsn)",
        f.classified.clone(),
    );
    registry.register(
        "herald_suppressions_added",
        "Suppression list entries added or renewed, by reason",
        f.suppressions.clone(),
    );
    registry.register(
        "herald_suppressed_recipients",
        "Recipients refused at RCPT because they are suppressed, by app",
        f.suppressed_rcpt.clone(),
    );
    registry.register(
        "herald_complaints",
        "Complaints (ARF reports) matched to an app",
        f.complaints.clone(),
    );
    registry.register(
        "herald_feedback_refused",
        "Bounces and complaints refused or ignored (bad_token, expired, unknown_recipient, malformed, flood)",
        f.refused_feedback.clone(),
    );
    registry.register(
        "herald_app_rate_percent",
        "Per-app rates over a rolling window (24h, 7d): hard_bounce, block, complaint, as percent of recipients sent",
        f.rates.clone(),
    );
    registry.register(
        "herald_app_paused",
        "1 while the app is paused by its guard",
        f.paused.clone(),
    );
    registry.register(
        "herald_app_pauses",
        "Times the guard paused an app",
        f.pauses.clone(),
    );
    registry.register(
        "herald_app_paused_submissions",
        "Submissions refused with 451 4.7.1 because the app is paused",
        f.paused_submissions.clone(),
    );
}

/// A refusal of `class` seen at delivery or in a returned DSN (`source`).
pub fn classified(class: &str, source: &str) {
    families()
        .classified
        .get_or_create(&ClassLabels {
            class: class.into(),
            source: source.into(),
        })
        .inc();
}

/// A suppression was added or renewed for `reason`.
pub fn suppression_added(reason: &str) {
    families()
        .suppressions
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
}

/// A recipient of `app` was refused at RCPT as suppressed.
pub fn suppressed_recipient(app: &str) {
    families()
        .suppressed_rcpt
        .get_or_create(&AppLabel { app: app.into() })
        .inc();
}

/// A complaint was matched to `app`.
pub fn complaint(app: &str) {
    families()
        .complaints
        .get_or_create(&AppLabel { app: app.into() })
        .inc();
}

/// A bounce or complaint was refused or ignored for `reason`.
pub fn feedback_refused(reason: &str) {
    families()
        .refused_feedback
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
}

/// `app`'s `kind` rate over `window` is now `percent`.
pub fn app_rate(app: &str, window: &str, kind: &str, percent: f64) {
    families()
        .rates
        .get_or_create(&RateLabels {
            app: app.into(),
            window: window.into(),
            kind: kind.into(),
        })
        .set(percent);
}

/// `app` is paused (`true`) or flowing.
pub fn app_paused(app: &str, paused: bool) {
    let f = families();
    f.paused
        .get_or_create(&AppLabel { app: app.into() })
        .set(paused as i64);
}

/// The guard paused `app`.
pub fn app_pause_started(app: &str) {
    families()
        .pauses
        .get_or_create(&AppLabel { app: app.into() })
        .inc();
}

/// A submission of paused `app` was refused.
pub fn paused_submission(app: &str) {
    families()
        .paused_submissions
        .get_or_create(&AppLabel { app: app.into() })
        .inc();
}
