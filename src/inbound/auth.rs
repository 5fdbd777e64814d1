//! App authentication: SASL PLAIN and LOGIN decoding, argon2id verification off the reactor,
//! and per-IP throttling of failures (slowed, then refused for a while) that never blocks
//! other clients: only the failing session waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::{AppConfig, SmtpConfig};

/// A valid argon2id hash of a random password nobody knows: unknown user names are verified
/// against it so that their failures take as long as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0m7V1yn5Ew6d3eO6l9EeE2BR0ht1sqmZ2m1W1x6oI1A";

/// Decodes a base64 SASL response; `None` when it is not base64.
pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim().as_bytes()).ok()
}

/// Splits an AUTH PLAIN response (`authzid NUL authcid NUL password`) into user and password.
/// An authorization identity, if given, must equal the user.
pub fn parse_plain(decoded: &[u8]) -> Option<(String, String)> {
    let mut parts = decoded.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// Verifies `password` for app `user`; runs argon2 on the blocking pool.
pub async fn verify(apps: Arc<HashMap<String, AppConfig>>, user: String, password: String) -> bool {
    let res = tokio::task::spawn_blocking(move || {
        let (hash, known) = match apps.get(&user) {
            Some(app) => (app.password_hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await;
    res.unwrap_or(false)
}

/// Failed-AUTH bookkeeping per client IP.
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    block: Duration,
    delay: Duration,
    state: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    first: Instant,
    blocked_until: Option<Instant>,
}

impl Throttle {
    /// A throttle with the `[smtp] auth_*` settings.
    pub fn new(cfg: &SmtpConfig) -> Throttle {
        Throttle {
            max_failures: cfg.auth_max_failures.max(1),
            window: cfg.auth_failure_window,
            block: cfg.auth_block,
            delay: cfg.auth_failure_delay,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(remaining)` while `ip` is refused after too many failures.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns how long the session should wait before answering.
    pub fn failure(&self, ip: IpAddr) -> Duration {
        self.failure_at(ip, Instant::now())
    }

    fn failure_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(f.first) < window
            });
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(f.first) > self.window
            || f.blocked_until.is_some_and(|u| u <= now)
        {
            f.count = 0;
            f.first = now;
            f.blocked_until = None;
        }
        f.count += 1;
        if f.count >= self.max_failures {
            f.blocked_until = Some(now + self.block);
        }
        (self.delay * f.count).min(Duration::from_secs(10))
    }

    /// Forgets the failures of `ip` after a successful AUTH.
    pub fn success(&self, ip: IpAddr) {
        let mut map = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&ip).is_some_and(|f| f.blocked_until.is_none()) {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        assert_eq!(
            parse_plain(b"\0demo\0pw"),
            Some(("demo".into(), "pw".into()))
        );
        assert_eq!(
            parse_plain(b"demo\0demo\0pw"),
            Some(("demo".into(), "pw".into()))
        );
        assert_eq!(parse_plain(b"other\0demo\0pw"), None);
        assert_eq!(parse_plain(b"demo\0pw"), None);
        assert_eq!(decode_b64("AGRlbW8AcHc="), Some(b"\0demo\0pw".to_vec()));
        assert_eq!(decode_b64("not base64!"), None);
    }

    #[test]
    fn failures_slow_then_block_per_ip() {
        let cfg = SmtpConfig {
            auth_max_failures: 3,
            auth_failure_delay: Duration::from_millis(100),
            auth_block: Duration::from_secs(60),
            ..Default::default()
        };
        let t = Throttle::new(&cfg);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.failure_at(ip, t0), Duration::from_millis(100));
        assert_eq!(t.failure_at(ip, t0), Duration::from_millis(200));
        assert!(t.check_at(ip, t0).is_ok());
        t.failure_at(ip, t0);
        assert!(t.check_at(ip, t0).is_err());
        assert!(t.check_at(other, t0).is_ok());
        assert!(t.check_at(ip, t0 + Duration::from_secs(61)).is_ok());
        // After the block, counting starts again.
        assert_eq!(
            t.failure_at(ip, t0 + Duration::from_secs(61)),
            Duration::from_millis(100)
        );
    }

    #[tokio::test]
    async fn verify_checks_the_hash_and_unknown_users_fail() {
        let mut apps = HashMap::new();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";
        apps.insert(
            "demo".to_string(),
            AppConfig {
                password_hash: hash.into(),
                senders: vec!["@example.test".into()],
                max_message_size: None,
                rate_limit: 0,
            },
        );
        let apps = Arc::new(apps);
        assert!(verify(apps.clone(), "demo".into(), "herald-demo-password".into()).await);
        assert!(!verify(apps.clone(), "demo".into(), "wrong".into()).await);
        assert!(!verify(apps, "nobody".into(), "herald-demo-password".into()).await);
    }
}
