//! Where unsubscribes are recorded until the suppression list takes them over: a table in
//! `<[web] dir>/unsubscribes.sqlite`, and the same rows in memory so the RCPT check costs no
//! I/O. Recording is idempotent (a replayed POST or a second mail changes nothing) and
//! durable (committed before the page answers).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use super::token::Subscription;

/// The unsubscribes recorded so far.
pub struct UnsubscribeTable {
    db: Mutex<rusqlite::Connection>,
    known: RwLock<HashSet<(String, String, String)>>,
}

fn key(sub: &Subscription) -> (String, String, String) {
    (
        sub.app.clone(),
        sub.sender_domain.to_ascii_lowercase(),
        sub.address.to_ascii_lowercase(),
    )
}

impl UnsubscribeTable {
    /// Opens (creating) the table at `path` and loads it.
    pub fn open(path: &Path) -> anyhow::Result<UnsubscribeTable> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = rusqlite::Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS unsubscribes (
                 app TEXT NOT NULL,
                 sender_domain TEXT NOT NULL,
                 address TEXT NOT NULL,
                 at INTEGER NOT NULL,
                 via TEXT NOT NULL,
                 PRIMARY KEY (app, sender_domain, address)
             );",
        )?;
        let mut known = HashSet::new();
        {
            let mut rows = db.prepare("SELECT app, sender_domain, address FROM unsubscribes")?;
            let iter = rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            for row in iter {
                known.insert(row?);
            }
        }
        Ok(UnsubscribeTable {
            db: Mutex::new(db),
            known: RwLock::new(known),
        })
    }

    /// Records `sub` (via `https` or `mailto`); `Ok(true)` when it is new.
    pub fn record(&self, sub: &Subscription, via: &str) -> anyhow::Result<bool> {
        let k = key(sub);
        let inserted = {
            let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
            db.execute(
                "INSERT OR IGNORE INTO unsubscribes (app, sender_domain, address, at, via)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![k.0, k.1, k.2, crate::store::now(), via],
            )?
        };
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k);
        Ok(inserted > 0)
    }

    /// Whether `address` unsubscribed from `app`'s mail from `sender_domain`.
    pub fn contains(&self, app: &str, sender_domain: &str, address: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(
                app.to_string(),
                sender_domain.to_ascii_lowercase(),
                address.to_ascii_lowercase(),
            ))
    }

    /// How many unsubscribes are recorded.
    pub fn len(&self) -> usize {
        self.known.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when none is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_is_idempotent_durable_and_scoped_to_app_and_domain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.sqlite");
        let sub = Subscription {
            app: "news".into(),
            sender_domain: "Example.com".into(),
            address: "Reader@example.org".into(),
        };
        let t = UnsubscribeTable::open(&path).unwrap();
        assert!(t.record(&sub, "https").unwrap());
        assert!(
            !t.record(&sub, "https").unwrap(),
            "a replay changes nothing"
        );
        drop(t);
        let t = UnsubscribeTable::open(&path).unwrap();
        assert!(t.contains("news", "example.com", "reader@EXAMPLE.org"));
        assert!(!t.contains("other", "example.com", "reader@example.org"));
        assert!(!t.contains("news", "example.net", "reader@example.org"));
        assert_eq!(t.len(), 1);
    }
}
