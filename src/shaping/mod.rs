//! Traffic shaping per destination (issue 29): limits on connections, messages per connection
//! and messages per minute for each destination (a provider's MX hosts grouped by
//! [`rules`]), and an automatic answer when a destination pushes back — a reputation or rate
//! deferral suspends it, any other `421` pauses it, both halve its limits — after which every
//! delivered message wins back a step of them (additive increase, multiplicative decrease).
//!
//! Delivery asks [`Shaper::admit`] before it connects to an MX host and tells
//! [`Shaper::observe`] what the host answered. A held destination's messages are not
//! attempted: they wait, without an attempt counted, until the hold ends.
//!
//! The state lives for the process (one table, like [`crate::metrics`]): a configuration
//! reload replaces the rules, not what destinations said. With `[cluster]`, push-backs are
//! shared through the database ([`shared`]), so every node slows down together, and each
//! node takes its share of every limit, so the cluster together stays within it.

pub(crate) mod metrics;
mod rules;
pub(crate) mod shared;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub(crate) use rules::{Destination, reaction};
pub(crate) use state::Reaction;
use state::{Decision, DestState};

use crate::config::{Config, ShapingConfig};
use crate::reply::EnhancedStatus;

/// Every destination's state in this process.
fn states() -> MutexGuard<'static, HashMap<String, DestState>> {
    static STATES: OnceLock<Mutex<HashMap<String, DestState>>> = OnceLock::new();
    STATES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The shaping rules of one configuration; cheap to clone.
#[derive(Clone)]
pub(crate) struct Shaper {
    inner: Arc<Settings>,
}

struct Settings {
    enabled: bool,
    matcher: rules::Matcher,
    suspend_for: Duration,
    pause_for: Duration,
    recover_step: f64,
    min_factor: f64,
}

/// A destination held back: its messages wait `wait` without an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The destination's name.
    pub destination: String,
    /// How long until it may be tried again.
    pub wait: Duration,
}

/// A running delivery to a destination; dropping it frees its connection slot.
pub(crate) struct Ticket {
    destination: Option<String>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(name) = self.destination.take() {
            let mut all = states();
            let Some(s) = all.get_mut(&name) else {
                return;
            };
            s.finished();
            let freed = Arc::clone(&s.freed);
            if s.is_idle(Instant::now()) {
                all.remove(&name);
            }
            drop(all);
            // A slot freed: this destination's waiters look again (a waiter that finds its
            // state replaced registers anew, see `admit`).
            freed.notify_waiters();
        }
    }
}

impl Shaper {
    /// The rules of `cfg` (`[shaping]`, and `[delivery] max_connections_per_host` for a
    /// destination without a connection limit of its own).
    pub(crate) fn new(cfg: &Config) -> Shaper {
        Shaper::of(&cfg.shaping, cfg.delivery.max_connections_per_host as u32)
    }

    /// The rules of a `[shaping]` section with the pool's per-host limit `per_host`.
    pub(crate) fn of(cfg: &ShapingConfig, per_host: u32) -> Shaper {
        Shaper {
            inner: Arc::new(Settings {
                enabled: cfg.enabled,
                matcher: rules::Matcher::new(cfg, per_host.max(1)),
                suspend_for: cfg.suspend_for,
                pause_for: cfg.pause_for,
                recover_step: cfg.recover_step,
                min_factor: cfg.min_factor,
            }),
        }
    }

    /// The destination MX host `mx` belongs to, with this node's share of its limits.
    pub(crate) fn destination(&self, mx: &str) -> Destination {
        self.inner.matcher.destination(mx, shared::nodes())
    }

