//! The `/metrics` families of traffic shaping, in herald's one registry (registered by
//! [`crate::metrics`]). Destinations are labels only once they pushed back, at most
//! [`MAX_DESTINATIONS`] of them (the rest count as `other`).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Distinct destinations given their own label.
pub(crate) const MAX_DESTINATIONS: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

#[derive(Default)]
struct Families {
    limits: Family<DestinationLabel, Gauge<f64, AtomicU64>>,
    held: Family<DestinationLabel, Gauge>,
    pushbacks: Family<DestinationLabel, Counter>,
    seen: Mutex<HashSet<String>>,
}

fn families() -> &'static Families {
    static F: OnceLock<Families> = OnceLock::new();
    F.get_or_init(Families::default)
}

/// Adds the families to herald's registry.
pub(crate) fn register(registry: &mut Registry) {
    let f = families();
    registry.register(
        "herald_shaping_limits_ratio",
        "Fraction of its limits a destination that pushed back is allowed now (1: full)",
        f.limits.clone(),
    );
    registry.register(
        "herald_shaping_held",
        "1 while a destination is suspended or paused after a push-back",
        f.held.clone(),
    );
    registry.register(
        "herald_shaping_pushbacks",
        "Reputation and rate deferrals (and other 421s) that slowed a destination down",
        f.pushbacks.clone(),
    );
}

fn label(destination: &str) -> DestinationLabel {
    let f = families();
    let mut seen = f.seen.lock().unwrap_or_else(|p| p.into_inner());
    let destination = if seen.contains(destination)
        || seen.len() < MAX_DESTINATIONS && seen.insert(destination.to_string())
    {
        destination.to_string()
    } else {
        "other".to_string()
    };
    DestinationLabel { destination }
}

/// `destination` pushed back: now held, at `factor` of its limits.
pub(super) fn pushed_back(destination: &str, factor: f64) {
    let f = families();
    let l = label(destination);
    f.pushbacks.get_or_create(&l).inc();
    f.held.get_or_create(&l).set(1);
    f.limits.get_or_create(&l).set(factor);
}

/// `destination` is at `factor` of its limits and no longer held.
pub(super) fn recovering(destination: &str, factor: f64) {
    let f = families();
    let l = label(destination);
    f.held.get_or_create(&l).set(0);
    f.limits.get_or_create(&l).set(factor);
}
