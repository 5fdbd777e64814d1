//! The queue's table (issue 29): one compact [`Entry`] per queued message — its due time,
//! flags and what `herald queue summary` counts (size, age, app, waiting recipients per
//! destination, interned) — 32 bytes, about 100–150 with its key, its share of the hash
//! table and the schedule, where the whole message (envelope, recipients, replies) took over
//! a kilobyte.
//! The whole message stays in memory only while it is fresh (accepted, not attempted yet) or
//! being attempted or changed; a message that waits for a later attempt is read back from
//! the spool when it is due or an operator asks for it.
//!
//! The summary's counts are kept as entries come, change and go, so `herald queue summary`
//! reads them without walking the queue; the schedule is a sorted set, so finding the next
//! due message costs the same whatever waits behind it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::summary::Tally;
use crate::spool::{IdKey, RecipientStatus, SpooledMessage, id_key, id_string};

/// Serialises the state writes of one message (attempt, operator) so they reach the disk in
/// order.
pub(super) type Serial = Arc<tokio::sync::Mutex<()>>;

/// Arrivals after which the queue, once idle again, gives memory back ([`Table::burst_over`]).
const BURST: u64 = 4096;

/// An entry's due time when it is not on the schedule.
const UNSCHEDULED: u64 = u64::MAX;

/// Distinct names (destination domains, apps), each stored once and referred to by number,
/// with the messages and waiting recipients counted for each.
#[derive(Default)]
struct Names {
    index: HashMap<Arc<str>, u32>,
    names: Vec<(Arc<str>, Counts)>,
}

/// Messages and waiting recipients.
#[derive(Default, Clone, Copy)]
struct Counts {
    messages: u64,
    recipients: u64,
}

impl Counts {
    fn add(&mut self, messages: u64, recipients: u64, sign: Sign) {
        match sign {
            Sign::Add => {
                self.messages += messages;
                self.recipients += recipients;
            }
            Sign::Sub => {
                self.messages = self.messages.saturating_sub(messages);
                self.recipients = self.recipients.saturating_sub(recipients);
            }
        }
    }
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.index.get(name) {
            return n;
        }
        let n = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.index.insert(name.clone(), n);
        self.names.push((name, Counts::default()));
        n
    }

    fn counts(&mut self, n: u32) -> Option<&mut Counts> {
        self.names.get_mut(n as usize).map(|(_, c)| c)
    }
}

/// Add or take away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Sub,
}

/// A queue id's key as two words, so that the table's slots and the schedule's elements are
/// aligned to 8 bytes rather than 16 (a `u128` would pad each slot of the hash table to 64
/// bytes and each element of the schedule to 32); sorts as the key does.
type Key = [u64; 2];

fn key_of(id: &str) -> Option<Key> {
    id_key(id).map(split)
}

fn split(key: IdKey) -> Key {
    [(key >> 64) as u64, key as u64]
}

fn join(key: Key) -> IdKey {
    (u128::from(key[0]) << 64) | u128::from(key[1])
}

/// [`Entry::dest`] of a message whose waiting recipients go to several domains (listed in
/// [`Table::spread`]).
const SPREAD: u32 = u32::MAX;

/// One queued message in the table (module documentation): 32 bytes, so that with its key
/// and the hash table's spare room a message costs about 50–100 bytes there. What only some
/// messages have (the whole message, a lock, an operator's sequence, several destination
/// domains) is kept beside it, in [`Table::hot`] and [`Table::spread`].
pub(super) struct Entry {
    due: u64,
    received_at: u32,
    size: u32,
    app: u32,
    /// The domain of its waiting recipients, or [`SPREAD`].
    dest: u32,
    /// Its waiting recipients.
    waiting: u32,
    held: bool,
    in_flight: bool,
    deleted: bool,
}

impl Entry {
    /// Held by the operator (or waiting for its app's guard).
    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// An attempt is under way.
    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Deleted while an attempt was under way (its round records nothing).
    pub(super) fn deleted(&self) -> bool {
        self.deleted
    }
}

/// What a few entries have besides their counts: those being attempted, fresh or changed,
/// and (in a cluster) those an operator changed.
#[derive(Default)]
struct Hot {
    /// The whole message while it is fresh, being attempted or being changed; `None` while
    /// it waits on disk.
    msg: Option<Box<SpooledMessage>>,
    /// Serialises its state writes, while anything writes.
    io: Option<Serial>,
    /// In a cluster: the operator sequence last seen for it (see [`crate::spool::Leases`]).
    control_seq: i64,
}

impl Hot {
    fn is_empty(&self) -> bool {
        self.msg.is_none() && self.io.is_none() && self.control_seq == 0
    }
}

