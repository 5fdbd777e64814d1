//! Sending a built report to every `rua` of the domain's `_smtp._tls` record (RFC 8460 §3, §5):
//! `mailto:` as a DKIM-signed `multipart/report; report-type=tlsrpt` message sent through
//! herald's own mail path ([`crate::own_mail`]: signed, spooled, delivered and retried by the
//! queue), `https:` as a POST of
//! `application/tlsrpt+gzip`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::mta_sts::ReportUri;

use super::build::gzip_json;
use super::store::OutboxItem;
use crate::config::Config;
use crate::mta_sts::{discover, fetch};
use crate::own_mail::{self, IfUnsigned, OwnMail};
use crate::signing::Signer;
use crate::spool::Spool;

/// How long an HTTPS report upload may take.
const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Every `rua` received it (queued for `mailto:`, accepted for `https:`).
    Sent(Vec<String>),
    /// The domain publishes no usable `_smtp._tls` record: nobody to send to.
    NoRecipient,
    /// Some destinations failed; the report is kept and retried at the next flush.
    Retry(String),
}

/// Everything needed to send reports: DNS, the HTTPS client, the spool and the DKIM signer.
/// A configuration reload ([`ReportSender::reload`]) replaces them for the next report.
pub struct ReportSender {
    spool: Spool,
    current: RwLock<Arc<Parts>>,
}

/// A report sender for a reloaded configuration, ready to be put in force
/// ([`ReportSender::prepare_reload`]).
pub struct NextSender(Arc<Parts>);

/// The parts of a [`ReportSender`] that come from the configuration.
struct Parts {
    auth: Arc<MessageAuthenticator>,
    client: reqwest::Client,
    own: OwnMail,
    /// `From:` and MAIL FROM of report messages.
    from: String,
    /// `TLS-Report-Submitter`: herald's domain.
    submitter: String,
    /// `[report] enabled` and `interval`, read by the periodic flush.
    enabled: bool,
    interval: Duration,
}

impl ReportSender {
    /// Builds the sender; `spool` and `signer` are the ones `herald serve` uses (or, offline,
    /// the spool directory opened directly).
    pub fn new(cfg: &Config, spool: Spool, signer: Arc<Signer>) -> anyhow::Result<ReportSender> {
        let parts = Parts::new(cfg, spool.clone(), signer)?;
        Ok(ReportSender {
            spool,
            current: RwLock::new(Arc::new(parts)),
        })
    }

    /// Puts together the sender for a reloaded configuration (DNS servers, contact address,
    /// signing keys, interval, enabled), changing nothing yet; [`ReportSender::apply_reload`]
    /// puts it in force for the reports sent from then on.
    pub fn prepare_reload(&self, cfg: &Config, signer: Arc<Signer>) -> anyhow::Result<NextSender> {
        Ok(NextSender(Arc::new(Parts::new(
            cfg,
            self.spool.clone(),
            signer,
        )?)))
    }

    /// Reports sent from now on use `next`.
    pub fn apply_reload(&self, next: NextSender) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.0;
    }

    fn current(&self) -> Arc<Parts> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `[report] enabled` and `interval` in force: whether the periodic flush runs, and how
    /// often.
    pub fn schedule(&self) -> (bool, Duration) {
        let parts = self.current();
        (parts.enabled, parts.interval)
    }

    /// Sends `item` to every `rua` not yet served, recording each success in `item.delivered`.
    pub async fn send(&self, item: &mut OutboxItem) -> SendOutcome {
        self.current().send(item).await
    }
}

impl Parts {
    fn new(cfg: &Config, spool: Spool, signer: Arc<Signer>) -> anyhow::Result<Parts> {
        let auth = Arc::new(crate::resolver::authenticator(&cfg.dns)?);
        let client = fetch::https_client(cfg, auth.clone(), POST_TIMEOUT)?;
        let submitter = own_mail::herald_domain(&cfg.server.hostname);
        let contact = cfg.report.contact.trim();
        let contact = contact.strip_prefix("mailto:").unwrap_or(contact);
        let from = if contact.contains('@') {
            contact.to_string()
        } else {
            format!("noreply@{submitter}")
        };
        Ok(Parts {
            auth,
            client,
            own: OwnMail::new(spool, signer, &cfg.server.hostname),
            from,
            submitter,
            enabled: cfg.report.enabled,
            interval: cfg.report.interval,
        })
    }

