//! The history events of the queue ([`crate::events`]): what an attempt settled for each
//! recipient (delivered, deferred, bounced, expired), and an operator's hold or release.
//! Built only when someone subscribes to the hub; emitting never waits.

use crate::events::{Event, EventKind, hub};
use crate::outbound::outcome::{Failure, RecipientResult};
use crate::spool::{RecipientStatus, SpooledMessage};

/// How one tried recipient's attempt went, taken from its result before
/// [`super::transition::settle`] consumes it.
pub(super) struct Tried {
    /// The recipient's index in the message.
    index: usize,
    /// `Some(permanent)` for an answer or failure, `None` when it was not attempted
    /// (shutdown).
    permanent: Option<bool>,
    /// The TLS version of the session that answered, and the policy it ran under.
    tls: Option<String>,
    tls_policy: Option<&'static str>,
}

/// What the events of an attempt need from its results; empty when nobody listens.
pub(super) fn tried(results: &[(usize, RecipientResult)]) -> Vec<Tried> {
    if !hub().has_subscribers() {
        return Vec::new();
    }
    results
        .iter()
        .map(|(i, r)| Tried {
            index: *i,
            permanent: match &r.outcome {
                Ok(_) => Some(false),
                Err(Failure::NotAttempted | Failure::Throttled { .. }) => None,
                Err(f) => Some(f.is_permanent()),
            },
            tls: r.tls.clone(),
            tls_policy: r.tls_policy,
        })
        .collect()
}

/// Emits one event per tried recipient of `msg` (its state already settled) at `now`.
pub(super) fn settled(msg: &SpooledMessage, data: &[u8], tried: Vec<Tried>, now: u64) {
    if tried.is_empty() {
        return;
    }
    // The whole message: the search stops at the end of the header section.
    let message_id = crate::events::message_id(data);
    for t in tried {
        let (Some(r), Some(permanent)) = (msg.state.recipients.get(t.index), t.permanent) else {
            continue;
        };
        let kind = match r.status {
            RecipientStatus::Delivered => EventKind::Delivered,
            RecipientStatus::Pending => EventKind::Deferred,
            RecipientStatus::Failed if permanent => EventKind::Bounced,
            RecipientStatus::Failed => EventKind::Expired,
        };
        let mut e = base(msg, kind, now, &r.address);
        e.message_id = message_id.clone();
        e.remote = r.last_host.clone();
        e.reply = r.last_reply.clone();
        e.attempt = Some(r.attempts);
        e.class = r.class;
        e.tls = t.tls;
        e.tls_policy = t.tls_policy.map(str::to_string);
        hub().emit(e);
    }
}

/// The `held` or `released` events of an operator's action, one per pending recipient
/// (empty when nobody listens); emit them with [`send`] once the change is recorded.
pub(super) fn operator(msg: &SpooledMessage, held: bool, now: u64) -> Vec<Event> {
    if !hub().has_subscribers() {
        return Vec::new();
    }
    let kind = if held {
        EventKind::Held
    } else {
        EventKind::Released
    };
    msg.state
        .recipients
        .iter()
        .filter(|r| r.status == RecipientStatus::Pending)
        .map(|r| base(msg, kind, now, &r.address))
        .collect()
}

/// Emits `events`.
pub(super) fn send(events: Vec<Event>) {
    for e in events {
        hub().emit(e);
    }
}

fn base(msg: &SpooledMessage, kind: EventKind, now: u64, rcpt: &str) -> Event {
    let mut e = Event::new(kind, now, rcpt);
    e.app = msg.envelope.app.clone();
    e.queue_id = Some(msg.id.to_string());
    e.sender = msg.envelope.mail_from.clone();
    e
}
