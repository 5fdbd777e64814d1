//! What happens to each recipient after it reaches herald, as one record ([`Event`]), and the
//! hub every stage emits them into ([`EventHub`]). Everything after delivery reads or derives
//! from these records: the message history and its search, the webhooks to the apps, the
//! per-app bounce/complaint rates and the suppression list.
//!
//! A bottom-layer module (it imports nothing of herald's above `config`), so that inbound,
//! outbound, the queue and the feedback listener can all emit. Emitting never blocks and never
//! fails the mail path: each subscriber has a bounded channel, and a subscriber that falls
//! behind loses events, which are counted ([`EventHub::dropped`]).

pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What happened to one recipient of one message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Accepted from the app and spooled (the `250` after DATA).
    Accepted,
    /// The remote MX answered `2xx`.
    Delivered,
    /// A temporary failure; another attempt is scheduled.
    Deferred,
    /// A permanent failure at delivery time, or a bounce (DSN) that came back later.
    Bounced,
    /// Given up at the queue's `max_age`.
    Expired,
    /// Refused at submission (RCPT or DATA) for a reason other than suppression.
    Refused,
    /// Refused at RCPT because the address is on the suppression list.
    Suppressed,
    /// A recipient complained (an ARF report came back).
    Complained,
    /// The recipient used one-click unsubscribe.
    Unsubscribed,
    /// Held by an operator or by the app's guard.
    Held,
    /// Released from hold.
    Released,
    /// The app was paused by its guard (recipient empty) or resumed.
    Paused,
}

impl EventKind {
    /// The name used in logs, JSON and search (`delivered`, `bounced`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Delivered => "delivered",
            EventKind::Deferred => "deferred",
            EventKind::Bounced => "bounced",
            EventKind::Expired => "expired",
            EventKind::Refused => "refused",
            EventKind::Suppressed => "suppressed",
            EventKind::Complained => "complained",
            EventKind::Unsubscribed => "unsubscribed",
            EventKind::Held => "held",
            EventKind::Released => "released",
            EventKind::Paused => "paused",
        }
    }

    /// The kind named `s` (as [`EventKind::as_str`] writes it).
    pub fn parse(s: &str) -> Option<EventKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
    }
}

/// Every kind, in declaration order.
pub const ALL_KINDS: [EventKind; 12] = [
    EventKind::Accepted,
    EventKind::Delivered,
    EventKind::Deferred,
    EventKind::Bounced,
    EventKind::Expired,
    EventKind::Refused,
    EventKind::Suppressed,
    EventKind::Complained,
    EventKind::Unsubscribed,
    EventKind::Held,
    EventKind::Released,
    EventKind::Paused,
];

/// The class of a remote refusal (issue 24): what it says about the address and about the
/// sender, which decides suppression and the app's guard.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// The address or domain does not exist: suppress.
    Hard,
    /// Mailbox full, temporarily unavailable: retry, do not suppress.
    Soft,
    /// Refused for reputation, policy, spam or authentication: the sender's fault, not the
    /// address's; counted against the app, never a suppression.
    Block,
    /// Rate limited by the receiver: slow down and retry.
    Throttle,
    /// Anything else.
    Other,
}

impl BounceClass {
    /// The name used in logs, JSON and metrics (`hard`, `soft`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            BounceClass::Hard => "hard",
            BounceClass::Soft => "soft",
            BounceClass::Block => "block",
            BounceClass::Throttle => "throttle",
            BounceClass::Other => "other",
        }
    }
}

