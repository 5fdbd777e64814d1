//! One destination's shaping state as a pure value: how many deliveries run at once, the
//! messages-per-minute bucket, and the AIMD factor — halved by each push-back (with a hold:
//! suspended or paused until a time), raised by a fixed step with each delivery until the
//! destination is back to its full limits. Times are passed in, so the rules are tested
//! without a clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::ShapingLimits;

/// A rate wait this short is waited out in place; a longer one defers the message.
pub(super) const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);

/// What a delivery to the destination may do now.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Go (one more delivery now counts as active).
    Go,
    /// Wait for a running delivery to finish (or for `Duration` at most), then ask again.
    Wait(Duration),
    /// Not now: the message waits this long (suspended, paused or far over its rate).
    Defer(Duration),
}

/// How hard a destination pushed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// A reputation or rate deferral (`4.7.28`, `4.7.650`, `TSS04`): suspend for a while.
    Suspend,
    /// Any other `421`: the server sheds load; pause briefly.
    Pause,
}

/// One destination's state.
#[derive(Debug, Clone)]
pub(super) struct DestState {
    /// Fraction of the limits in force (1.0: full).
    pub(super) factor: f64,
    /// Suspended or paused until then.
    pub(super) held_until: Option<Instant>,
    /// The reply that caused the last push-back.
    pub(super) reason: Option<String>,
    /// Deliveries running now.
    pub(super) active: u32,
    /// Push-backs seen since start.
    pub(super) pushbacks: u64,
    /// Wakes the deliveries waiting for a connection slot of this destination when one ends
    /// (only this destination's: a delivery elsewhere ending wakes none of them).
    pub(super) freed: Arc<Notify>,
    tokens: f64,
    refilled: Option<Instant>,
}

impl Default for DestState {
    fn default() -> Self {
        DestState {
            factor: 1.0,
            held_until: None,
            reason: None,
            active: 0,
            pushbacks: 0,
            freed: Arc::default(),
            tokens: 0.0,
            refilled: None,
        }
    }
}

/// Connections allowed at `factor` of `limit` (at least one).
pub(super) fn scaled(limit: u32, factor: f64) -> u32 {
    ((f64::from(limit) * factor).ceil() as u32).clamp(1, limit.max(1))
}

impl DestState {
    /// Whether a delivery may start at `now` under `limits` (`connections` already resolved
    /// to a number); counts it as active when it may.
    pub(super) fn admit(&mut self, now: Instant, limits: ShapingLimits) -> Decision {
        if let Some(until) = self.held_until {
            if until > now {
                return Decision::Defer(until - now);
            }
            self.held_until = None;
        }
        if limits.connections > 0 && self.active >= scaled(limits.connections, self.factor) {
            return Decision::Wait(MAX_INLINE_WAIT);
        }
        if limits.messages_per_minute > 0 {
            let per_sec = f64::from(limits.messages_per_minute) * self.factor / 60.0;
            // A bucket holds ten seconds' worth (at least one message).
            let capacity = (per_sec * 10.0).max(1.0);
            let last = self.refilled.unwrap_or(now);
            let fresh = self.refilled.is_none();
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = if fresh {
                capacity
            } else {
                (self.tokens + elapsed * per_sec).min(capacity)
            };
            self.refilled = Some(now);
            if self.tokens < 1.0 {
                let wait = Duration::from_secs_f64(((1.0 - self.tokens) / per_sec).min(3600.0));
                return if wait <= MAX_INLINE_WAIT {
                    Decision::Wait(wait)
                } else {
                    Decision::Defer(wait)
                };
            }
            self.tokens -= 1.0;
        }
        self.active += 1;
        Decision::Go
    }

