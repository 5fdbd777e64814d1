//! The suppression list (issue 24): addresses herald will not send to any more for a sending
//! domain (or for one app), because they bounced hard, complained, unsubscribed or were added
//! by the operator. Kept in SQLite in `data_dir` (one node) or in the cluster's PostgreSQL
//! ([`store`]); every RCPT is checked against an in-memory copy ([`index`]) that is updated
//! with each change this node makes and brought in step with the store every
//! `[bounce] refresh_interval` (changes from the CLI or from other nodes).
//!
//! The sending domain of a message is the organizational domain of its MAIL FROM (the app's
//! own address, not herald's VERP return path), so `billing@example.com` and
//! `news@mail.example.com` share one list.

pub mod admin;
pub mod index;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::index::Index;
use self::store::Store;
use crate::config::Config;
use crate::reply::Reply;

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The address or its domain does not exist (a `5.1.x` at delivery, or a DSN).
    HardBounce,
    /// The recipient reported the mail as spam (an ARF report).
    Complaint,
    /// Added by the operator.
    Manual,
    /// The recipient unsubscribed (one-click, RFC 8058).
    Unsubscribe,
}

impl Reason {
    /// The name used in the store, JSON, CSV and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::HardBounce => "hard_bounce",
            Reason::Complaint => "complaint",
            Reason::Manual => "manual",
            Reason::Unsubscribe => "unsubscribe",
        }
    }

    /// The reason named `s` (as [`Reason::as_str`] writes it; `hard` and `bounce` too).
    pub fn parse(s: &str) -> Option<Reason> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hard_bounce" | "hard-bounce" | "hard" | "bounce" => Some(Reason::HardBounce),
            "complaint" => Some(Reason::Complaint),
            "manual" => Some(Reason::Manual),
            "unsubscribe" => Some(Reason::Unsubscribe),
            _ => None,
        }
    }

    /// The words an app reads in the RCPT refusal.
    fn words(&self) -> &'static str {
        match self {
            Reason::HardBounce => "it bounced as nonexistent",
            Reason::Complaint => "its owner reported mail as spam",
            Reason::Manual => "the operator suppressed it",
            Reason::Unsubscribe => "its owner unsubscribed",
        }
    }
}

