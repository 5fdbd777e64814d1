//! Failed-AUTH throttling that holds under concurrency.
//!
//! Every verification is *reserved* before argon2 runs: a source address may have at most
//! `auth_max_failures` failures plus verifications in flight within `auth_failure_window`, so
//! 40 simultaneous guesses from one address cost at most that many verifications; the rest
//! wait for a verdict on those in flight and are then refused (`421 4.7.0`) once the address
//! is blocked. Failures expire only with the window: a successful login never erases them, so
//! good logins cannot be interleaved with guesses at another app's password.
//!
//! Failures are also counted per user name (`auth_max_user_failures`), so guesses spread over
//! many addresses are limited too. A user name that is over its limit is refused for at most
//! `auth_block`, and never from an address that logged in as that user successfully within
//! the window: the real app keeps working while someone else guesses its password. An address
//! that never failed is slowed, not refused: one verification at a time per user name, each
//! after [`SLOW_LOGIN`], so the app's correct password works from a new address too while
//! guesses spread over fresh addresses stay at one per [`SLOW_LOGIN`].
//!
//! A block ends after `auth_block` even when that is shorter than `auth_failure_window`: the
//! failures that caused it are then forgotten (otherwise they would keep the address refused
//! for the whole window and `auth_block` would have no effect).
//!
//! With `[cluster]` the same rules also run on counts every node shares ([`SharedFailures`],
//! kept in PostgreSQL by `crate::cluster::limits`): each verification is reserved and its
//! verdict recorded there too, so guesses spread over the nodes count once. The node's own
//! counts keep working when the database cannot be reached.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::SmtpConfig;
pub(crate) use crate::ratelimit::{Limits, Refusal, SharedFailures, SharedTry};

/// Failed-AUTH bookkeeping per client address and per user name.
pub(crate) struct Throttle {
    max_failures: usize,
    max_user_failures: usize,
    window: Duration,
    block: Duration,
    delay: Duration,
    state: Mutex<State>,
    /// Woken whenever a reserved attempt ends, for attempts waiting for room.
    resolved: Notify,
    /// The cluster's counts, with `[cluster]`.
    shared: Option<Arc<dyn SharedFailures>>,
}

#[derive(Default)]
struct State {
    ips: HashMap<IpAddr, Counter>,
    users: HashMap<String, Counter>,
}

#[derive(Default)]
struct Counter {
    /// When each failure within the window happened, oldest first.
    failures: VecDeque<Instant>,
    in_flight: usize,
    blocked_until: Option<Instant>,
    /// Addresses that logged in successfully (users only), with when.
    good: HashMap<IpAddr, Instant>,
    /// Slowed verifications in flight (users only): at most one.
    slow_in_flight: usize,
}

impl Counter {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
        if self.blocked_until.is_some_and(|u| u <= now) {
            // The block is over: what caused it is forgotten (auth_block is effective even
            // when shorter than the window).
            self.blocked_until = None;
            self.failures.clear();
        }
        self.good
            .retain(|_, t| now.saturating_duration_since(*t) < window);
    }

    /// How long this counter refuses attempts, if it does.
    fn refused_for(&self, now: Instant, max: usize, window: Duration) -> Option<Duration> {
        if let Some(until) = self.blocked_until {
            return Some(until.saturating_duration_since(now));
        }
        (self.failures.len() >= max).then(|| {
            self.failures.front().map_or(Duration::ZERO, |t| {
                (*t + window).saturating_duration_since(now)
            })
        })
    }

    fn idle(&self) -> bool {
        self.failures.is_empty()
            && self.in_flight == 0
            && self.blocked_until.is_none()
            && self.good.is_empty()
            && self.slow_in_flight == 0
    }
}

enum Try {
    Reserved,
    /// Reserved, slowed: the user name is over its limit, the address never failed.
    Slow,
    Refused(Refusal),
    Busy,
}

/// A reserved verification: report its verdict with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped without a verdict, it frees its place uncounted.
pub(crate) struct Attempt<'a> {
    throttle: &'a Throttle,
    ip: IpAddr,
    user: String,
    done: bool,
    /// The reservation in the cluster's counts, if there is one.
    shared: Option<i64>,
    /// A slowed verification ([`SLOW_LOGIN`]).
    slow: bool,
}

/// How long a verification waits when its user name is over its failure limit and the
/// address never failed (see the module doc).
pub(crate) const SLOW_LOGIN: Duration = Duration::from_secs(2);

/// Longest an attempt waits for room (verifications in flight from the same address).
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a reservation waiting for room on other nodes looks again.
const SHARED_POLL: Duration = Duration::from_millis(200);
/// Above this many tracked addresses or user names, idle entries are dropped.
const PRUNE_ABOVE: usize = 100_000;

