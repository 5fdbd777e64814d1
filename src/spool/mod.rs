//! The spool: what was accepted and has still to be delivered, stored durably. The bottom of
//! the mail's path below signing, delivery and the queue: it imports nothing above it.
//!
//! Inbound receives a message into a [`StagedMessage`] (memory up to 64 KB, then a temporary
//! file in the spool, so memory does not grow with message size), then hands the spool an
//! [`Envelope`], the headers herald adds and the staged message; [`Spool::commit`] returns
//! only once all are durable. The queue reads them back as [`SpooledMessage`]s and
//! records each recipient's progress as a [`DeliveryState`].

mod batch;
mod error;
mod fs;
mod fs_backend;
mod handle;
mod health;
mod key;
mod lock;
mod pg;
mod segment;
mod staged;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::reply::EnhancedStatus;

pub use self::error::SpoolError;
pub use self::fs::spooled_entries;
pub use self::fs_backend::FsBackend;
pub use self::handle::{
    Arrivals, ClusterEntry, Leases, NewMessage, QueueCounts, Recovery, Spool, SpoolBackend, Taken,
    new_queue_id,
};
pub use self::health::fault;
pub use self::key::{IdKey, id_key, id_string};
pub use self::lock::SpoolLock;
pub use self::pg::PgBackend;
pub use self::staged::{MessageBytes, StagedMessage};
/// The boxed future the spool's async traits return (object-safe async methods; the same
/// alias as [`crate::store::BoxFuture`]).
pub use futures_util::future::BoxFuture;

/// A queue identifier: 20 lowercase hex digits, sortable by arrival time.
pub type QueueId = String;

/// The envelope of an accepted message: who sent it, to whom, how it arrived.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// The authenticated app, or `None` for the allow-listed plain listener / internal mail.
    pub app: Option<String>,
    /// MAIL FROM address; empty for the null sender `<>` (bounces, reports).
    pub mail_from: String,
    /// MAIL FROM parameters as given (e.g. `BODY=8BITMIME`, `SMTPUTF8`, `RET=HDRS`).
    #[serde(default)]
    pub mail_from_params: Vec<String>,
    /// RCPT TO addresses, in order, without duplicates.
    pub recipients: Vec<String>,
    /// Seconds since the Unix epoch when the message was accepted.
    pub received_at: u64,
    /// The submitting client's address (loopback for internal mail).
    pub client_ip: IpAddr,
    /// The client's EHLO/HELO name.
    #[serde(default)]
    pub helo: String,
    /// TLS protocol and cipher of the submission, e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
    #[serde(default)]
    pub tls: Option<String>,
    /// herald's own TLS-RPT report: RFC 8460 §3 asks that reports be delivered despite the
    /// TLS failures they describe, so MTA-STS is not enforced for it. Only the report sender
    /// sets this; nothing a client sends can.
    #[serde(default)]
    pub tls_report: bool,
    /// What the submitter asked of TLS for this message (RFC 8689): `REQUIRETLS`, or a
    /// `TLS-Required: No` the app was allowed to send. Absent in spools written before it
    /// existed, and for ordinary mail.
    #[serde(default, skip_serializing_if = "TlsRequest::is_policy")]
    pub tls_request: TlsRequest,
    /// The app's return path had a VERP address made for it at delivery (issue 24); absent
    /// for mail without one. Only inbound sets it, from the app's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_path_domain: Option<String>,
}

/// What the submitter asked of TLS for one message (RFC 8689). Inbound sets it; outbound and
/// the bounce builder act on it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsRequest {
    /// Nothing asked: the recipient's policy (MTA-STS, DANE, `[delivery] require_tls`) applies.
    #[default]
    Policy,
    /// `MAIL FROM:<…> REQUIRETLS`: only over TLS that authenticated the next hop, to a server
    /// that advertises REQUIRETLS (and is handed the flag); otherwise a bounce with `5.7.30`,
    /// whose notice carries none of the message.
    RequireTls,
    /// `TLS-Required: No` from an app with `allow_tls_optional = true`: delivered with
    /// opportunistic TLS even where MTA-STS or DANE would refuse the MX.
    TlsOptional,
}

impl TlsRequest {
    /// True for ordinary mail (nothing asked), which the spool does not write down.
    pub fn is_policy(&self) -> bool {
        *self == TlsRequest::Policy
    }

