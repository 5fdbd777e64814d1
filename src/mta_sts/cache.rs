//! The policy cache (RFC 8461 §5.1): one JSON file per domain under `[mta_sts] cache_dir`, so a
//! restart does not forget a policy an attacker could otherwise strip. Files are replaced
//! atomically (temporary file, fsync, rename, directory fsync); memory keeps what was read.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::tls_policy::Policy;

/// A policy as cached: what was fetched, when, and until when it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPolicy {
    /// The policy domain (the recipient domain), lowercase.
    pub domain: String,
    /// The policy, with the TXT id it was fetched for.
    pub policy: Policy,
    /// Seconds since the epoch when it was fetched.
    pub fetched_at: u64,
    /// Seconds since the epoch when it stops applying (`fetched_at + max_age`).
    pub expires_at: u64,
}

impl CachedPolicy {
    /// A policy fetched at `now`.
    pub fn new(domain: &str, policy: Policy, now: u64) -> CachedPolicy {
        CachedPolicy {
            domain: domain.to_string(),
            expires_at: now.saturating_add(policy.max_age),
            policy,
            fetched_at: now,
        }
    }

    /// Whether the policy still applies at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.expires_at
    }

    /// Whether more than half of its lifetime has passed: time to refresh it in the background
    /// while it still applies.
    pub fn wants_refresh(&self, now: u64) -> bool {
        let half = self.policy.max_age / 2;
        now >= self.fetched_at.saturating_add(half)
    }
}

/// Policies on disk, with a memory of what has been read.
pub struct PolicyCache {
    dir: PathBuf,
    memory: Mutex<HashMap<String, CachedPolicy>>,
    /// Domains with no file on disk, so that delivering to a domain without a policy does not
    /// try to open its file every time; [`PolicyCache::put`] is the only writer while herald
    /// runs. Forgotten whole when it grows past [`MAX_KNOWN_ABSENT`].
    absent: Mutex<HashSet<String>>,
}

/// Most domains remembered as having no cached policy.
const MAX_KNOWN_ABSENT: usize = 100_000;

impl PolicyCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: &Path) -> PolicyCache {
        PolicyCache {
            dir: dir.to_path_buf(),
            memory: Mutex::new(HashMap::new()),
            absent: Mutex::new(HashSet::new()),
        }
    }

    /// The cached policy of `domain`, fresh or not; `None` when never cached or unreadable.
    pub fn get(&self, domain: &str) -> Option<CachedPolicy> {
        if let Some(hit) = self.lock().get(domain) {
            return Some(hit.clone());
        }
        if self.absent().contains(domain) {
            return None;
        }
        let path = self.path_for(domain)?;
        let entry = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CachedPolicy>(&bytes) {
                Ok(entry) if entry.domain == domain => entry,
                Ok(_) | Err(_) => {
                    tracing::warn!("mta-sts: ignoring unreadable cache file {}", path.display());
                    return None;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut absent = self.absent();
                if absent.len() >= MAX_KNOWN_ABSENT {
                    absent.clear();
                }
                absent.insert(domain.to_string());
                return None;
            }
            Err(e) => {
                tracing::warn!("mta-sts: cannot read {}: {e}", path.display());
                return None;
            }
        };
        self.lock().insert(domain.to_string(), entry.clone());
        Some(entry)
    }

    /// Stores `entry` durably, replacing any older policy of its domain.
    pub fn put(&self, entry: &CachedPolicy) -> io::Result<()> {
        let path = self.path_for(&entry.domain).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{:?} is not a domain name", entry.domain),
            )
        })?;
        let bytes = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        write_atomic(&self.dir, &path, &bytes)?;
        self.absent().remove(&entry.domain);
        self.lock().insert(entry.domain.clone(), entry.clone());
        Ok(())
    }

    /// Every policy on disk (for `herald sts show` and diagnostics), sorted by domain.
    pub fn list(&self) -> Vec<CachedPolicy> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all: Vec<CachedPolicy> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(String::from)
            })
            .filter_map(|domain| self.get(&domain))
            .collect();
        all.sort_by(|a, b| a.domain.cmp(&b.domain));
        all
    }

    fn path_for(&self, domain: &str) -> Option<PathBuf> {
        let ok = !domain.is_empty()
            && domain.len() <= 253
            && !domain.starts_with('.')
            && !domain.contains("..")
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        ok.then(|| self.dir.join(format!("{domain}.json")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedPolicy>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn absent(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.absent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_policy::Mode;

    fn policy(id: &str, mode: Mode, max_age: u64) -> Policy {
        Policy {
            id: id.into(),
            mode,
            mx: vec!["*.example.test".into()],
            max_age,
        }
    }

    #[test]
    fn survives_a_new_cache_on_the_same_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = CachedPolicy::new("example.test", policy("1", Mode::Enforce, 600), 1000);
        PolicyCache::new(dir.path()).put(&entry).expect("put");
        let reopened = PolicyCache::new(dir.path());
        assert_eq!(reopened.get("example.test"), Some(entry.clone()));
        assert_eq!(reopened.list(), vec![entry]);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_newer_policy_replaces_the_older() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PolicyCache::new(dir.path());
        cache
            .put(&CachedPolicy::new(
                "example.test",
                policy("1", Mode::Enforce, 600),
                1000,
            ))
            .expect("put");
        let none = CachedPolicy::new("example.test", policy("2", Mode::None, 600), 2000);
        cache.put(&none).expect("put");
        assert_eq!(PolicyCache::new(dir.path()).get("example.test"), Some(none));
    }

    #[test]
    fn expiry_follows_max_age() {
        let entry = CachedPolicy::new("example.test", policy("1", Mode::Enforce, 100), 1000);
        assert!(entry.is_fresh(1099));
        assert!(!entry.is_fresh(1100));
        assert!(!entry.wants_refresh(1049));
        assert!(entry.wants_refresh(1050));
        let zero = CachedPolicy::new("example.test", policy("1", Mode::Enforce, 0), 1000);
        assert!(!zero.is_fresh(1000));
    }

    #[test]
    fn refuses_names_that_are_not_domains() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = PolicyCache::new(dir.path());
        let evil = CachedPolicy::new("../etc", policy("1", Mode::Enforce, 1), 0);
        assert!(cache.put(&evil).is_err());
        assert_eq!(cache.get("../etc"), None);
        assert_eq!(cache.get("missing.test"), None);
        // Remembered as absent, until a policy is stored for it.
        let found = CachedPolicy::new("missing.test", policy("1", Mode::Testing, 86_400), 1);
        cache.put(&found).expect("put");
        assert_eq!(cache.get("missing.test"), Some(found));
    }

    #[test]
    fn ignores_a_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("example.test.json"), b"{garbage").expect("write");
        assert_eq!(PolicyCache::new(dir.path()).get("example.test"), None);
    }
}
