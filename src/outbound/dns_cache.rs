//! The answers delivery asks for at every attempt — a domain's MX hosts, a host's addresses —
//! kept until their TTL runs out, as the resolver's own cache keeps them: an attempt then
//! reads a map instead of parsing the name and going through the resolver's cache (a profile
//! of the delivery benchmark showed those look-ups at ~6 % of the async threads).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{MX, RecordSet, ResolverCache};

/// Most names one cache keeps; past it, expired answers go, then all.
const MAX_NAMES: usize = 10_000;

/// Answers by name, each until its `valid_until` (the record's TTL).
pub(crate) struct TtlCache<V> {
    answers: Mutex<HashMap<Box<str>, (Instant, V)>>,
}

impl<V> Default for TtlCache<V> {
    fn default() -> Self {
        TtlCache {
            answers: Mutex::new(HashMap::new()),
        }
    }
}

impl<V> TtlCache<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (Instant, V)>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<V: Clone> ResolverCache<Box<str>, V> for TtlCache<V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let answers = self.lock();
        let (until, value) = answers.get(name)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(_, value)| value)
    }

    fn insert(&self, key: Box<str>, value: V, valid_until: Instant) {
        let now = Instant::now();
        if valid_until <= now {
            return;
        }
        let mut answers = self.lock();
        if answers.len() >= MAX_NAMES && !answers.contains_key(&key) {
            answers.retain(|_, (until, _)| *until > now);
            if answers.len() >= MAX_NAMES {
                answers.clear();
            }
        }
        answers.insert(key, (valid_until, value));
    }
}

/// The caches of one delivery generation (a reload starts afresh).
#[derive(Default)]
pub(crate) struct DnsCache {
    /// MX records by domain.
    pub(crate) mx: TtlCache<RecordSet<MX>>,
    /// A records by host.
    pub(crate) v4: TtlCache<RecordSet<Ipv4Addr>>,
    /// AAAA records by host.
    pub(crate) v6: TtlCache<RecordSet<Ipv6Addr>>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_answer_is_reused_only_within_its_ttl() {
        let cache: TtlCache<u32> = TtlCache::default();
        let now = Instant::now();
        cache.insert("mx.example.org.".into(), 7, now + Duration::from_secs(300));
        assert_eq!(cache.get("mx.example.org."), Some(7));
        assert_eq!(cache.get("other.example.org."), None);
        // TTL 0 (the test DNS server's default): never kept.
        cache.insert("zero.example.org.".into(), 1, now);
        assert_eq!(cache.get("zero.example.org."), None);
        // Replaced by a fresh answer, removed on request.
        cache.insert("mx.example.org.".into(), 8, now + Duration::from_secs(60));
        assert_eq!(cache.get("mx.example.org."), Some(8));
        assert_eq!(cache.remove("mx.example.org."), Some(8));
        assert_eq!(cache.get("mx.example.org."), None);
    }
}