    /// A delivery that was admitted ended.
    pub(super) fn finished(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// The destination pushed back at `now`: halve the limits (not below `min_factor`) and
    /// hold it for `hold`. A push-back while already held (other deliveries in flight) does
    /// not halve again.
    pub(super) fn push_back(&mut self, now: Instant, hold: Duration, min_factor: f64, why: &str) {
        let already_held = self.held_until.is_some_and(|u| u > now);
        if !already_held {
            self.factor = (self.factor / 2.0).max(min_factor);
            self.pushbacks += 1;
        }
        let until = now + hold;
        self.held_until = Some(self.held_until.map_or(until, |u| u.max(until)));
        self.reason = Some(why.to_string());
    }

    /// A message was delivered: win back `step` of the limits. `true` when this step brought
    /// the destination back to its full limits.
    pub(super) fn delivered(&mut self, step: f64) -> bool {
        if self.factor >= 1.0 {
            return false;
        }
        self.factor = (self.factor + step).min(1.0);
        if self.factor >= 1.0 {
            self.reason = None;
            return true;
        }
        false
    }

    /// Nothing here differs from a destination never seen (it may be forgotten).
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.factor >= 1.0
            && self.active == 0
            && self.held_until.is_none_or(|u| u <= now)
            && self
                .refilled
                .is_none_or(|r| now.saturating_duration_since(r) > Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: u32, per_minute: u32) -> ShapingLimits {
        ShapingLimits {
            connections,
            messages_per_connection: 0,
            messages_per_minute: per_minute,
        }
    }

    #[test]
    fn connections_are_bounded_and_scale_with_the_factor() {
        let now = Instant::now();
        let mut s = DestState::default();
        for _ in 0..4 {
            assert_eq!(s.admit(now, limits(4, 0)), Decision::Go);
        }
        assert!(matches!(s.admit(now, limits(4, 0)), Decision::Wait(_)));
        s.finished();
        assert_eq!(s.admit(now, limits(4, 0)), Decision::Go);
        assert_eq!(scaled(4, 0.5), 2);
        assert_eq!(scaled(4, 0.1), 1);
        assert_eq!(scaled(1, 0.1), 1);
        assert_eq!(scaled(10, 1.0), 10);
    }

    #[test]
    fn a_pushback_suspends_halves_then_deliveries_recover_step_by_step() {
        let now = Instant::now();
        let mut s = DestState::default();
        s.push_back(now, Duration::from_secs(60), 0.1, "421 4.7.28 slow down");
        assert_eq!(s.factor, 0.5);
        assert_eq!(
            s.admit(now + Duration::from_secs(10), limits(10, 0)),
            Decision::Defer(Duration::from_secs(50))
        );
        // Others in flight got the same reply: one halving per hold.
        s.push_back(
            now + Duration::from_secs(1),
            Duration::from_secs(60),
            0.1,
            "again",
        );
        assert_eq!(s.factor, 0.5);
        let later = now + Duration::from_secs(61);
        for _ in 0..5 {
            assert_eq!(s.admit(later, limits(10, 0)), Decision::Go);
        }
        assert!(matches!(s.admit(later, limits(10, 0)), Decision::Wait(_)));
        let mut steps = 0;
        while !s.delivered(0.1) {
            steps += 1;
            assert!(steps < 10, "recovers within ten deliveries");
        }
        assert_eq!(s.factor, 1.0);
        assert_eq!(s.reason, None);
        // Never below the floor.
        for i in 0..10 {
            s.push_back(
                later + Duration::from_secs(100 * (i + 1)),
                Duration::from_secs(1),
                0.1,
                "x",
            );
        }
        assert_eq!(s.factor, 0.1);
    }

    #[test]
    fn the_rate_waits_in_place_briefly_and_defers_beyond() {
        let now = Instant::now();
        let mut s = DestState::default();
        // 60 per minute: a 10-message bucket, then one a second.
        for _ in 0..10 {
            assert_eq!(s.admit(now, limits(0, 60)), Decision::Go);
        }
        assert!(
            matches!(s.admit(now, limits(0, 60)), Decision::Wait(d) if d <= Duration::from_secs(1))
        );
        // 6 per minute: a one-message bucket, then one each ten seconds.
        let mut slow = DestState::default();
        assert_eq!(slow.admit(now, limits(0, 6)), Decision::Go);
        assert!(matches!(slow.admit(now, limits(0, 6)), Decision::Defer(d) if d > MAX_INLINE_WAIT));
    }
}