    /// How `herald queue` shows it: `None` for ordinary mail.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            TlsRequest::Policy => None,
            TlsRequest::RequireTls => Some("REQUIRETLS"),
            TlsRequest::TlsOptional => Some("TLS-Required: No"),
        }
    }
}

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    /// Waiting for an attempt (first or retry).
    Pending,
    /// Accepted by the remote with a `2xx`.
    Delivered,
    /// Permanently failed (`5xx`, expiry, null MX, …); a bounce was queued if due.
    Failed,
}

/// One recipient's delivery progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecipientState {
    /// The recipient address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Seconds since the epoch of the next attempt (meaningful while pending).
    pub next_attempt: u64,
    /// The last reply or error, as a person reads it.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// The enhanced status code of that reply or error (absent in spools written before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<EnhancedStatus>,
    /// The host (name and address) last tried.
    #[serde(default)]
    pub last_host: Option<String>,
    /// The class of the last refusal (issue 24: hard, soft, block, throttle, other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<crate::events::BounceClass>,
}

/// The mutable part of a queued message: per-recipient state and operator flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryState {
    /// One entry per envelope recipient, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Held by the operator (`herald queue hold`): not attempted until released.
    #[serde(default)]
    pub held: bool,
    /// Whether a delay notice has been sent.
    #[serde(default)]
    pub delay_notified: bool,
}

impl DeliveryState {
    /// The state of a message that has not been attempted yet.
    pub fn new(envelope: &Envelope) -> Self {
        DeliveryState {
            recipients: envelope
                .recipients
                .iter()
                .map(|r| RecipientState {
                    address: r.clone(),
                    status: RecipientStatus::Pending,
                    attempts: 0,
                    next_attempt: envelope.received_at,
                    last_reply: None,
                    last_status: None,
                    last_host: None,
                    class: None,
                })
                .collect(),
            held: false,
            delay_notified: false,
        }
    }

    /// True when no recipient is waiting any more: the message can leave the spool.
    pub fn is_finished(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status != RecipientStatus::Pending)
    }

    /// When the next attempt is due (seconds since the epoch): the earliest pending
    /// recipient's; `None` when held or nothing is pending.
    pub fn next_attempt(&self) -> Option<u64> {
        if self.held {
            return None;
        }
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
            .map(|r| r.next_attempt)
            .min()
    }

    /// The operator's hold: no attempt until [`DeliveryState::release`].
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Ends a hold; pending recipients keep their schedule.
    pub fn release(&mut self) {
        self.held = false;
    }

    /// Makes every pending recipient due at `now` (the operator's "retry now").
    pub fn retry_now(&mut self, now: u64) {
        for r in &mut self.recipients {
            if r.status == RecipientStatus::Pending {
                r.next_attempt = now;
            }
        }
    }
}

/// A message as the queue knows it: identity, envelope, size and delivery state.
/// The bytes themselves are read on demand with [`Spool::read_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledMessage {
    /// Queue identifier.
    pub id: QueueId,
    /// Envelope as accepted.
    pub envelope: Envelope,
    /// Size of the message in bytes.
    pub size: u64,
    /// Delivery progress.
    pub state: DeliveryState,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DeliveryState {
        DeliveryState::new(&Envelope {
            app: None,
            mail_from: "a@example.test".into(),
            mail_from_params: vec![],
            recipients: vec!["b@example.org".into(), "c@example.net".into()],
            received_at: 100,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            helo: "client".into(),
            tls: None,
            tls_report: false,
            tls_request: TlsRequest::Policy,
            return_path_domain: None,
        })
    }

    #[test]
    fn hold_release_and_retry_move_the_next_attempt() {
        let mut s = state();
        s.recipients[0].next_attempt = 500;
        s.recipients[1].next_attempt = 300;
        assert_eq!(s.next_attempt(), Some(300));
        s.hold();
        assert_eq!(s.next_attempt(), None);
        s.release();
        assert_eq!(s.next_attempt(), Some(300));
        s.recipients[1].status = RecipientStatus::Delivered;
        assert_eq!(s.next_attempt(), Some(500));
        s.retry_now(200);
        assert_eq!(s.next_attempt(), Some(200));
        assert_eq!(
            s.recipients[1].next_attempt, 300,
            "a delivered one is left alone"
        );
        s.recipients[0].status = RecipientStatus::Failed;
        assert!(s.is_finished());
        assert_eq!(s.next_attempt(), None);
    }
}
