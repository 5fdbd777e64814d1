//! A short-lived memory of credentials that passed argon2, as Dovecot's auth cache keeps one:
//! most apps open a connection and log in again for every message, and an argon2id
//! verification (m=19456, t=2) costs ~30 ms of CPU each time. After a successful verification
//! herald keeps an HMAC-SHA256 tag of (user, password hash, password) under a random key made
//! at start-up, for `smtp.auth_cache_ttl`; a later login whose tag matches (compared in
//! constant time) skips argon2.
//!
//! What it never does: remember a failure (every wrong password runs argon2 and feeds the
//! throttle), keep a password (only keyed tags are in memory, useless after a restart or to
//! anyone without the per-process key), or outlive its configuration (the tag covers the
//! `password_hash`, so a changed hash never matches, and each loaded config gets a new cache).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac, rand::SystemRandom};

use super::auth;
use crate::config::AppConfig;

/// Entries kept per app: one per password that verified against the app's current hash
/// (in practice one); the oldest is dropped first.
const ENTRIES_PER_APP: usize = 4;

/// argon2 verifications started by this process (cached logins do not count), for logs and
/// tests: the way to see that the cache works without timing anything.
static ARGON2_VERIFICATIONS: AtomicU64 = AtomicU64::new(0);

/// Verified credentials, by app, for `ttl`.
pub(crate) struct AuthCache {
    ttl: Duration,
    key: hmac::Key,
    entries: Mutex<HashMap<String, Vec<Entry>>>,
}

struct Entry {
    tag: [u8; 32],
    verified: Instant,
}

impl AuthCache {
    /// A cache keeping successes for `ttl` (zero disables it), under a fresh random key.
    pub(crate) fn new(ttl: Duration) -> anyhow::Result<AuthCache> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("no randomness for the AUTH cache key"))?;
        Ok(AuthCache {
            ttl,
            key,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `password` for app `user`: from the cache when a recent success matches,
    /// otherwise with argon2 (which then fills the cache on success).
    pub(crate) async fn verify(
        &self,
        apps: &Arc<HashMap<String, AppConfig>>,
        user: String,
        password: String,
    ) -> bool {
        let tag = match apps.get(&user) {
            Some(app) if !self.ttl.is_zero() => {
                Some(self.tag(&user, &app.password_hash, &password))
            }
            _ => None,
        };
        if let Some(tag) = &tag
            && self.hit(&user, tag, Instant::now())
        {
            tracing::debug!(app = %user, "AUTH credentials matched the AUTH cache: no argon2");
            return true;
        }
        let total = ARGON2_VERIFICATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            user = %user,
            argon2_verifications_total = total,
            "AUTH argon2id verification"
        );
        let ok = auth::verify(apps.clone(), user.clone(), password).await;
        if ok && let Some(tag) = tag {
            self.insert(user, tag, Instant::now());
        }
        ok
    }

    /// HMAC over length-prefixed fields, so no two (user, hash, password) triples collide.
    fn tag(&self, user: &str, password_hash: &str, password: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for field in [user, password_hash, password] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn hit(&self, user: &str, tag: &[u8; 32], now: Instant) -> bool {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = map.get_mut(user) else {
            return false;
        };
        list.retain(|e| now.saturating_duration_since(e.verified) < self.ttl);
        // Compare with every live entry, so the time taken does not say which one matched.
        let mut found = false;
        for e in list.iter() {
            found |= constant_time::verify_slices_are_equal(&e.tag, tag).is_ok();
        }
        found
    }

    fn insert(&self, user: String, tag: [u8; 32], now: Instant) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(user).or_default();
        list.retain(|e| {
            now.saturating_duration_since(e.verified) < self.ttl
                && constant_time::verify_slices_are_equal(&e.tag, &tag).is_err()
        });
        if list.len() >= ENTRIES_PER_APP {
            list.remove(0);
        }
        list.push(Entry { tag, verified: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";

    fn cache(ttl: u64) -> AuthCache {
        AuthCache::new(Duration::from_secs(ttl)).unwrap()
    }

    #[test]
    fn only_the_same_user_hash_and_password_match_until_the_ttl() {
        let c = cache(60);
        let t0 = Instant::now();
        let tag = c.tag("demo", HASH, "pw");
        c.insert("demo".into(), tag, t0);
        assert!(c.hit("demo", &c.tag("demo", HASH, "pw"), t0));
        assert!(!c.hit("demo", &c.tag("demo", HASH, "pw2"), t0));
        assert!(!c.hit("demo", &c.tag("demo", "$argon2id$other", "pw"), t0));
        assert!(!c.hit("other", &c.tag("other", HASH, "pw"), t0));
        // Length prefixes: moving bytes between fields gives another tag.
        assert_ne!(c.tag("de", "mo", "pw"), c.tag("dem", "o", "pw"));
        assert!(!c.hit("demo", &tag, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn entries_per_app_are_bounded_and_keys_differ_per_cache() {
        let c = cache(60);
        let t0 = Instant::now();
        for i in 0..10 {
            c.insert("demo".into(), c.tag("demo", HASH, &format!("pw{i}")), t0);
        }
        let map = c.entries.lock().unwrap();
        assert_eq!(map["demo"].len(), ENTRIES_PER_APP);
        drop(map);
        assert!(c.hit("demo", &c.tag("demo", HASH, "pw9"), t0));
        assert!(!c.hit("demo", &c.tag("demo", HASH, "pw0"), t0));
        assert_ne!(c.tag("demo", HASH, "pw"), cache(60).tag("demo", HASH, "pw"));
    }

    #[tokio::test]
    async fn a_success_is_cached_failures_are_not_and_zero_ttl_disables() {
        let mut apps = HashMap::new();
        apps.insert(
            "demo".to_string(),
            AppConfig {
                password_hash: HASH.into(),
                senders: vec!["@example.test".into()],
                max_message_size: None,
                rate_limit: 0,
                allow_tls_optional: false,
                unsubscribe: Default::default(),
                bulk: false,
                webhook_url: None,
                webhook_secret: None,
                return_path_domain: None,
                forward_bounces: true,
                suppression: true,
                suppression_scope: Default::default(),
            },
        );
        let apps = Arc::new(apps);
        let c = cache(60);
        assert!(!c.verify(&apps, "demo".into(), "wrong".into()).await);
        assert!(c.entries.lock().unwrap().is_empty(), "failure cached");
        assert!(
            c.verify(&apps, "demo".into(), "herald-demo-password".into())
                .await
        );
        assert!(c.hit(
            "demo",
            &c.tag("demo", HASH, "herald-demo-password"),
            Instant::now()
        ));
        assert!(!c.verify(&apps, "demo".into(), "wrong".into()).await);
        let off = cache(0);
        assert!(
            off.verify(&apps, "demo".into(), "herald-demo-password".into())
                .await
        );
        assert!(off.entries.lock().unwrap().is_empty());
    }
}
