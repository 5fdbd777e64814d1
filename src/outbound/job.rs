//! A piece of delivery work as the queue hands it to outbound.

use std::sync::Arc;

use crate::spool::{MessageBytes, TlsRequest};

/// A piece of work: one message, the recipients of one domain (or all, via the smart host).
pub(crate) struct Job {
    /// Queue id, for logs.
    pub queue_id: String,
    /// The reverse path the delivery gives in `MAIL FROM` (and a capture writes as
    /// `Return-Path:`): the envelope's sender, or the queue's rewritten return path (VERP).
    /// Empty for `<>`.
    pub mail_from: String,
    /// MAIL FROM parameters as submitted.
    pub mail_params: Vec<String>,
    /// Recipient domain (or `relay` for the smart host).
    pub domain: String,
    /// The recipients.
    pub recipients: Vec<String>,
    /// The bytes to send (mapped from the spool file, not read into memory).
    pub message: Arc<MessageBytes>,
    /// A TLS-RPT report of herald's: delivered opportunistically, whatever policy applies.
    pub tls_report: bool,
    /// What the submitter asked of TLS (REQUIRETLS, `TLS-Required: No`): see
    /// [`super::requiretls`].
    pub tls_request: TlsRequest,
}
