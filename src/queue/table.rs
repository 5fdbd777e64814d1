//! The queue's table (issue 29): one compact [`Entry`] per queued message — its due time,
//! flags and what `herald queue summary` counts (size, age, app, waiting recipients per
//! destination, interned) — about 100 bytes with its share of the hash table and the
//! schedule, where the whole message (envelope, recipients, replies) took over a kilobyte.
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

/// Where a message's waiting recipients go: (domain, how many), the common single domain
/// kept inline.
enum Dests {
    One(u32, u32),
    Many(Box<[(u32, u32)]>),
}

/// Add or take away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sign {
    Add,
    Sub,
}

/// One queued message in the table (module documentation).
pub(super) struct Entry {
    /// The whole message while it is fresh, being attempted or being changed; `None` while it
    /// waits on disk.
    pub(super) msg: Option<Box<SpooledMessage>>,
    /// Serialises its state writes, while anything writes.
    io: Option<Serial>,
    /// In a cluster: the operator sequence last seen for it (see [`crate::spool::Leases`]).
    pub(super) control_seq: i64,
    due: u64,
    received_at: u32,
    size: u32,
    app: u32,
    held: bool,
    in_flight: bool,
    deleted: bool,
    dests: Dests,
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
    entries: HashMap<IdKey, Entry>,
    schedule: BTreeSet<(u64, IdKey)>,
    domains: Names,
    apps: Names,
    /// Messages and waiting recipients by second of acceptance.
    ages: BTreeMap<u32, Counts>,
    totals: Totals,
    in_flight: u64,
    /// Recovery is still reading the spool: messages are still coming in.
    pub(super) recovering: bool,
}

impl Table {
    /// Takes a message in: `keep` keeps the whole message in memory (a fresh arrival, about
    /// to be attempted); without, only its entry (it waits on disk). A message already in
    /// the table is left as it is.
    pub(super) fn insert(&mut self, msg: SpooledMessage, keep: bool) {
        let Some(key) = id_key(&msg.id) else {
            tracing::error!(queue_id = %msg.id, "not a queue id; left in the spool");
            return;
        };
        if self.entries.contains_key(&key) {
            return;
        }
        let due = super::manager::next_due_ms(&msg);
        let mut entry = Entry {
            msg: None,
            io: None,
            control_seq: 0,
            due: UNSCHEDULED,
            received_at: 0,
            size: 0,
            app: 0,
            held: false,
            in_flight: false,
            deleted: false,
            dests: Dests::One(0, 0),
        };
        self.describe(&mut entry, &msg);
        self.account(&entry, Sign::Add);
        if keep {
            entry.msg = Some(Box::new(msg));
        }
        self.entries.insert(key, entry);
        self.schedule_key(key, due);
    }

    /// Takes in the changes of a message (an attempt settled, an operator's hold): its
    /// counts follow, and the copy kept in memory is replaced.
    pub(super) fn update(&mut self, msg: &SpooledMessage) {
        let Some(key) = id_key(&msg.id) else {
            return;
        };
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        if !entry.deleted {
            self.account(&entry, Sign::Sub);
            self.describe(&mut entry, msg);
            self.account(&entry, Sign::Add);
        }
        if let Some(kept) = entry.msg.as_deref_mut() {
            kept.clone_from(msg);
        }
        self.entries.insert(key, entry);
    }

    /// Fills the entry's summary facts from the message.
    fn describe(&mut self, entry: &mut Entry, msg: &SpooledMessage) {
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
        entry.dests = match dests.as_slice() {
            [(d, n)] => Dests::One(*d, *n),
            _ => Dests::Many(dests.into_boxed_slice()),
        };
    }

    /// Adds an entry to the summary's counts, or takes it away.
    fn account(&mut self, entry: &Entry, sign: Sign) {
        let waiting: u64 = dest_pairs(&entry.dests).map(|(_, n)| u64::from(n)).sum();
        for (d, n) in dest_pairs(&entry.dests) {
            if let Some(c) = self.domains.counts(d) {
                c.add(1, u64::from(n), sign);
            }
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
        self.entries.get(&id_key(id)?)
    }

    /// The entry of `id`, to change what is not counted (the kept message, the sequence).
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.get_mut(&id_key(id)?)
    }

    /// Whether `id` is in the table (deleted or not).
    pub(super) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// (Re)schedules `id` at `due_ms`, or takes it off the schedule with `None`.
    pub(super) fn schedule(&mut self, id: &str, due_ms: Option<u64>) {
        if let Some(key) = id_key(id) {
            self.schedule_key(key, due_ms);
        }
    }

    fn schedule_key(&mut self, key: IdKey, due_ms: Option<u64>) {
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
            .map(|(due, key)| (*due, id_string(*key)))
    }