    /// Waits for a turn to deliver to `mx`'s destination (within its connection and rate
    /// limits); `Err` when it is held back (suspended, paused, or far over its rate).
    pub(crate) async fn admit(&self, mx: &str) -> Result<Ticket, Held> {
        if !self.inner.enabled {
            return Ok(Ticket { destination: None });
        }
        let dest = self.destination(mx);
        // The destination's wake-up once this delivery has had to wait for a slot.
        let mut slot: Option<Arc<Notify>> = None;
        loop {
            // Registered before the state is read, so a slot freed in between wakes it.
            let registered = slot.clone();
            let freed = registered.as_deref().map(Notify::notified);
            tokio::pin!(freed);
            if let Some(f) = freed.as_mut().as_pin_mut() {
                f.enable();
            }
            let (decision, current) = {
                let mut all = states();
                let state = all.entry(dest.name.clone()).or_default();
                let decision = state.admit(Instant::now(), dest.limits);
                let current = Arc::clone(&state.freed);
                if state.is_idle(Instant::now()) {
                    all.remove(&dest.name);
                }
                (decision, current)
            };
            match decision {
                Decision::Go => {
                    return Ok(Ticket {
                        destination: Some(dest.name),
                    });
                }
                Decision::Defer(wait) => {
                    tracing::debug!(destination = %dest.name,
                        wait = %humantime::format_duration(Duration::from_secs(wait.as_secs())),
                        "traffic shaping: not attempted now, the destination is held back or over its rate");
                    return Err(Held {
                        destination: dest.name,
                        wait,
                    });
                }
                Decision::Wait(at_most) => match freed.as_mut().as_pin_mut() {
                    Some(f) if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) => {
                        tokio::select! {
                            _ = f => {}
                            _ = tokio::time::sleep(at_most) => {}
                        }
                    }
                    // First wait, or the state was made anew: register with its wake-up and
                    // look again at once.
                    _ => slot = Some(current),
                },
            }
        }
    }

    /// What `mx` answered (any reply to the session or the transaction that was not a
    /// success): a push-back holds its destination and halves its limits.
    pub(crate) fn observe(&self, mx: &str, code: u16, status: Option<EnhancedStatus>, text: &str) {
        if !self.inner.enabled {
            return;
        }
        let Some(how) = reaction(code, status, text) else {
            return;
        };
        let hold = match how {
            Reaction::Suspend => self.inner.suspend_for,
            Reaction::Pause => self.inner.pause_for,
        };
        let dest = self.destination(mx);
        let why = match status {
            Some(s) => format!("{code} {s} {text}"),
            None => format!("{code} {text}"),
        };
        self.push_back(&dest.name, hold, &why, how);
        shared::publish(&dest.name, hold, &why);
    }

    /// Applies a push-back to `name` (seen here, or by another node of the cluster).
    pub(crate) fn push_back(&self, name: &str, hold: Duration, why: &str, how: Reaction) {
        let factor = {
            let mut all = states();
            let s = all.entry(name.to_string()).or_default();
            s.push_back(Instant::now(), hold, self.inner.min_factor, why);
            s.factor
        };
        let what = match how {
            Reaction::Suspend => {
                "traffic shaping: destination suspended after a reputation or rate deferral"
            }
            Reaction::Pause if hold.is_zero() => "traffic shaping: destination slowed after a 421",
            Reaction::Pause => "traffic shaping: destination paused after a 421",
        };
        tracing::warn!(destination = %name, hold = %humantime::format_duration(hold),
            limits = factor, reply = %why, "{what}");
        metrics::pushed_back(name, factor);
    }

    /// A message to `mx` was delivered: its destination wins back a step of its limits.
    pub(crate) fn delivered(&self, mx: &str) {
        if !self.inner.enabled {
            return;
        }
        let dest = self.destination(mx);
        let (recovered, factor) = {
            let mut all = states();
            match all.get_mut(&dest.name) {
                Some(s) => (s.delivered(self.inner.recover_step), s.factor),
                None => return,
            }
        };
        if factor < 1.0 || recovered {
            metrics::recovering(&dest.name, factor);
        }
        if recovered {
            tracing::info!(destination = %dest.name,
                "traffic shaping: destination back to its full limits");
        }
    }

    /// Whether a connection to `mx` that carried `deliveries` messages has had its share and
    /// is closed rather than kept for reuse.
    pub(crate) fn connection_spent(&self, mx: &str, deliveries: u32) -> bool {
        let limit = self.destination(mx).limits.messages_per_connection;
        self.inner.enabled && limit > 0 && deliveries >= limit
    }
}

/// Whether a reply is a reputation or rate deferral (the server means it, even on a reused
/// connection: never retried at once elsewhere).
pub(crate) fn is_reputation_deferral(
    code: u16,
    status: Option<EnhancedStatus>,
    text: &str,
) -> bool {
    reaction(code, status, text) == Some(Reaction::Suspend)
}

/// A destination's shaping state, as `herald queue summary` and the admin API show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DestinationView {
    /// The destination's name.
    pub destination: String,
    /// Fraction of its limits in force (1: full).
    pub limits: f64,
    /// Seconds until it may be tried again (0: not held).
    pub held_for_secs: u64,
    /// The reply that caused the last push-back.
    pub reason: Option<String>,
    /// Deliveries running now.
    pub active: u32,
    /// Push-backs seen since start.
    pub pushbacks: u64,
}

/// Every destination held back, slowed, or with deliveries running now, by name.
pub(crate) fn snapshot() -> Vec<DestinationView> {
    let now = Instant::now();
    let mut out: Vec<DestinationView> = states()
        .iter()
        .filter(|(_, s)| !s.is_idle(now))
        .map(|(name, s)| DestinationView {
            destination: name.clone(),
            limits: s.factor,
            held_for_secs: s.held_until.map_or(0, |u| {
                u.saturating_duration_since(now).as_secs_f64().ceil() as u64
            }),
            reason: s.reason.clone(),
            active: s.active,
            pushbacks: s.pushbacks,
        })
        .collect();
    out.sort_by(|a, b| a.destination.cmp(&b.destination));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShapingLimits;

    /// One connection to every destination, no built-in rules.
    fn one_at_a_time() -> Shaper {
        let cfg = ShapingConfig {
            builtin_rules: false,
            default_limits: ShapingLimits {
                connections: 1,
                ..ShapingLimits::default()
            },
            ..ShapingConfig::default()
        };
        Shaper::of(&cfg, 1)
    }

    // Paused time: a lost wake-up would show as the waiter's 2 s timer having run out.
    #[tokio::test(start_paused = true)]
    async fn a_finished_delivery_wakes_a_delivery_waiting_for_its_slot_at_once() {
        let shaper = one_at_a_time();
        let mx = "mx.wake.shaping-test.example";
        let other = "mx.other.shaping-test.example";
        let Ok(first) = shaper.admit(mx).await else {
            panic!("the first delivery goes at once");
        };
        let started = tokio::time::Instant::now();
        let waiter = {
            let s = shaper.clone();
            tokio::spawn(async move {
                let ticket = s.admit(mx).await;
                (ticket.is_ok(), started.elapsed())
            })
        };
        // Runs the waiter until it waits for the slot (current-thread runtime).
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the slot is taken: it waits");
        // Another destination's delivery ending does not take its turn.
        let Ok(elsewhere) = shaper.admit(other).await else {
            panic!("another destination has its own slot");
        };
        drop(elsewhere);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "still waiting for its own destination"
        );
        drop(first);
        let Ok((admitted, waited)) = waiter.await else {
            panic!("the waiter ran to the end");
        };
        assert!(admitted);
        assert_eq!(
            waited,
            Duration::ZERO,
            "woken by the freed slot, not by its timer"
        );
    }
}