/// One thing that happened to one recipient. Fields that do not apply are `None`/empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
    /// The node that saw it (its host name, or `[cluster]` node name).
    #[serde(default)]
    pub node: String,
    /// The app the message came from, if any.
    #[serde(default)]
    pub app: Option<String>,
    /// herald's queue id, once the message has one.
    #[serde(default)]
    pub queue_id: Option<String>,
    /// The message's `Message-ID:` header, without angle brackets.
    #[serde(default)]
    pub message_id: Option<String>,
    /// The envelope sender (MAIL FROM) as the app gave it.
    #[serde(default)]
    pub sender: String,
    /// The recipient this is about (empty for app-wide events such as a pause).
    #[serde(default)]
    pub recipient: String,
    /// The remote host tried, as `name [address]`.
    #[serde(default)]
    pub remote: Option<String>,
    /// TLS protocol and cipher of the delivery, if it used TLS.
    #[serde(default)]
    pub tls: Option<String>,
    /// The TLS policy that applied (`mta-sts`, `dane`, `opportunistic`, …).
    #[serde(default)]
    pub tls_policy: Option<String>,
    /// The remote's reply, or herald's reason (`550 5.1.1 no such user`).
    #[serde(default)]
    pub reply: Option<String>,
    /// The attempt number this came from (1 for the first).
    #[serde(default)]
    pub attempt: Option<u32>,
    /// The class of a refusal or bounce.
    #[serde(default)]
    pub class: Option<BounceClass>,
}

impl Event {
    /// An event of `kind` for `recipient` at `time`, every other field empty.
    pub fn new(kind: EventKind, time: u64, recipient: impl Into<String>) -> Event {
        Event {
            time,
            kind,
            node: String::new(),
            app: None,
            queue_id: None,
            message_id: None,
            sender: String::new(),
            recipient: recipient.into(),
            remote: None,
            tls: None,
            tls_policy: None,
            reply: None,
            attempt: None,
            class: None,
        }
    }
}

/// The `Message-ID:` of a header block (CRLF lines, folded lines joined), without angle
/// brackets and at most 500 characters; `None` when absent or empty. The block may be a
/// whole message: the search stops at the blank line. For emitters: it looks at the first
/// bytes of each field only, and copies nothing but the id.
pub fn message_id(headers: &[u8]) -> Option<String> {
    const NAME: &[u8] = b"message-id";
    let mut lines = headers.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() || line == b"\r" {
            break;
        }
        // Continuation lines and other fields are skipped on their first bytes; the name may
        // be followed by white space before its colon (RFC 5322 obsolete syntax).
        let Some(rest) = line
            .get(..NAME.len())
            .filter(|n| n.eq_ignore_ascii_case(NAME))
            .map(|_| line[NAME.len()..].trim_ascii_start())
            .and_then(|r| r.strip_prefix(b":"))
        else {
            continue;
        };
        let mut value = String::from_utf8_lossy(rest).into_owned();
        while let Some(next) = lines.peek()
            && next.first().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            value.push_str(&String::from_utf8_lossy(next));
            lines.next();
        }
        let id = value
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        return (!id.is_empty()).then(|| id.chars().take(500).collect());
    }
    None
}

/// Where events go: every subscriber gets every event through its own bounded channel.
/// Cloning is cheap (one `Arc`); a hub with no subscribers costs one lock per emit.
#[derive(Clone, Default)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

/// One subscriber: its channel, and which events it wants (`None`: all).
type Subscriber = (mpsc::Sender<Arc<Event>>, Option<fn(&Event) -> bool>);

#[derive(Default)]
struct HubInner {
    subscribers: Mutex<Vec<Subscriber>>,
    dropped: AtomicU64,
    node: OnceLock<String>,
}

/// The process's hub: every stage emits here (`events::hub().emit(…)`), and the history
/// store and webhook outbox subscribe at start-up. One per process, as there is one node per
/// process; a global spares threading a handle through every constructor of every stage.
pub fn hub() -> &'static EventHub {
    static HUB: OnceLock<EventHub> = OnceLock::new();
    HUB.get_or_init(EventHub::new)
}

impl EventHub {
    /// A hub with no subscribers.
    pub fn new() -> EventHub {
        EventHub::default()
    }

