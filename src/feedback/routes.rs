//! Where the feedback listener's mail goes: a table from recipient address (or whole domain)
//! to a [`MailHandler`]. Recipients not in the table are refused at RCPT (`550 5.1.1`), so
//! the listener never relays; each handler gets the complete, framed mail and answers it.
//!
//! Today the table holds herald's report addresses (`dmarc@` and `tlsrpt@<feedback.domain>`,
//! [`Routes::reports`]). To receive more mail on this listener (asynchronous bounces to a VERP
//! return-path domain, ARF complaints, a `mailto:` unsubscribe address):
//! 1. implement [`MailHandler`] for it (parse, record, reply `250` only once what matters is
//!    durable; `451` to have the sender retry);
//! 2. add it to the table where the node builds it (`node/subsystems.rs`, `start_feedback`):
//!    `routes.address("unsubscribe@…", handler)` or `routes.domain("bounces.example.com",
//!    handler)`. An exact address wins over its domain.
//!
//! The recipients of one transaction all go to one handler: a recipient routed elsewhere is
//! answered `452 4.5.3` and the sender sends it in a transaction of its own (RFC 5321 §4.5.3.1.10).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::parse::{Limits, parse_mail};
use super::verify::{Verifier, verified_reports};
use crate::config::Config;
use crate::reply::Reply;
use crate::store::{ParsedItem, ReceivedMail, ReportStore};

/// A complete mail as the listener received it.
#[derive(Debug, Clone)]
pub(crate) struct IncomingMail {
    /// The client's address.
    pub client: IpAddr,
    /// The envelope sender (often empty: reports and bounces use the null sender).
    pub mail_from: String,
    /// The recipients routed to this handler, lower-cased.
    pub rcpts: Vec<String>,
    /// The message as received (dot-unstuffed, CRLF line endings).
    pub raw: Vec<u8>,
}

/// The reply a handler's future resolves to.
pub(crate) type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// What happens to the mail for some of the listener's addresses.
pub(crate) trait MailHandler: Send + Sync {
    /// Handles one mail; the reply goes to the sender as the answer to its data.
    fn handle(&self, mail: IncomingMail) -> HandlerFuture<'_>;

    /// Whether the handler takes mail for `rcpt` (lower-cased), checked at RCPT: the refusal
    /// otherwise (e.g. a VERP address whose token does not verify). Takes all by default.
    fn accept_rcpt(&self, _rcpt: &str) -> Result<(), Reply> {
        Ok(())
    }
}

/// The routing table (see the module doc).
#[derive(Clone, Default)]
pub(crate) struct Routes {
    addresses: HashMap<String, Arc<dyn MailHandler>>,
    domains: HashMap<String, Arc<dyn MailHandler>>,
}

impl Routes {
    /// Routes mail for `address` (case-insensitive) to `handler`.
    pub(crate) fn address(mut self, address: &str, handler: Arc<dyn MailHandler>) -> Routes {
        self.addresses
            .insert(address.trim().to_ascii_lowercase(), handler);
        self
    }

    /// Routes mail for every address `@domain` (case-insensitive) to `handler`.
    pub(crate) fn domain(mut self, domain: &str, handler: Arc<dyn MailHandler>) -> Routes {
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        self.domains.insert(d, handler);
        self
    }

    /// herald's report addresses (`[feedback] domain`): DMARC aggregate and TLS reports,
    /// parsed and stored in `store`.
    pub(crate) fn reports(cfg: &Config, store: Arc<dyn ReportStore>) -> Routes {
        let handler: Arc<dyn MailHandler> = Arc::new(ReportHandler {
            limits: Limits::from_config(&cfg.feedback),
            store,
            verifier: Arc::new(Verifier::new(cfg)),
            max_rows_per_day: cfg.feedback.max_rows_per_sender_per_day,
        });
        let f = &cfg.feedback;
        [f.dmarc_address(), f.tlsrpt_address()]
            .into_iter()
            .flatten()
            .fold(Routes::default(), |routes, a| {
                routes.address(&a, handler.clone())
            })
    }

    /// The handler for `rcpt` (lower-cased, trimmed), if the table has one.
    pub(crate) fn route(&self, rcpt: &str) -> Option<&Arc<dyn MailHandler>> {
        if let Some(h) = self.addresses.get(rcpt) {
            return Some(h);
        }
        let (_, domain) = rcpt.rsplit_once('@')?;
        self.domains.get(domain.trim_end_matches('.'))
    }