/// Totals over the queue (deleted entries left out).
#[derive(Default)]
struct Totals {
    messages: u64,
    recipients: u64,
    held: u64,
    bytes: u64,
}

/// The queue's table (module documentation).
#[derive(Default)]
pub(super) struct Table {
    entries: HashMap<Key, Entry>,
    /// The whole message, lock and sequence of the entries that have any.
    hot: HashMap<Key, Hot>,
    /// (domain, waiting recipients) of the entries whose recipients go to several domains.
    spread: HashMap<Key, Box<[(u32, u32)]>>,
    schedule: BTreeSet<(u64, Key)>,
    domains: Names,
    apps: Names,
    /// Messages and waiting recipients by second of acceptance.
    ages: BTreeMap<u32, Counts>,
    totals: Totals,
    in_flight: u64,
    /// Messages taken in so far, and that count when memory was last given back.
    arrived: u64,
    given_back_at: u64,
    /// Recovery is still reading the spool: messages are still coming in.
    pub(super) recovering: bool,
}

impl Table {
    /// Takes a message in: `keep` keeps the whole message in memory (a fresh arrival, about
    /// to be attempted); without, only its entry (it waits on disk). A message already in
    /// the table is left as it is.
    pub(super) fn insert(&mut self, msg: SpooledMessage, keep: bool) {
        let Some(key) = key_of(&msg.id) else {
            tracing::error!(queue_id = %msg.id, "not a queue id; left in the spool");
            return;
        };
        if self.entries.contains_key(&key) {
            return;
        }
        self.arrived += 1;
        let due = super::manager::next_due_ms(&msg);
        let mut entry = Entry {
            due: UNSCHEDULED,
            received_at: 0,
            size: 0,
            app: 0,
            dest: 0,
            waiting: 0,
            held: false,
            in_flight: false,
            deleted: false,
        };
        self.describe(key, &mut entry, &msg);
        self.account(key, &entry, Sign::Add);
        if keep {
            self.hot.entry(key).or_default().msg = Some(Box::new(msg));
        }
        self.entries.insert(key, entry);
        self.schedule_key(key, due);
    }

    /// Takes in the changes of a message (an attempt settled, an operator's hold): its
    /// counts follow, and the copy kept in memory is replaced.
    pub(super) fn update(&mut self, msg: &SpooledMessage) {
        let Some(key) = key_of(&msg.id) else {
            return;
        };
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        if !entry.deleted {
            self.account(key, &entry, Sign::Sub);
            self.describe(key, &mut entry, msg);
            self.account(key, &entry, Sign::Add);
        }
        if let Some(kept) = self.hot.get_mut(&key).and_then(|h| h.msg.as_deref_mut()) {
            kept.clone_from(msg);
        }
        self.entries.insert(key, entry);
    }