/// One suppressed address, as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The sending domain it applies to (organizational domain, lower case).
    pub domain: String,
    /// The app it applies to; empty for every app of the domain.
    #[serde(default)]
    pub app: String,
    /// The recipient address, lower case.
    pub address: String,
    /// Why.
    pub reason: Reason,
    /// The remote's words or the operator's note.
    #[serde(default)]
    pub detail: String,
    /// First event (Unix seconds).
    pub first_at: i64,
    /// Last event (Unix seconds).
    pub last_at: i64,
    /// How many events suppressed it.
    pub count: i64,
    /// When it stops applying (Unix seconds); `None`: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl Entry {
    /// Whether it still applies at `now`.
    pub fn active(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// A new event that suppresses an address.
#[derive(Debug, Clone)]
pub struct NewSuppression {
    /// Sending domain (any form; normalised to its organizational domain).
    pub domain: String,
    /// The app, for an app-scoped entry; `None` for the whole domain.
    pub app: Option<String>,
    /// The recipient address.
    pub address: String,
    /// Why.
    pub reason: Reason,
    /// The remote's words or the operator's note.
    pub detail: String,
    /// When it happened (Unix seconds).
    pub at: i64,
}

/// The suppression list: the store, the index kept in step with it, and the expiry rules.
#[derive(Clone)]
pub struct Suppressions {
    store: Store,
    index: Arc<Index>,
    hard_expiry: Option<Duration>,
    complaint_expiry: Option<Duration>,
}

/// The organizational domain of `domain_or_address` (the part after `@` if any), lower case:
/// the key of the suppression list.
pub fn sending_domain(domain_or_address: &str) -> String {
    let d = domain_or_address
        .rsplit_once('@')
        .map_or(domain_or_address, |(_, d)| d)
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    psl::domain_str(&d).map(str::to_string).unwrap_or(d)
}

/// An address as the list keys it: trimmed, without angle brackets, lower case.
pub fn normalize_address(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

/// Why a change to the suppression list failed.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    /// The address or the domain given is not one (a caller's mistake: a `400`, a usage error).
    #[error("not an address and domain: {address:?} for {domain:?}")]
    NotAnAddress {
        /// The address as given.
        address: String,
        /// The domain as given.
        domain: String,
    },
    /// The store failed (the list is unchanged).
    #[error("suppression list: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl Suppressions {
    /// Opens the list of `cfg` (SQLite in `data_dir`, or the cluster's PostgreSQL when `db`
    /// is given) and loads the index.
    pub async fn open(cfg: &Config, db: Option<crate::cluster::Db>) -> Result<Self, SuppressError> {
        let store = match db {
            Some(db) => Store::postgres(db).await?,
            None => Store::sqlite(&store::sqlite_path(cfg)).await?,
        };
        let list = Suppressions {
            store,
            index: Arc::new(Index::default()),
            hard_expiry: crate::config::BounceConfig::expiry(cfg.bounce.hard_bounce_expiry),
            complaint_expiry: crate::config::BounceConfig::expiry(cfg.bounce.complaint_expiry),
        };
        let (changes, seq) = list.store.changes_since(0).await?;
        list.index.apply(changes, seq);
        Ok(list)
    }

    /// The store underneath (the guard keeps its pause list there too).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Suppresses `address` for `domain` (the sending domain, or an address at it), for one
    /// `app` or (`None`) every app of the domain. The entry point for other subsystems (e.g.
    /// one-click unsubscribe); applies to RCPT at once on this node.
    pub async fn suppress(
        &self,
        domain: &str,
        app: Option<&str>,
        address: &str,
        reason: Reason,
    ) -> Result<Entry, SuppressError> {
        self.record(NewSuppression {
            domain: domain.to_string(),
            app: app.map(str::to_string),
            address: address.to_string(),
            reason,
            detail: String::new(),
            at: crate::clock::unix_now() as i64,
        })
        .await
    }

    /// Records `new` (a repeated event bumps the count and the last time) and updates the
    /// index.
    pub async fn record(&self, new: NewSuppression) -> Result<Entry, SuppressError> {
        let entry = self.entry_of(new)?;
        let stored = self.store.upsert(entry).await?;
        self.index.put(&stored);
        crate::suppress::metrics::suppression_added(stored.reason.as_str());
        Ok(stored)
    }

    /// [`Suppressions::record`] for many (an import): one transaction on SQLite. Fails,
    /// recording nothing, when one of them is not an address.
    pub async fn record_many(&self, news: Vec<NewSuppression>) -> Result<usize, SuppressError> {
        let entries = news
            .into_iter()
            .map(|n| self.entry_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = self.store.upsert_many(entries).await?;
        for e in &stored {
            self.index.put(e);
        }
        Ok(stored.len())
    }

    fn entry_of(&self, new: NewSuppression) -> Result<Entry, SuppressError> {
        let expiry = match new.reason {
            Reason::HardBounce => self.hard_expiry,
            Reason::Complaint => self.complaint_expiry,
            Reason::Manual | Reason::Unsubscribe => None,
        };
        let entry = Entry {
            domain: sending_domain(&new.domain),
            app: new.app.unwrap_or_default(),
            address: normalize_address(&new.address),
            reason: new.reason,
            detail: new.detail.chars().take(500).collect(),
            first_at: new.at,
            last_at: new.at,
            count: 1,
            expires_at: expiry.map(|d| new.at.saturating_add(d.as_secs() as i64)),
        };
        if entry.address.is_empty() || !entry.address.contains('@') || entry.domain.is_empty() {
            return Err(SuppressError::NotAnAddress {
                address: new.address,
                domain: new.domain,
            });
        }
        Ok(entry)
    }

    /// Removes the entry for (`domain`, `app`, `address`); `app` `None` is the domain-wide one.
    /// True when there was one.
    pub async fn remove(
        &self,
        domain: &str,
        app: Option<&str>,
        address: &str,
    ) -> Result<bool, SuppressError> {
        let (domain, app, address) = (
            sending_domain(domain),
            app.unwrap_or("").to_string(),
            normalize_address(address),
        );
        let removed = self.store.remove(&domain, &app, &address).await?;
        self.index.remove(&domain, &app, &address);
        Ok(removed)
    }

    /// Every active entry, optionally only those of `domain`, oldest first.
    pub async fn list(&self, domain: Option<&str>) -> Result<Vec<Entry>, SuppressError> {
        let now = crate::clock::unix_now() as i64;
        let domain = domain.map(sending_domain);
        let mut all = self.store.list(domain.as_deref()).await?;
        all.retain(|e| e.active(now));
        Ok(all)
    }

    /// Brings the index in step with the store (changes made elsewhere).
    pub async fn refresh(&self) -> Result<(), SuppressError> {
        let since = self.index.seq();
        let (changes, seq) = self.store.changes_since(since).await?;
        // Changes made elsewhere (the CLI, another node), logged once each, after the index
        // has them (a reader of the log can rely on the change being in force).
        let now = crate::clock::unix_now() as i64;
        let news: Vec<&index::Change> = changes
            .iter()
            .filter(|c| match c {
                index::Change::Put(e) => self
                    .index
                    .find(&e.domain, &e.app, &e.address, now)
                    .is_none(),
                index::Change::Removed(d, a, addr) => self
                    .index
                    .find(d, a, addr, now)
                    .is_some_and(|e| e.app == *a),
            })
            .collect();
        let lines: Vec<index::Change> = news.into_iter().cloned().collect();
        self.index.apply(changes, seq);
        for c in lines {
            match c {
                index::Change::Put(e) => {
                    tracing::info!(event = "suppression_synced", domain = %e.domain,
                        address = %e.address, reason = e.reason.as_str(),
                        "suppression list: address added elsewhere");
                }
                index::Change::Removed(d, _, addr) => {
                    tracing::info!(event = "unsuppressed", domain = %d, address = %addr,
                        "suppression list: address removed");
                }
            }
        }
        Ok(())
    }

    /// The entry that refuses mail from `app` at the sending domain of `mail_from` to
    /// `address`, if any (the in-memory index: no I/O).
    pub fn lookup(&self, mail_from: &str, app: Option<&str>, address: &str) -> Option<Entry> {
        // Most recipients are on no list: answer those before working out the sending domain.
        if !self.index.names(address) {
            return None;
        }
        let now = crate::clock::unix_now() as i64;
        self.index
            .find(&sending_domain(mail_from), app.unwrap_or(""), address, now)
    }

    /// Addresses in the index (for /metrics).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the index in step with the store until the process ends.
    pub fn spawn_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let list = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = list.refresh().await {
                    tracing::warn!(error = %e, "suppression list: cannot read changes from the store");
                }
            }
        })
    }
}

/// The RCPT refusal for a suppressed recipient: `550 5.1.1` for a hard bounce, `550 5.7.1`
/// otherwise, with the reason and the date.
pub fn refusal(entry: &Entry) -> Reply {
    let date = chrono::DateTime::from_timestamp(entry.last_at, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let status = if entry.reason == Reason::HardBounce {
        "5.1.1"
    } else {
        "5.7.1"
    };
    let scope = if entry.app.is_empty() {
        entry.domain.clone()
    } else {
        format!("app {}", entry.app)
    };
    let until = entry
        .expires_at
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|d| format!(" until {}", d.format("%Y-%m-%d")))
        .unwrap_or_default();
    Reply::new(
        550,
        status,
        format!(
            "<{}> is suppressed for {scope}{until}: {} on {date} ({}); remove it with herald \
             suppress remove if that is wrong",
            entry.address,
            entry.reason.words(),
            entry.reason.as_str()
        ),
    )
}