impl Throttle {
    /// A throttle with the `[smtp] auth_*` settings.
    pub(crate) fn new(cfg: &SmtpConfig) -> Throttle {
        Throttle {
            max_failures: (cfg.auth_max_failures.max(1)) as usize,
            max_user_failures: (cfg.auth_max_user_failures.max(1)) as usize,
            window: cfg.auth_failure_window,
            block: cfg.auth_block,
            delay: cfg.auth_failure_delay,
            state: Mutex::new(State::default()),
            resolved: Notify::new(),
            shared: None,
        }
    }

    /// This throttle, also counting in `shared` (the cluster's database).
    pub(crate) fn with_shared(mut self, shared: Arc<dyn SharedFailures>) -> Throttle {
        self.shared = Some(shared);
        self
    }

    fn limits(&self) -> Limits {
        Limits {
            max_failures: self.max_failures,
            max_user_failures: self.max_user_failures,
            window: self.window,
            block: self.block,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(remaining)` while `ip` is refused after too many failures (checked before the
    /// SASL exchange, so a blocked client is not even asked for credentials).
    pub(crate) async fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_local(ip)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.refused(ip, self.limits()).await {
            Ok(Some(d)) => Err(d),
            Ok(None) => Ok(()),
            Err(e) => {
                tracing::warn!("AUTH throttle: cluster counts unavailable, using this node's: {e}");
                Ok(())
            }
        }
    }

    fn check_local(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(c) = st.ips.get_mut(&ip) else {
            return Ok(());
        };
        c.expire(now, self.window);
        match c.refused_for(now, self.max_failures, self.window) {
            Some(d) => Err(d),
            None => Ok(()),
        }
    }

    /// Reserves one verification of `user` from `ip`, waiting (at most 30 s) while other
    /// verifications from the same address or for the same user hold every place left (with
    /// `[cluster]`: on this node, then on any node).
    pub(crate) async fn reserve(&self, ip: IpAddr, user: &str) -> Result<Attempt<'_>, Refusal> {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        let mut attempt = self.reserve_local(ip, user, deadline).await?;
        let Some(shared) = &self.shared else {
            return Ok(attempt);
        };
        loop {
            match shared.reserve(ip, &attempt.user, self.limits()).await {
                Ok(SharedTry::Reserved(id)) => {
                    attempt.shared = Some(id);
                    return Ok(attempt);
                }
                Ok(SharedTry::Slowed(id)) => {
                    attempt.shared = Some(id);
                    if !attempt.slow {
                        tokio::time::sleep(SLOW_LOGIN).await;
                    }
                    return Ok(attempt);
                }
                // Dropping `attempt` frees the local place.
                Ok(SharedTry::Refused(r)) => return Err(r),
                Ok(SharedTry::Busy) => {
                    if tokio::time::Instant::now() + SHARED_POLL > deadline {
                        return Err(Refusal::Address(Duration::from_secs(1)));
                    }
                    // Other nodes' verdicts arrive only through the database: look again.
                    tokio::time::sleep(SHARED_POLL).await;
                }
                Err(e) => {
                    tracing::warn!(
                        "AUTH throttle: cluster counts unavailable, using this node's: {e}"
                    );
                    return Ok(attempt);
                }
            }
        }
    }

    async fn reserve_local(
        &self,
        ip: IpAddr,
        user: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Attempt<'_>, Refusal> {
        let user = user.to_lowercase();
        loop {
            let resolved = self.resolved.notified();
            tokio::pin!(resolved);
            resolved.as_mut().enable();
            match self.try_reserve(ip, &user, Instant::now()) {
                Try::Reserved => {
                    return Ok(Attempt {
                        throttle: self,
                        ip,
                        user,
                        done: false,
                        shared: None,
                        slow: false,
                    });
                }
                Try::Slow => {
                    let attempt = Attempt {
                        throttle: self,
                        ip,
                        user,
                        done: false,
                        shared: None,
                        slow: true,
                    };
                    tokio::time::sleep(SLOW_LOGIN).await;
                    return Ok(attempt);
                }
                Try::Refused(r) => return Err(r),
                Try::Busy => {
                    if tokio::time::timeout_at(deadline, resolved).await.is_err() {
                        return Err(Refusal::Address(Duration::from_secs(1)));
                    }
                }
            }
        }
    }

    fn try_reserve(&self, ip: IpAddr, user: &str, now: Instant) -> Try {
        let mut st = self.lock();
        if st.ips.len() > PRUNE_ABOVE || st.users.len() > PRUNE_ABOVE {
            let w = self.window;
            st.ips.retain(|_, c| {
                c.expire(now, w);
                !c.idle()
            });
            st.users.retain(|_, c| {
                c.expire(now, w);
                !c.idle()
            });
        }
        let (max_ip, max_user, window) = (self.max_failures, self.max_user_failures, self.window);
        let c = st.ips.entry(ip).or_default();
        c.expire(now, window);
        if let Some(d) = c.refused_for(now, max_ip, window) {
            return Try::Refused(Refusal::Address(d));
        }
        let ip_busy = c.failures.len() + c.in_flight >= max_ip;
        let clean = c.failures.is_empty();
        let u = st.users.entry(user.to_string()).or_default();
        u.expire(now, window);
        let trusted = u.good.contains_key(&ip);
        if let Some(d) = u.refused_for(now, max_user, window).filter(|_| !trusted) {
            if !clean {
                // Never longer than auth_block, whatever the window.
                return Try::Refused(Refusal::User(d.min(self.block)));
            }
            // An address that never failed: slowed, one at a time, never locked out.
            if u.slow_in_flight > 0 || ip_busy {
                return Try::Busy;
            }
            u.slow_in_flight += 1;
            u.in_flight += 1;
            if let Some(c) = st.ips.get_mut(&ip) {
                c.in_flight += 1;
            }
            return Try::Slow;
        }
        let user_busy = !trusted && u.failures.len() + u.in_flight >= max_user;
        if ip_busy || user_busy {
            return Try::Busy;
        }
        u.in_flight += 1;
        if let Some(c) = st.ips.get_mut(&ip) {
            c.in_flight += 1;
        }
        Try::Reserved
    }

    fn release(&self, ip: IpAddr, user: &str, slow: bool) {
        let mut st = self.lock();
        if let Some(c) = st.ips.get_mut(&ip) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        if let Some(u) = st.users.get_mut(user) {
            u.in_flight = u.in_flight.saturating_sub(1);
            if slow {
                u.slow_in_flight = u.slow_in_flight.saturating_sub(1);
            }
        }
    }

    fn record_failure(&self, ip: IpAddr, user: &str, now: Instant) -> (usize, bool, bool) {
        let mut st = self.lock();
        let (ip_count, ip_blocked) = {
            let c = st.ips.entry(ip).or_default();
            c.failures.push_back(now);
            let blocked_now = c.failures.len() >= self.max_failures && c.blocked_until.is_none();
            if c.failures.len() >= self.max_failures {
                c.blocked_until = Some(now + self.block);
            }
            (c.failures.len(), blocked_now)
        };
        let u = st.users.entry(user.to_string()).or_default();
        u.failures.push_back(now);
        let user_blocked = u.failures.len() >= self.max_user_failures && u.blocked_until.is_none();
        if u.failures.len() >= self.max_user_failures {
            u.blocked_until = Some(now + self.block);
        }
        (ip_count, ip_blocked, user_blocked)
    }

    fn record_success(&self, ip: IpAddr, user: &str, now: Instant) {
        let mut st = self.lock();
        let u = st.users.entry(user.to_string()).or_default();
        if u.good.len() < 64 || u.good.contains_key(&ip) {
            u.good.insert(ip, now);
        }
    }
}

impl Attempt<'_> {
    /// The verification succeeded: the place is freed; earlier failures stay counted.
    pub(crate) async fn succeeded(mut self) {
        self.done = true;
        let t = self.throttle;
        t.release(self.ip, &self.user, self.slow);
        t.record_success(self.ip, &self.user, Instant::now());
        t.resolved.notify_waiters();
        self.resolve_shared(true).await;
    }

    /// The verification failed: counted for the address and the user name. Returns how long
    /// the session should wait before answering (`auth_failure_delay` × failures, ≤ 10 s).
    pub(crate) async fn failed(mut self) -> Duration {
        self.done = true;
        let t = self.throttle;
        t.release(self.ip, &self.user, self.slow);
        let (count, ip_blocked, user_blocked) =
            t.record_failure(self.ip, &self.user, Instant::now());
        t.resolved.notify_waiters();
        // Recorded before the client hears 535, so its next guess, on any node, counts it.
        self.resolve_shared(false).await;
        if ip_blocked {
            tracing::warn!(client = %self.ip, failures = count,
                block = %humantime::format_duration(t.block),
                "too many failed AUTH attempts from this address; refusing it");
        }
        if user_blocked {
            tracing::warn!(user = %self.user,
                failures = t.max_user_failures,
                block = %humantime::format_duration(t.block),
                "too many failed AUTH attempts for this user name from several addresses; \
                 refusing it except from addresses that logged in as it recently");
        }
        (t.delay * count as u32).min(Duration::from_secs(10))
    }

    async fn resolve_shared(&mut self, succeeded: bool) {
        let (Some(shared), Some(id)) = (&self.throttle.shared, self.shared.take()) else {
            return;
        };
        if let Err(e) = shared.resolve(id, Some(succeeded)).await {
            tracing::warn!("AUTH throttle: cannot record the verdict in the cluster: {e}");
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.release(self.ip, &self.user, self.slow);
            self.throttle.resolved.notify_waiters();
        }
        // A reservation left without a verdict is forgotten (the database also ignores
        // reservations older than a minute, should this node die first).
        if let (Some(shared), Some(id)) = (self.throttle.shared.clone(), self.shared.take())
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = shared.resolve(id, None).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(ip_max: u32, user_max: u32) -> Throttle {
        Throttle::new(&SmtpConfig {
            auth_max_failures: ip_max,
            auth_max_user_failures: user_max,
            auth_failure_delay: Duration::from_millis(100),
            auth_failure_window: Duration::from_secs(600),
            auth_block: Duration::from_secs(60),
            ..Default::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn reservations_bound_failing_verifications_per_address() {
        let t = throttle(3, 100);
        let a = ip("127.0.0.2");
        let r1 = t.reserve(a, "x").await.unwrap();
        let r2 = t.reserve(a, "x").await.unwrap();
        let r3 = t.reserve(a, "x").await.unwrap();
        assert!(matches!(t.try_reserve(a, "x", Instant::now()), Try::Busy));
        assert!(matches!(
            t.try_reserve(ip("127.0.0.3"), "x", Instant::now()),
            Try::Reserved
        ));
        assert_eq!(r1.failed().await, Duration::from_millis(100));
        r2.failed().await;
        r3.failed().await;
        assert!(matches!(
            t.reserve(a, "x").await.err(),
            Some(Refusal::Address(_))
        ));
        assert!(t.check(a).await.is_err());
    }

    #[tokio::test]
    async fn success_never_erases_failures() {
        let t = throttle(3, 100);
        let a = ip("127.0.0.2");
        for _ in 0..2 {
            t.reserve(a, "victim").await.unwrap().failed().await;
            t.reserve(a, "mine").await.unwrap().succeeded().await;
        }
        t.reserve(a, "victim").await.unwrap().failed().await;
        assert!(t.reserve(a, "mine").await.is_err());
    }

    #[tokio::test]
    async fn user_name_limit_spares_addresses_that_logged_in() {
        let t = throttle(100, 3);
        let good = ip("127.0.0.9");
        t.reserve(good, "app").await.unwrap().succeeded().await;
        for i in 0..3 {
            let from = ip(&format!("127.0.1.{i}"));
            t.reserve(from, "APP").await.unwrap().failed().await;
        }
        // An address that failed is refused for the name ...
        let failed_once = ip("127.0.1.0");
        assert!(matches!(
            t.reserve(failed_once, "app").await.err(),
            Some(Refusal::User(d)) if d <= Duration::from_secs(60)
        ));
        assert!(t.reserve(good, "app").await.is_ok());
        // ... one that never failed is slowed, one at a time, never refused.
        let fresh = ip("127.0.2.1");
        assert!(matches!(
            t.try_reserve(fresh, "app", Instant::now()),
            Try::Slow
        ));
        assert!(matches!(
            t.try_reserve(ip("127.0.2.2"), "app", Instant::now()),
            Try::Busy
        ));
    }

    #[tokio::test]
    async fn a_block_shorter_than_the_window_ends_on_time() {
        let t = throttle(3, 100); // window 600 s, block 60 s
        let a = ip("127.0.0.2");
        for _ in 0..3 {
            t.reserve(a, "x").await.unwrap().failed().await;
        }
        assert!(matches!(
            t.try_reserve(a, "x", Instant::now()),
            Try::Refused(Refusal::Address(d)) if d <= Duration::from_secs(60)
        ));
        let after_block = Instant::now() + Duration::from_secs(61);
        assert!(matches!(t.try_reserve(a, "x", after_block), Try::Reserved));
    }

    #[tokio::test]
    async fn dropped_attempt_frees_its_place_uncounted() {
        let t = throttle(1, 100);
        let a = ip("127.0.0.2");
        drop(t.reserve(a, "x").await.unwrap());
        assert!(t.reserve(a, "x").await.is_ok());
        assert!(t.check(a).await.is_ok());
    }
}