    /// A new subscriber whose channel holds up to `capacity` events it has not yet taken.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        self.add(capacity, None)
    }

    /// A new subscriber that gets only the events `wanted` says yes to: the others cost it
    /// nothing (no wake-up of its task for events it would skip).
    pub fn subscribe_where(
        &self,
        capacity: usize,
        wanted: fn(&Event) -> bool,
    ) -> mpsc::Receiver<Arc<Event>> {
        self.add(capacity, Some(wanted))
    }

    fn add(
        &self,
        capacity: usize,
        wanted: Option<fn(&Event) -> bool>,
    ) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut subs) = self.inner.subscribers.lock() {
            subs.push((tx, wanted));
        }
        rx
    }

    /// Names the node events are stamped with when their emitter left `node` empty (the
    /// first call wins).
    pub fn set_node(&self, node: &str) {
        let _ = self.inner.node.set(node.to_string());
    }

    /// Whether anyone listens: emitters skip building events (parsing a Message-ID, …)
    /// when nobody does.
    pub fn has_subscribers(&self) -> bool {
        self.inner
            .subscribers
            .lock()
            .map(|s| !s.is_empty())
            .unwrap_or(false)
    }

    /// Hands `event` to every subscriber without waiting; a full channel loses it (counted),
    /// a closed one is forgotten.
    pub fn emit(&self, mut event: Event) {
        let Ok(mut subs) = self.inner.subscribers.lock() else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        if event.node.is_empty()
            && let Some(node) = self.inner.node.get()
        {
            event.node = node.clone();
        }
        let event = Arc::new(event);
        subs.retain(|(tx, wanted)| {
            if wanted.is_some_and(|w| !w(&event)) {
                return !tx.is_closed();
            }
            match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Ends every subscriber's channel (at shutdown, once the stages have stopped emitting):
    /// each subscriber still takes what is queued, then sees the end. Later events go nowhere.
    pub fn close(&self) {
        if let Ok(mut subs) = self.inner.subscribers.lock() {
            subs.clear();
        }
    }

    /// Events lost because a subscriber's channel was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_every_event_and_a_full_one_counts_its_losses() {
        let hub = EventHub::new();
        let mut a = hub.subscribe(8);
        let mut b = hub.subscribe(1);
        hub.emit(Event::new(EventKind::Delivered, 1, "a@example.net"));
        hub.emit(Event::new(EventKind::Bounced, 2, "b@example.net"));
        assert_eq!(a.recv().await.map(|e| e.kind), Some(EventKind::Delivered));
        assert_eq!(a.recv().await.map(|e| e.kind), Some(EventKind::Bounced));
        assert_eq!(b.recv().await.map(|e| e.kind), Some(EventKind::Delivered));
        assert_eq!(hub.dropped(), 1);
        drop(a);
        hub.emit(Event::new(EventKind::Accepted, 3, "c@example.net"));
        assert_eq!(b.recv().await.map(|e| e.time), Some(3));
    }

    #[tokio::test]
    async fn a_filtered_subscriber_gets_only_what_it_wants() {
        let hub = EventHub::new();
        let mut all = hub.subscribe(8);
        let mut bounces = hub.subscribe_where(8, |e| e.kind == EventKind::Bounced);
        hub.emit(Event::new(EventKind::Accepted, 1, "a@example.net"));
        hub.emit(Event::new(EventKind::Bounced, 2, "a@example.net"));
        assert_eq!(all.recv().await.map(|e| e.time), Some(1));
        assert_eq!(all.recv().await.map(|e| e.time), Some(2));
        assert_eq!(bounces.recv().await.map(|e| e.time), Some(2));
        assert!(bounces.try_recv().is_err());
        assert_eq!(hub.dropped(), 0);
    }

    #[test]
    fn message_id_is_found_case_insensitively_and_unfolded() {
        let h = b"Subject: x\r\nmessage-ID:\r\n <abc@example.test>\r\nTo: y\r\n\r\nMessage-ID: <body>\r\n";
        assert_eq!(message_id(h).as_deref(), Some("abc@example.test"));
        assert_eq!(message_id(b"Subject: x\r\n\r\n"), None);
        assert_eq!(message_id(b"Message-ID: <>\r\n"), None);
        assert_eq!(
            message_id(b"Message-Id : <a@b>\r\n\r\nbody").as_deref(),
            Some("a@b")
        );
        assert_eq!(message_id(b"Message-IDs: <a@b>\r\n"), None);
        assert_eq!(
            message_id(b"Subject: x\r\n message-id: <fold@b>\r\n\r\n"),
            None
        );
        assert_eq!(message_id(b"To: y\r\n\r\nMessage-ID: <body@b>\r\n"), None);
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in ALL_KINDS {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
