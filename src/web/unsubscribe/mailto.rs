//! The `mailto:` variant of `List-Unsubscribe` (RFC 2369): a mail to herald's
//! `unsubscribe@<feedback domain>` whose Subject carries the token, received by the feedback
//! listener and recorded exactly like the one-click POST.

use std::sync::Arc;

use super::OneClick;
use crate::feedback::routes::{HandlerFuture, IncomingMail, MailHandler};
use crate::reply::Reply;

/// Handles mail to the unsubscribe address.
pub(crate) struct MailtoHandler(pub Arc<OneClick>);

impl MailHandler for MailtoHandler {
    fn handle(&self, mail: IncomingMail) -> HandlerFuture<'_> {
        let one_click = self.0.clone();
        Box::pin(async move {
            let Some(token) = token_in_subject(&mail.raw) else {
                return Reply::new(
                    550,
                    "5.7.1",
                    "no unsubscribe token in the Subject; use the address exactly as the \
                     message's List-Unsubscribe header gives it",
                );
            };
            match one_click.record(&token, "mailto").await {
                Ok(Some(_)) => Reply::new(250, "2.0.0", "unsubscribed"),
                Ok(None) => Reply::new(
                    550,
                    "5.7.1",
                    "the unsubscribe token is not valid (altered or expired); use the link in a \
                     recent message",
                ),
                Err(e) => {
                    tracing::error!("web: cannot record a mailto unsubscribe: {e}");
                    Reply::new(
                        451,
                        "4.3.0",
                        "the unsubscribe could not be recorded; try again later",
                    )
                }
            }
        })
    }
}

/// The token in `Subject: unsubscribe TOKEN` (the last word of the subject).
fn token_in_subject(raw: &[u8]) -> Option<String> {
    let head = &raw[..crate::headers::header_end(raw)];
    let message = mail_parser::MessageParser::default().parse_headers(head)?;
    let word = message.subject()?.split_whitespace().last()?;
    (word.len() > 20
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then(|| word.to_string())
}