    /// What the listener receives, for the refusal of other recipients:
    /// `dmarc@example.com, tlsrpt@example.com`.
    pub(crate) fn describe(&self) -> String {
        let mut all: Vec<String> = self.addresses.keys().cloned().collect();
        all.sort();
        let mut domains: Vec<String> = self.domains.keys().map(|d| format!("@{d}")).collect();
        domains.sort();
        all.extend(domains);
        if all.is_empty() {
            "nothing (no report domain is set)".into()
        } else {
            all.join(", ")
        }
    }
}

/// DMARC and TLS reports: parsed and committed to the report store before `250`.
struct ReportHandler {
    limits: Limits,
    store: Arc<dyn ReportStore>,
    /// Who really sent a report ([`super::verify`]).
    verifier: Arc<Verifier>,
    /// `feedback.max_rows_per_sender_per_day`.
    max_rows_per_day: u64,
}

impl MailHandler for ReportHandler {
    fn handle(&self, mail: IncomingMail) -> HandlerFuture<'_> {
        Box::pin(async move {
            let ip = mail.client;
            let limits = self.limits;
            let store = self.store.clone();
            let mail = ReceivedMail {
                received_at: crate::store::now(),
                origin: ip.to_string(),
                mail_from: mail.mail_from,
                rcpt: mail.rcpts.join(","),
                raw: mail.raw,
                verified: Vec::new(),
            };
            let parsed = tokio::task::spawn_blocking(move || {
                let items = parse_mail(&mail.raw, &limits);
                (mail, items)
            })
            .await;
            let done = match parsed {
                Ok((mut mail, mut items)) => {
                    if items.iter().any(|i| matches!(i, ParsedItem::Dmarc(_))) {
                        // 0 turns the bound off.
                        let limit = match self.max_rows_per_day {
                            0 => u64::MAX,
                            n => n,
                        };
                        let since = mail.received_at - 86_400;
                        let used = store.rows_from(&mail.origin, since).await.unwrap_or(0);
                        items = super::bounds::within_sender_allowance(
                            items,
                            limit.saturating_sub(used),
                            limit,
                        );
                        let orgs = (self.verifier)
                            .authenticated_orgs(&mail.raw, ip, &mail.mail_from)
                            .await;
                        mail.verified = verified_reports(&items, &orgs);
                    }
                    Ok(store.accept(&mail, &items).await)
                }
                Err(e) => Err(e),
            };
            match done {
                Ok(Ok(o)) => {
                    tracing::info!(event = "report_received", client = %ip, stored = o.stored,
                        duplicates = o.duplicates, rejected = o.rejected,
                        "feedback: report mail accepted");
                    Reply::new(
                        250,
                        "2.0.0",
                        format!(
                            "report received: {} stored, {} duplicate, {} unreadable (kept for inspection)",
                            o.stored, o.duplicates, o.rejected
                        ),
                    )
                }
                Ok(Err(e)) if e.is_disk_full() => {
                    tracing::error!(client = %ip, error = %format!("{e:#}"), "feedback: cannot store report mail");
                    Reply::new(
                        452,
                        "4.3.1",
                        "out of disk space for reports; please try again later",
                    )
                }
                Ok(Err(e)) => {
                    tracing::error!(client = %ip, error = %format!("{e:#}"), "feedback: cannot store report mail");
                    Reply::new(
                        451,
                        "4.3.0",
                        "cannot store the report right now; please try again later",
                    )
                }
                Err(e) => {
                    tracing::error!(client = %ip, error = %e, "feedback: report parsing failed");
                    Reply::new(
                        451,
                        "4.3.0",
                        "cannot process the report right now; please try again later",
                    )
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u16);
    impl MailHandler for Fixed {
        fn handle(&self, _: IncomingMail) -> HandlerFuture<'_> {
            let code = self.0;
            Box::pin(async move { Reply::new(code, "2.0.0", "ok") })
        }
    }

    #[tokio::test]
    async fn an_address_wins_over_its_domain_and_others_are_not_routed() {
        let routes = Routes::default()
            .domain("Bounces.Example.COM.", Arc::new(Fixed(251)))
            .address("Unsubscribe@bounces.example.com", Arc::new(Fixed(252)));
        let mail = IncomingMail {
            client: "127.0.0.1".parse().unwrap(),
            mail_from: String::new(),
            rcpts: vec![],
            raw: vec![],
        };
        for (rcpt, want) in [
            ("unsubscribe@bounces.example.com", Some(252)),
            ("b+x=y@bounces.example.com", Some(251)),
            ("postmaster@example.com", None),
            ("x@sub.bounces.example.com", None),
        ] {
            let got = match routes.route(rcpt) {
                Some(h) => Some(h.handle(mail.clone()).await.code),
                None => None,
            };
            assert_eq!(got, want, "{rcpt}");
        }
        assert_eq!(
            routes.describe(),
            "unsubscribe@bounces.example.com, @bounces.example.com"
        );
    }
}