    /// Marks an attempt of `id` started or ended.
    pub(super) fn set_in_flight(&mut self, id: &str, in_flight: bool) {
        let Some(entry) = self.get_mut(id) else {
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
        let Some(key) = id_key(id) else {
            return;
        };
        let Some(mut entry) = self.entries.remove(&key) else {
            return;
        };
        if !entry.deleted {
            self.account(&entry, Sign::Sub);
            entry.deleted = true;
        }
        self.entries.insert(key, entry);
    }

    /// Takes `id` out of the table.
    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        self.schedule(id, None);
        let entry = self.entries.remove(&id_key(id)?)?;
        if !entry.deleted {
            self.account(&entry, Sign::Sub);
        }
        if entry.in_flight {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        Some(entry)
    }

    /// The lock serialising `id`'s state writes (made when first needed).
    pub(super) fn serial(&mut self, id: &str) -> Option<Serial> {
        let entry = self.get_mut(id)?;
        Some(entry.io.get_or_insert_with(Serial::default).clone())
    }

    /// After an attempt or an operator's change was recorded: unless an attempt runs, the
    /// message waits on disk from now on (its copy in memory goes), and its lock goes when
    /// nobody else holds it.
    pub(super) fn settle(&mut self, id: &str) {
        let Some(entry) = self.get_mut(id) else {
            return;
        };
        if entry.in_flight {
            return;
        }
        entry.msg = None;
        if entry
            .io
            .as_ref()
            .is_some_and(|io| Arc::strong_count(io) == 1)
        {
            entry.io = None;
        }
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
            .map(|(k, _)| id_string(*k))
            .collect()
    }

    /// At most `limit` ids sorting after `after`, in order (deleted ones left out).
    pub(super) fn page(&self, after: Option<&str>, limit: usize) -> Vec<String> {
        let after = after.and_then(id_key).unwrap_or(0);
        let mut keys: Vec<IdKey> = self
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
        keys.into_iter().map(id_string).collect()
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
            .range(..(now.saturating_mul(1000).saturating_add(1), 0))
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

/// The (domain, waiting recipients) pairs of a message.
fn dest_pairs(dests: &Dests) -> impl Iterator<Item = (u32, u32)> + '_ {
    let (one, many) = match dests {
        Dests::One(d, n) => (Some((*d, *n)), &[][..]),
        Dests::Many(v) => (None, &v[..]),
    };
    one.into_iter()
        .filter(|(_, n)| *n > 0)
        .chain(many.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::new_queue_id;

    fn message(app: Option<&str>, rcpts: &[&str], received_at: u64) -> SpooledMessage {
        crate::queue::summary::tests::message(&new_queue_id(), app, rcpts, received_at)
    }

    /// The summary of the table's kept counts is the one a walk over the messages gives,
    /// through insertions, changes, deletions and removals.
    #[test]
    fn the_kept_counts_match_a_walk_over_the_messages() {
        let now = 1_000_000;
        let mut msgs = [
            message(
                Some("shop"),
                &["x@Big.test", "y@big.test", "z@small.test"],
                now - 10,
            ),
            message(None, &["w@big.test", "v@small.test"], now - 7200),
            message(Some("shop"), &["u@small.test"], now - 100_000),
            message(Some("news"), &["t@other.test"], now - 30),
        ];
        let mut table = Table::default();
        for (i, m) in msgs.iter().enumerate() {
            table.insert(m.clone(), i % 2 == 0);
        }
        // An attempt delivered one recipient of the second; an operator held the third.
        msgs[1].state.recipients[1].status = RecipientStatus::Delivered;
        table.update(&msgs[1]);
        msgs[2].state.hold();
        table.update(&msgs[2]);
        table.schedule(&msgs[2].id, None);
        // The fourth is deleted while attempted, then its round ends.
        table.set_in_flight(&msgs[3].id, true);
        table.mark_deleted(&msgs[3].id);
        assert_eq!(table.in_flight(), 1);
        table.remove(&msgs[3].id);
        assert_eq!(table.in_flight(), 0);

        let mut walked = Tally::default();
        for m in &msgs[..3] {
            walked.add(m, false, now);
        }
        let mut expected = walked.finish();
        let mut kept = table.tally(now).finish();
        assert_eq!(kept.due, 2, "the two not held are due since their arrival");
        for s in [&mut expected, &mut kept] {
            s.domains.sort_by(|a, b| a.key.cmp(&b.key));
            s.apps.sort_by(|a, b| a.key.cmp(&b.key));
        }
        assert_eq!(kept, expected);
        assert_eq!(kept.held, 1);
        assert_eq!(table.depth(), (3, Some(now - 100_000)));
        assert_eq!(table.page(None, 2).len(), 2);
        assert_eq!(table.page(Some(&msgs[1].id), 10), [msgs[2].id.clone()]);
    }

    #[test]
    fn the_schedule_gives_the_earliest_message_first() {
        let mut table = Table::default();
        let (a, b) = (
            message(None, &["x@a.test"], 5),
            message(None, &["y@b.test"], 3),
        );
        table.insert(a.clone(), false);
        table.insert(b.clone(), false);
        assert_eq!(table.first_due(), Some((3000, b.id.clone())));
        table.schedule(&b.id, None);
        assert_eq!(table.first_due(), Some((5000, a.id.clone())));
        table.schedule(&a.id, Some(9000));
        table.schedule(&b.id, Some(7000));
        assert_eq!(table.first_due(), Some((7000, b.id)));
    }
}