    /// Fills the entry's summary facts from the message.
    fn describe(&mut self, key: Key, entry: &mut Entry, msg: &SpooledMessage) {
        entry.received_at = u32::try_from(msg.envelope.received_at).unwrap_or(u32::MAX);
        entry.size = u32::try_from(msg.size).unwrap_or(u32::MAX);
        entry.app = self.apps.intern(msg.envelope.app.as_deref().unwrap_or("-"));
        entry.held = msg.state.held;
        let mut dests: Vec<(u32, u32)> = Vec::new();
        for r in &msg.state.recipients {
            if r.status != RecipientStatus::Pending {
                continue;
            }
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            let n = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
                self.domains.intern(&domain.to_ascii_lowercase())
            } else {
                self.domains.intern(domain)
            };
            match dests.iter_mut().find(|(d, _)| *d == n) {
                Some((_, count)) => *count += 1,
                None => dests.push((n, 1)),
            }
        }
        entry.waiting = dests.iter().map(|(_, n)| *n).sum();
        match dests.as_slice() {
            [] => {
                entry.dest = 0;
                self.spread.remove(&key);
            }
            [(d, _)] => {
                entry.dest = *d;
                self.spread.remove(&key);
            }
            _ => {
                entry.dest = SPREAD;
                self.spread.insert(key, dests.into_boxed_slice());
            }
        }
    }

    /// Adds an entry to the summary's counts, or takes it away.
    fn account(&mut self, key: Key, entry: &Entry, sign: Sign) {
        let waiting = u64::from(entry.waiting);
        if entry.dest == SPREAD {
            for (d, n) in self.spread.get(&key).map_or(&[][..], |s| &s[..]) {
                if let Some(c) = self.domains.counts(*d) {
                    c.add(1, u64::from(*n), sign);
                }
            }
        } else if waiting > 0
            && let Some(c) = self.domains.counts(entry.dest)
        {
            c.add(1, waiting, sign);
        }
        if let Some(c) = self.apps.counts(entry.app) {
            c.add(1, waiting, sign);
        }
        let age = self.ages.entry(entry.received_at).or_default();
        age.add(1, waiting, sign);
        if age.messages == 0 {
            self.ages.remove(&entry.received_at);
        }
        let t = &mut self.totals;
        match sign {
            Sign::Add => {
                t.messages += 1;
                t.recipients += waiting;
                t.held += u64::from(entry.held);
                t.bytes += u64::from(entry.size);
            }
            Sign::Sub => {
                t.messages = t.messages.saturating_sub(1);
                t.recipients = t.recipients.saturating_sub(waiting);
                t.held = t.held.saturating_sub(u64::from(entry.held));
                t.bytes = t.bytes.saturating_sub(u64::from(entry.size));
            }
        }
    }

    /// The entry of `id`.
    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(&key_of(id)?)
    }

    /// Whether `id` is in the table (deleted or not).
    pub(super) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The whole message of `id` when it is kept in memory.
    pub(super) fn kept(&self, id: &str) -> Option<&SpooledMessage> {
        self.hot.get(&key_of(id)?)?.msg.as_deref()
    }

    /// The whole message of `id` kept in memory, to change it.
    pub(super) fn kept_mut(&mut self, id: &str) -> Option<&mut SpooledMessage> {
        self.hot.get_mut(&key_of(id)?)?.msg.as_deref_mut()
    }

    /// Takes the whole message of `id` out of memory (it stays in the table).
    pub(super) fn take_kept(&mut self, id: &str) -> Option<Box<SpooledMessage>> {
        let key = key_of(id)?;
        let hot = self.hot.get_mut(&key)?;
        let msg = hot.msg.take();
        if hot.is_empty() {
            self.hot.remove(&key);
        }
        msg
    }

    /// Keeps the whole message in memory for `id` while it is in the table.
    pub(super) fn keep(&mut self, msg: SpooledMessage) {
        if let Some(key) = key_of(&msg.id).filter(|k| self.entries.contains_key(k)) {
            self.hot.entry(key).or_default().msg = Some(Box::new(msg));
        }
    }

    /// In a cluster: the operator sequence last seen for `id` (0 when none was).
    pub(super) fn control_seq(&self, id: &str) -> i64 {
        key_of(id)
            .and_then(|k| self.hot.get(&k))
            .map_or(0, |h| h.control_seq)
    }

    /// In a cluster: records the operator sequence seen for `id`.
    pub(super) fn set_control_seq(&mut self, id: &str, seq: i64) {
        let Some(key) = key_of(id).filter(|k| self.entries.contains_key(k)) else {
            return;
        };
        let hot = self.hot.entry(key).or_default();
        hot.control_seq = seq;
        if hot.is_empty() {
            self.hot.remove(&key);
        }
    }

    /// (Re)schedules `id` at `due_ms`, or takes it off the schedule with `None`.
    pub(super) fn schedule(&mut self, id: &str, due_ms: Option<u64>) {
        if let Some(key) = key_of(id) {
            self.schedule_key(key, due_ms);
        }
    }

    fn schedule_key(&mut self, key: Key, due_ms: Option<u64>) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        if entry.due != UNSCHEDULED {
            self.schedule.remove(&(entry.due, key));
            entry.due = UNSCHEDULED;
        }
        if let Some(due) = due_ms.filter(|d| *d != UNSCHEDULED) {
            entry.due = due;
            self.schedule.insert((due, key));
        }
    }

    /// The next message due: (when, id).
    pub(super) fn first_due(&self) -> Option<(u64, String)> {
        self.schedule
            .first()
            .map(|(due, key)| (*due, id_string(join(*key))))
    }

    /// Marks an attempt of `id` started or ended.
    pub(super) fn set_in_flight(&mut self, id: &str, in_flight: bool) {
        let Some(entry) = key_of(id).and_then(|k| self.entries.get_mut(&k)) else {
            return;
        };
        let was = std::mem::replace(&mut entry.in_flight, in_flight);
        match (was, in_flight) {
            (false, true) => self.in_flight += 1,
            (true, false) => self.in_flight = self.in_flight.saturating_sub(1),
            _ => {}
        }
    }

    /// Marks `id` deleted while its attempt runs: off the schedule and out of the counts.
    pub(super) fn mark_deleted(&mut self, id: &str) {
        self.schedule(id, None);
        let Some(key) = key_of(id) else {
            return;
        };
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        if !entry.deleted {
            self.account(key, &entry, Sign::Sub);
            entry.deleted = true;
        }
        self.entries.insert(key, entry);
    }

    /// Takes `id` out of the table.
    pub(super) fn remove(&mut self, id: &str) {
        self.schedule(id, None);
        let Some(key) = key_of(id) else {
            return;
        };
        let Some(entry) = self.entries.remove(&key) else {
            return;
        };
        if !entry.deleted {
            self.account(key, &entry, Sign::Sub);
        }
        if entry.in_flight {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        self.hot.remove(&key);
        self.spread.remove(&key);
    }

    /// The lock serialising `id`'s state writes (made when first needed).
    pub(super) fn serial(&mut self, id: &str) -> Option<Serial> {
        let key = key_of(id).filter(|k| self.entries.contains_key(k))?;
        let hot = self.hot.entry(key).or_default();
        Some(hot.io.get_or_insert_with(Serial::default).clone())
    }

    /// After an attempt or an operator's change was recorded: unless an attempt runs, the
    /// message waits on disk from now on (its copy in memory goes), and its lock goes when
    /// nobody else holds it.
    pub(super) fn settle(&mut self, id: &str) {
        let Some(key) = key_of(id) else {
            return;
        };
        if self.entries.get(&key).is_none_or(|e| e.in_flight) {
            return;
        }
        let Some(hot) = self.hot.get_mut(&key) else {
            return;
        };
        hot.msg = None;
        if hot.io.as_ref().is_some_and(|io| Arc::strong_count(io) == 1) {
            hot.io = None;
        }
        if hot.is_empty() {
            self.hot.remove(&key);
        }
    }

    /// Messages taken in so far (to see whether arrivals go on).
    pub(super) fn arrived(&self) -> u64 {
        self.arrived
    }

    /// Whether a burst of arrivals came since memory was last given back.
    pub(super) fn burst_pending(&self) -> bool {
        self.arrived - self.given_back_at >= BURST
    }

    /// Once a burst of arrivals has been settled (nothing in flight, no new arrival for a
    /// while): gives back the room the side tables grew into while thousands of messages
    /// were fresh at once. The main table keeps its room: it holds every queued message.
    /// The caller then calls [`give_memory_back`](super::give_memory_back), with the table unlocked.
    ///
    /// The schedule is made again too when the burst is big next to it (an eighth of it or
    /// more, so its cost per arrival stays bounded): its nodes were allocated between the
    /// burst's short-lived allocations, and each one left in a page keeps that page from the
    /// system; made again at once, they are packed together, and full. Returns the arrivals
    /// of the burst.
    pub(super) fn burst_over(&mut self) -> u64 {
        let burst = self.arrived - self.given_back_at;
        self.given_back_at = self.arrived;
        self.hot.shrink_to_fit();
        self.spread.shrink_to_fit();
        if burst >= self.schedule.len() as u64 / 8 {
            self.schedule = std::mem::take(&mut self.schedule).into_iter().collect();
        }
        burst
    }

    /// Messages being attempted now.
    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Every id (deleted ones left out), unsorted.
    pub(super) fn ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(k, _)| id_string(join(*k)))
            .collect()
    }

    /// At most `limit` ids sorting after `after`, in order (deleted ones left out).
    pub(super) fn page(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        let after = after.and_then(key_of).unwrap_or([0, 0]);
        let mut keys: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, e)| !e.deleted && **k > after)
            .map(|(k, _)| *k)
            .collect();
        if limit < keys.len() {
            keys.select_nth_unstable(limit);
            keys.truncate(limit);
        }
        keys.sort_unstable();
        keys.into_iter().map(|k| id_string(join(k))).collect()
    }

    /// The queue's depth and the acceptance time of its oldest message (for `/metrics`).
    pub(super) fn depth(&self) -> (u64, Option<u64>) {
        (
            self.totals.messages,
            self.ages.keys().next().map(|s| u64::from(*s)),
        )
    }

    /// The summary's counts as they stand at `now` (seconds; the schedule in ms).
    pub(super) fn tally(&self, now: u64) -> Tally {
        let due = self
            .schedule
            .range(..(now.saturating_mul(1000).saturating_add(1), [0, 0]))
            .count() as u64;
        let t = &self.totals;
        let named = |names: &Names| {
            names
                .names
                .iter()
                .filter(|(_, c)| c.messages > 0)
                .map(|(n, c)| (n.to_string(), (c.messages, c.recipients)))
                .collect::<HashMap<String, (u64, u64)>>()
        };
        let ages = self.ages.iter().map(|(received, c)| {
            (
                now.saturating_sub(u64::from(*received)),
                c.messages,
                c.recipients,
            )
        });
        Tally::of_counts(
            [
                t.messages,
                t.recipients,
                t.held,
                self.in_flight,
                due,
                t.bytes,
            ],
            named(&self.domains),
            named(&self.apps),
            ages,
        )
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
