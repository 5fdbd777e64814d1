//! Token buckets keyed by who is limited (an app, a source address): one rate-limiter type
//! for every limit herald applies. A bucket holds at most one period's worth of tokens (the
//! allowed burst) and refills continuously.
//!
//! Per-app message limits are either this in-memory limiter (one node) or buckets shared by
//! every node of a cluster ([`SharedBuckets`], kept in PostgreSQL by
//! `crate::cluster::limits`): [`AppLimits`] picks one, so an app limited to N per minute gets
//! N across the cluster, not N per node.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A boxed future, for the object-safe traits of shared (cluster) state.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How many events per period a key may have; `0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket size: the burst allowed at once.
    burst: f64,
    /// Refill speed, tokens per second.
    per_sec: f64,
}

impl Rate {
    /// `n` per minute, bursts of `n`.
    pub fn per_minute(n: u32) -> Rate {
        Rate {
            burst: f64::from(n),
            per_sec: f64::from(n) / 60.0,
        }
    }

    /// `n` per second, bursts of `n`.
    pub fn per_second(n: u32) -> Rate {
        Rate {
            burst: f64::from(n),
            per_sec: f64::from(n),
        }
    }

    fn unlimited(&self) -> bool {
        self.burst <= 0.0
    }

    /// Bucket size: the burst allowed at once (0 = unlimited).
    pub fn burst(&self) -> f64 {
        self.burst
    }

    /// Refill speed, tokens per second.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }
}

/// Token buckets kept where every node of a cluster sees them (the cluster's database).
pub trait SharedBuckets: Send + Sync {
    /// Takes one token from `key`'s bucket at `rate`: `Ok(Ok(()))` taken, `Ok(Err(wait))`
    /// refused until `wait` has passed, `Err` when the shared store cannot be reached.
    fn take<'a>(
        &'a self,
        key: &'a str,
        rate: Rate,
    ) -> BoxFuture<'a, std::io::Result<Result<(), Duration>>>;
}

/// The per-app message limits (`[apps.X] rate_limit`): in memory on a single node, shared
/// through the cluster's database with `[cluster]`.
pub(crate) enum AppLimits {
    /// This node's own buckets.
    Local(RateLimiter<String>),
    /// Buckets every node of the cluster takes from.
    Shared(Arc<dyn SharedBuckets>),
}

impl AppLimits {
    /// Takes one message from `app`'s allowance; see [`SharedBuckets::take`] for the result.
    /// A shared bucket is keyed `app:NAME`.
    pub(crate) async fn take(
        &self,
        app: &str,
        rate: Rate,
    ) -> std::io::Result<Result<(), Duration>> {
        match self {
            AppLimits::Local(l) => Ok(l.take(app, rate)),
            AppLimits::Shared(_) if rate.unlimited() => Ok(Ok(())),
            AppLimits::Shared(s) => s.take(&format!("app:{app}"), rate).await,
        }
    }
}

/// Token buckets by key; keys whose bucket has refilled completely are forgotten once
/// `max_keys` are tracked (they carry no state), so a flood of sources cannot grow it.
pub(crate) struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
    max_keys: usize,
}

impl<K> Default for RateLimiter<K> {
    /// A limiter that tracks up to 10 000 keys.
    fn default() -> Self {
        RateLimiter::new(10_000)
    }
}

impl<K> RateLimiter<K> {
    /// A limiter that tracks up to `max_keys` keys before forgetting full buckets.
    pub(crate) fn new(max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// Takes one token from `key`'s bucket at `rate`. On refusal, returns how long until the
    /// next token.
    pub(crate) fn take<Q>(&self, key: &Q, rate: Rate) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.take_at(key, rate, Instant::now())
    }

    /// [`RateLimiter::take`] at a given instant (for tests).
    pub(crate) fn take_at<Q>(&self, key: &Q, rate: Rate, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if rate.unlimited() {
            return Ok(());
        }
        let refill = |tokens: f64, last: Instant| {
            (tokens + now.saturating_duration_since(last).as_secs_f64() * rate.per_sec)
                .min(rate.burst)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_keys && !buckets.contains_key(key) {
            buckets.retain(|_, (tokens, last)| refill(*tokens, *last) < rate.burst);
        }
        if !buckets.contains_key(key) {
            buckets.insert(key.to_owned(), (rate.burst, now));
        }
        let Some((tokens, last)) = buckets.get_mut(key) else {
            return Ok(());
        };
        *tokens = refill(*tokens, *last);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate.per_sec))
        }
    }
}

// Failed-AUTH counts shared by a cluster's nodes: the interface inbound's throttle
// (`crate::inbound::throttle`) uses and the cluster's database implements, defined here below
// both.

/// The limits a shared failure store applies (`[smtp] auth_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures per address within the window.
    pub max_failures: usize,
    /// Failures per user name within the window.
    pub max_user_failures: usize,
    /// How long a failure counts.
    pub window: Duration,
    /// How long an address or user name over its limit is refused.
    pub block: Duration,
}

/// What a shared store answers to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTry {
    /// Reserved under this id; report the verdict with [`SharedFailures::resolve`].
    Reserved(i64),
    /// Reserved, slowed: the user name is over its failure limit but this address never
    /// failed, so the verification goes ahead after a delay (never a lock-out of the app's
    /// correct password from a new address).
    Slowed(i64),
    /// Refused (over a limit).
    Refused(Refusal),
    /// Every place left is held by verifications in flight (on any node); try again soon.
    Busy,
}

/// Failed-AUTH counts shared by every node of a cluster.
pub trait SharedFailures: Send + Sync {
    /// How long `ip` is refused, if it is.
    fn refused(
        &self,
        ip: IpAddr,
        limits: Limits,
    ) -> BoxFuture<'_, std::io::Result<Option<Duration>>>;
    /// Reserves one verification of `user` (lower-cased) from `ip`.
    fn reserve<'a>(
        &'a self,
        ip: IpAddr,
        user: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, std::io::Result<SharedTry>>;
    /// Records a reserved verification's verdict: `Some(true)` succeeded, `Some(false)`
    /// failed, `None` abandoned (forgotten, uncounted).
    fn resolve(&self, id: i64, verdict: Option<bool>) -> BoxFuture<'_, std::io::Result<()>>;
}

/// Why an attempt may not be verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client address failed too often; refused for this long.
    Address(Duration),
    /// The user name failed too often (from anywhere); refused for this long.
    User(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refill_per_key() {
        let r: RateLimiter<String> = RateLimiter::default();
        let t0 = Instant::now();
        let two = Rate::per_minute(2);
        assert!(r.take_at("a", two, t0).is_ok());
        assert!(r.take_at("a", two, t0).is_ok());
        let wait = r.take_at("a", two, t0).expect_err("empty");
        assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(29));
        assert!(
            r.take_at("b", two, t0).is_ok(),
            "keys have separate buckets"
        );
        assert!(r.take_at("a", two, t0 + Duration::from_secs(31)).is_ok());
        assert!(
            r.take_at("a", Rate::per_minute(0), t0).is_ok(),
            "0 means unlimited"
        );
    }

    #[test]
    fn full_buckets_are_forgotten_at_the_key_limit() {
        let r: RateLimiter<u32> = RateLimiter::new(2);
        let t0 = Instant::now();
        let rate = Rate::per_second(1);
        assert!(r.take_at(&1, rate, t0).is_ok());
        assert!(r.take_at(&2, rate, t0).is_ok());
        // Both buckets refill after a second; a third key then pushes them out.
        assert!(r.take_at(&3, rate, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(r.buckets.lock().expect("lock").len(), 1);
    }
}