    async fn send(&self, item: &mut OutboxItem) -> SendOutcome {
        let record = match discover::tlsrpt(&self.auth, &item.domain).await {
            Ok(Some(record)) => record,
            Ok(None) => return SendOutcome::NoRecipient,
            Err(e) => return SendOutcome::Retry(e.to_string()),
        };
        let bytes = match gzip_json(&item.report) {
            Ok(bytes) => bytes,
            Err(e) => return SendOutcome::Retry(format!("cannot compress the report: {e}")),
        };
        let mut errors = Vec::new();
        let mut mailto = Vec::new();
        for uri in &record.rua {
            match uri {
                ReportUri::Mail(addr) => {
                    let addr = addr
                        .split('?')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    let key = format!("mailto:{addr}");
                    if addr.contains('@') && !item.delivered.contains(&key) {
                        mailto.push(addr);
                    }
                }
                ReportUri::Http(url) => {
                    if item.delivered.contains(url) {
                        continue;
                    }
                    match self.post(url, &bytes).await {
                        Ok(()) => item.delivered.push(url.clone()),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
        }
        if !mailto.is_empty() {
            match self.queue_mail(item, &mailto, &bytes).await {
                Ok(()) => item
                    .delivered
                    .extend(mailto.iter().map(|a| format!("mailto:{a}"))),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            SendOutcome::Sent(item.delivered.clone())
        } else {
            SendOutcome::Retry(errors.join("; "))
        }
    }

    async fn post(&self, url: &str, bytes: &[u8]) -> Result<(), ReportSendError> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/tlsrpt+gzip")
            .body(bytes.to_vec())
            .send()
            .await
            .map_err(|source| ReportSendError::Post {
                url: url.to_string(),
                source,
            })?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(ReportSendError::Status {
                url: url.to_string(),
                status: response.status(),
            })
        }
    }

    async fn queue_mail(
        &self,
        item: &OutboxItem,
        to: &[String],
        bytes: &[u8],
    ) -> Result<(), ReportSendError> {
        let mut message = Vec::with_capacity(bytes.len() * 2 + 2048);
        item.report
            .write_rfc5322_from_bytes(
                &item.domain,
                &self.submitter,
                self.from.as_str(),
                to.iter().map(String::as_str),
                bytes,
                &mut message,
            )
            .map_err(ReportSendError::Write)?;
        let sent = self
            .own
            .send(own_mail::Message {
                mail_from: self.from.clone(),
                recipients: to.to_vec(),
                bytes: message,
                tls_report: true,
                if_unsigned: IfUnsigned::Refuse,
            })
            .await;
        let id = match sent {
            Ok(id) => id,
            Err(own_mail::SendError::Unsigned(reply)) => {
                return Err(ReportSendError::Unsigned {
                    from: self.from.clone(),
                    reply: format!("{reply:?}"),
                });
            }
            Err(e) => return Err(ReportSendError::Queue(e.to_string())),
        };
        tracing::info!(
            queue_id = %id,
            domain = %item.domain,
            to = %to.join(", "),
            report_id = %item.report.report_id,
            "tls-rpt report queued"
        );
        Ok(())
    }
}

/// Why one TLS-RPT report could not be handed to one of its `rua` destinations (the report is
/// retried; the words go to the log and `herald report`).
#[derive(Debug, thiserror::Error)]
pub enum ReportSendError {
    /// The HTTPS POST failed before an answer.
    #[error("POST {url}: {source}")]
    Post {
        /// The `rua=https:` destination.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The endpoint answered, but not with success.
    #[error("POST {url}: answered {status}")]
    Status {
        /// The `rua=https:` destination.
        url: String,
        /// Its answer.
        status: reqwest::StatusCode,
    },
    /// The report could not be written as a message.
    #[error("cannot write the report message: {0}")]
    Write(std::io::Error),
    /// No DKIM key signs the report's sender.
    #[error(
        "cannot DKIM-sign the report from {from} ({reply}); configure a DKIM key for its domain \
         or set [report] contact to an address at a signed domain"
    )]
    Unsigned {
        /// The report's sender.
        from: String,
        /// The signer's refusal.
        reply: String,
    },
    /// The spool refused the message.
    #[error("cannot queue the report message: {0}")]
    Queue(String),
}
