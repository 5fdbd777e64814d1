//! What `herald queue` and the admin API show about a queued message: one shape for the JSON
//! API, the online and the offline command.

use serde::{Deserialize, Serialize};

use crate::spool::{ClusterEntry, RecipientState, SpooledMessage, TlsRequest};

/// A queued message as an operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageView {
    /// Queue id.
    pub id: String,
    /// Envelope sender (empty for `<>`).
    pub sender: String,
    /// The submitting app, if any.
    pub app: Option<String>,
    /// Seconds since the epoch when accepted.
    pub received_at: u64,
    /// Size in bytes.
    pub size: u64,
    /// Held by the operator.
    pub held: bool,
    /// An attempt is under way right now.
    pub in_flight: bool,
    /// Each recipient's state.
    pub recipients: Vec<RecipientState>,
    /// What the submitter asked of TLS (REQUIRETLS, `TLS-Required: No`).
    #[serde(default)]
    pub tls_request: TlsRequest,
    /// In a cluster: the node holding its lease (delivering it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl MessageView {
    /// The view of a spooled message.
    pub fn of(m: &SpooledMessage, in_flight: bool) -> MessageView {
        MessageView {
            id: m.id.clone(),
            sender: m.envelope.mail_from.clone(),
            app: m.envelope.app.clone(),
            received_at: m.envelope.received_at,
            size: m.size,
            held: m.state.held,
            in_flight,
            recipients: m.state.recipients.clone(),
            tls_request: m.envelope.tls_request,
            node: None,
        }
    }

    /// The view of a message in a cluster's shared queue.
    pub fn of_cluster(entry: &ClusterEntry, in_flight: bool) -> MessageView {
        MessageView {
            node: entry.owner.clone(),
            ..MessageView::of(&entry.message, in_flight)
        }
    }
}

/// The answer to an action (retry, hold, release, delete).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActionResult {
    /// Whether it was done.
    pub ok: bool,
    /// What happened, in words.
    pub message: String,
}
