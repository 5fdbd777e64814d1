//! Browser sessions of the admin endpoint and the throttle on `/login`. The login cookie holds
//! a random session value that expires ([`SESSION_TTL`]) and ends at `/logout`, never the
//! token itself; failed logins are counted per client address and refused for a while after
//! [`MAX_LOGIN_FAILURES`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a browser session lasts after its login.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed logins from one address within [`LOGIN_WINDOW`] before it is refused.
pub(super) const MAX_LOGIN_FAILURES: u32 = 5;
/// The window failed logins are counted in, and how long an address is then refused.
pub(super) const LOGIN_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Most sessions kept at once (the oldest go first); most addresses tracked by the throttle.
const MAX_ENTRIES: usize = 10_000;

/// The live sessions and the login failures per address.
#[derive(Default)]
pub(super) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Sessions {
    /// Starts a session: a new random value (256 bits, hex) valid for [`SESSION_TTL`].
    pub(super) fn start(&self) -> String {
        let bytes: [u8; 32] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_ENTRIES
            && let Some(oldest) = live.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether `id` is a live session.
    pub(super) fn valid(&self, id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter()
            .any(|(k, expires)| super::guard::equal(k, id) && *expires > Instant::now())
    }

    /// Ends the session `id` (logout).
    pub(super) fn end(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// `Err(seconds to wait)` while `ip` has used up its failed logins.
    pub(super) fn login_allowed(&self, ip: IpAddr) -> Result<(), u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&ip) {
            Some((start, n)) if *n >= MAX_LOGIN_FAILURES && start.elapsed() < LOGIN_WINDOW => {
                Err((LOGIN_WINDOW - start.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `ip`; returns the failures in the current window.
    pub(super) fn failed(&self, ip: IpAddr) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, (start, _)| now.duration_since(*start) < LOGIN_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= LOGIN_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1
    }

    /// Forgets `ip`'s failures (a correct login).
    pub(super) fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_validate_and_end() {
        let s = Sessions::default();
        let id = s.start();
        assert_eq!(id.len(), 64);
        assert!(s.valid(&id));
        assert!(!s.valid("nope"));
        s.end(&id);
        assert!(!s.valid(&id));
    }

    #[test]
    fn failed_logins_are_throttled_per_address() {
        let s = Sessions::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_LOGIN_FAILURES {
            assert!(s.login_allowed(ip).is_ok());
            s.failed(ip);
        }
        assert!(s.login_allowed(ip).is_err());
        assert!(s.login_allowed(other).is_ok());
        s.succeeded(ip);
        assert!(s.login_allowed(ip).is_ok());
    }
}
