//! The in-memory copy of the suppression list that every RCPT is checked against: one hash
//! look-up by address under a read lock, no I/O. Kept in step with the store by the changes
//! this node makes ([`Index::put`], [`Index::remove`]) and by [`Index::apply`] with what the
//! store changed since the last sequence number seen.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{Entry, normalize_address};

/// Suppressed addresses, each with the entries (domain, app) that name it.
#[derive(Default)]
pub struct Index {
    by_address: RwLock<HashMap<String, Vec<Entry>>>,
    seq: AtomicI64,
}

/// A change read from the store: an entry put (or updated), or removed.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added or updated.
    Put(Entry),
    /// Removed: (domain, app, address).
    Removed(String, String, String),
}

impl Index {
    /// The store's sequence number this index has seen.
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Adds or replaces `entry`.
    pub fn put(&self, entry: &Entry) {
        let mut map = self.by_address.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(entry.address.clone()).or_default();
        list.retain(|e| !(e.domain == entry.domain && e.app == entry.app));
        list.push(entry.clone());
    }

    /// Removes the entry for (`domain`, `app`, `address`).
    pub fn remove(&self, domain: &str, app: &str, address: &str) {
        let mut map = self.by_address.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(address) {
            list.retain(|e| !(e.domain == domain && e.app == app));
            if list.is_empty() {
                map.remove(address);
            }
        }
    }

    /// Applies `changes` read from the store up to sequence `seq`.
    pub fn apply(&self, changes: Vec<Change>, seq: i64) {
        for c in changes {
            match c {
                Change::Put(e) => self.put(&e),
                Change::Removed(d, a, addr) => self.remove(&d, &a, &addr),
            }
        }
        self.seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Whether any entry names `address` (one hash look-up; a miss, the common case at RCPT,
    /// allocates nothing unless the address needs normalising).
    pub fn names(&self, address: &str) -> bool {
        let map = self.by_address.read().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return false;
        }
        if map.contains_key(address) {
            return true;
        }
        address
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b == b'<' || b == b' ')
            && map.contains_key(&normalize_address(address))
    }

    /// The active entry refusing mail from `app` at `domain` to `address`: the domain-wide one
    /// or the app's own.
    pub fn find(&self, domain: &str, app: &str, address: &str, now: i64) -> Option<Entry> {
        let map = self.by_address.read().unwrap_or_else(|p| p.into_inner());
        let list = match map.get(address) {
            Some(l) => l,
            None => map.get(&normalize_address(address))?,
        };
        list.iter()
            .find(|e| e.domain == domain && (e.app.is_empty() || e.app == app) && e.active(now))
            .cloned()
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.by_address
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suppress::Reason;

    fn entry(domain: &str, app: &str, address: &str, expires: Option<i64>) -> Entry {
        Entry {
            domain: domain.into(),
            app: app.into(),
            address: address.into(),
            reason: Reason::HardBounce,
            detail: String::new(),
            first_at: 1,
            last_at: 1,
            count: 1,
            expires_at: expires,
        }
    }

    #[test]
    fn domain_wide_and_app_entries_apply_to_the_right_senders() {
        let i = Index::default();
        i.put(&entry("example.com", "", "a@x.test", None));
        i.put(&entry("example.com", "news", "b@x.test", None));
        assert!(i.find("example.com", "billing", "a@x.test", 10).is_some());
        assert!(i.find("example.com", "billing", "A@X.test", 10).is_some());
        assert!(i.find("other.com", "billing", "a@x.test", 10).is_none());
        assert!(i.find("example.com", "news", "b@x.test", 10).is_some());
        assert!(i.find("example.com", "billing", "b@x.test", 10).is_none());
        i.remove("example.com", "", "a@x.test");
        assert!(i.find("example.com", "billing", "a@x.test", 10).is_none());
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn an_expired_entry_no_longer_refuses() {
        let i = Index::default();
        i.put(&entry("example.com", "", "a@x.test", Some(100)));
        assert!(i.find("example.com", "", "a@x.test", 99).is_some());
        assert!(i.find("example.com", "", "a@x.test", 100).is_none());
    }

    #[test]
    fn changes_from_the_store_move_the_sequence() {
        let i = Index::default();
        i.apply(
            vec![
                Change::Put(entry("example.com", "", "a@x.test", None)),
                Change::Removed("example.com".into(), "".into(), "a@x.test".into()),
            ],
            7,
        );
        assert_eq!(i.seq(), 7);
        assert!(i.is_empty());
    }
}
