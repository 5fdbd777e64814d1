//! Outbound connections: limits per destination host and in total, and reuse of idle sessions
//! so that several messages to one host travel over one connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::client::Session;

/// What a reusable session is keyed by: host name, address, and whether TLS was strict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// MX (or relay) host name.
    pub host: String,
    /// The address connected to.
    pub addr: SocketAddr,
    /// Opened with verified TLS (only such sessions serve strict deliveries).
    pub strict: bool,
    /// Verified by DANE (TLSA records) rather than WebPKI: never mixed with WebPKI sessions.
    pub dane: bool,
}

#[derive(Default)]
struct State {
    total: usize,
    per_host: HashMap<String, usize>,
    idle: HashMap<Key, Vec<(Conn, Instant)>>,
}

struct Inner {
    state: Mutex<State>,
    /// One FIFO gate per host: at most `max_per_host` deliveries wait on the pool for a host,
    /// so a release wakes one of them instead of every queued delivery.
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    notify: Notify,
    max_total: usize,
    max_per_host: usize,
    idle_for: Duration,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The right to hold one open connection; giving it back (drop) wakes waiters.
pub(crate) struct Slot {
    pool: Weak<Inner>,
    host: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            {
                let mut st = pool.lock();
                st.total = st.total.saturating_sub(1);
                if let Some(n) = st.per_host.get_mut(&self.host) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.per_host.remove(&self.host);
                    }
                }
            }
            pool.notify.notify_waiters();
        }
    }
}

/// An open session together with its slot.
pub(crate) struct Conn {
    /// The SMTP session.
    pub session: Session,
    /// The key it is pooled under.
    pub key: Key,
    /// Messages sent over it (traffic shaping closes it after a destination's share).
    pub deliveries: u32,
    _slot: Slot,
}

impl Conn {
    /// Pairs a freshly opened session with the slot reserved for it.
    pub(crate) fn new(session: Session, key: Key, slot: Slot) -> Conn {
        Conn {
            session,
            key,
            deliveries: 0,
            _slot: slot,
        }
    }

    /// Says QUIT in the background and frees the slot afterwards.
    pub(crate) fn close(self) {
        tokio::spawn(async move {
            let Conn { session, _slot, .. } = self;
            session.quit().await;
            drop(_slot);
        });
    }
}

/// A reused idle session, or the right to open a new one.
pub(crate) enum Acquired {
    /// An idle session to the same host, address and TLS strictness.
    Reused(Box<Conn>),
    /// A reserved slot: open a session and pair it with [`Conn::new`].
    Fresh(Slot),
}

/// The connection pool shared by every delivery.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool with these limits; idle sessions are closed after `idle_for`.
    pub(crate) fn new(max_total: usize, max_per_host: usize, idle_for: Duration) -> Pool {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            gates: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            max_total: max_total.max(1),
            max_per_host: max_per_host.max(1),
            idle_for,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let expired: Vec<Conn> = {
                    let mut st = inner.lock();
                    let mut out = Vec::new();
                    for list in st.idle.values_mut() {
                        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                            .into_iter()
                            .partition(|(_, at)| at.elapsed() >= inner.idle_for);
                        *list = keep;
                        out.extend(old.into_iter().map(|(c, _)| c));
                    }
                    st.idle.retain(|_, l| !l.is_empty());
                    out
                };
                for c in expired {
                    c.close();
                }
            }
        });
        Pool { inner }
    }

    /// Waits for a turn at `host` (at most `max_per_host` at once, first come first served);
    /// hold the permit for the whole attempt, then [`Pool::acquire`] rarely has to wait.
    pub(crate) async fn gate(&self, host: &str) -> Option<OwnedSemaphorePermit> {
        let gate = {
            let mut gates = self.inner.gates.lock().unwrap_or_else(|p| p.into_inner());
            gates
                .entry(host.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.max_per_host)))
                .clone()
        };
        gate.acquire_owned().await.ok()
    }

    /// Waits for an idle session or a free slot for `key`, within both limits.
    pub(crate) async fn acquire(&self, key: &Key) -> Acquired {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut evicted = Vec::new();
            {
                let mut st = self.inner.lock();
                if let Some(list) = st.idle.get_mut(key) {
                    while let Some((conn, at)) = list.pop() {
                        if at.elapsed() < self.inner.idle_for && !conn.session.broken {
                            return Acquired::Reused(Box::new(conn));
                        }
                        evicted.push(conn);
                    }
                }
                let on_host = st.per_host.get(&key.host).copied().unwrap_or(0);
                if evicted.is_empty() && on_host < self.inner.max_per_host {
                    if st.total < self.inner.max_total {
                        st.total += 1;
                        *st.per_host.entry(key.host.clone()).or_insert(0) += 1;
                        return Acquired::Fresh(Slot {
                            pool: Arc::downgrade(&self.inner),
                            host: key.host.clone(),
                        });
                    }
                    // At the total limit: make room by closing the oldest idle session.
                    let oldest = st
                        .idle
                        .iter()
                        .filter_map(|(k, l)| l.first().map(|(_, at)| (k.clone(), *at)))
                        .min_by_key(|(_, at)| *at)
                        .map(|(k, _)| k);
                    if let Some(k) = oldest
                        && let Some(list) = st.idle.get_mut(&k)
                        && !list.is_empty()
                    {
                        evicted.push(list.remove(0).0);
                    }
                }
            }
            if evicted.is_empty() {
                notified.await;
            } else {
                // Closing frees slots (and wakes waiters) once the QUIT is done; try again
                // straight away in case an idle session for this key was among them.
                for c in evicted {
                    c.close();
                }
                notified.await;
            }
        }
    }

    /// Closes every idle session for `key`: one of them was found dead (the server closed it or
    /// restarted), so the others opened to the same server before are most likely dead too,
    /// and the next [`Pool::acquire`] for `key` opens a fresh connection instead of trying them.
    pub(crate) fn discard_idle(&self, key: &Key) {
        let stale = self.inner.lock().idle.remove(key).unwrap_or_default();
        for (conn, _) in stale {
            conn.close();
        }
    }

    /// Gives a session back: kept idle for reuse unless it is broken.
    pub(crate) fn release(&self, conn: Conn) {
        if conn.session.broken {
            conn.close();
            return;
        }
        {
            let mut st = self.inner.lock();
            st.idle
                .entry(conn.key.clone())
                .or_default()
                .push((conn, Instant::now()));
        }
        self.inner.notify.notify_waiters();
    }
}
