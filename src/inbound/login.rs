//! The AUTH command: SASL PLAIN and LOGIN exchanges on a TLS session. The failure throttle is
//! consulted before the exchange and a verification is reserved in it before argon2 runs.

use std::io;

use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::session::Session;
use super::throttle::Refusal;
use super::{ListenerKind, auth};
use crate::reply::Reply;
use crate::smtp_server::Line;

impl Session {
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) {
        if self.kind == ListenerKind::Plain {
            return self.error(Reply::new(
                502,
                "5.5.1",
                "AUTH is not offered on this listener; use the submission port",
            ));
        }
        if !self.conn.is_tls() {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "encryption required for authentication: send STARTTLS first",
            ));
        }
        if self.app.is_some() {
            return self.error(Reply::new(503, "5.5.1", "already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a transaction",
            ));
        }
        if let Err(left) = self.shared.throttle.check(self.ip).await {
            self.reply(Reply::new(
                421,
                "4.7.0",
                format!(
                    "too many failed AUTH attempts from {}; try again in {} s",
                    self.ip,
                    left.as_secs() + 1
                ),
            ));
            self.closing = true;
            return;
        }
        let initial = (!initial.is_empty()).then_some(initial);
        let creds = match mechanism {
            AUTH_PLAIN => match self.sasl(initial, "").await {
                Ok(Some(b)) => auth::parse_plain(&b),
                Ok(None) => return,
                Err(e) => return self.io_failed(e),
            },
            AUTH_LOGIN => {
                let user = match self.sasl(initial, "VXNlcm5hbWU6").await {
                    Ok(Some(u)) => u,
                    Ok(None) => return,
                    Err(e) => return self.io_failed(e),
                };
                let pass = match self.sasl(None, "UGFzc3dvcmQ6").await {
                    Ok(Some(p)) => p,
                    Ok(None) => return,
                    Err(e) => return self.io_failed(e),
                };
                match (String::from_utf8(user), String::from_utf8(pass)) {
                    (Ok(u), Ok(p)) => Some((u, p)),
                    _ => None,
                }
            }
            _ => {
                return self.error(Reply::new(
                    504,
                    "5.5.4",
                    "unsupported mechanism: use PLAIN or LOGIN",
                ));
            }
        };
        let Some((user, password)) = creds else {
            return self.error(Reply::new(501, "5.5.2", "malformed AUTH response"));
        };
        let shared = self.shared.clone();
        let attempt = match shared.throttle.reserve(self.ip, &user).await {
            Ok(a) => a,
            Err(refusal) => {
                let (whom, left) = match refusal {
                    Refusal::Address(left) => (format!("from {}", self.ip), left),
                    Refusal::User(left) => ("for this user name".to_string(), left),
                };
                tracing::info!(client = %self.ip, user = %user, "AUTH refused by the failure throttle");
                self.reply(Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "too many failed AUTH attempts {whom}; try again in {} s",
                        left.as_secs() + 1
                    ),
                ));
                self.closing = true;
                return;
            }
        };
        let cache = &self.shared.auth_cache;
        if cache
            .verify(&self.shared.apps, user.clone(), password)
            .await
        {
            attempt.succeeded().await;
            tracing::info!(client = %self.ip, app = %user, "authenticated");
            self.app = Some(user);
            self.reply(Reply::new(235, "2.7.0", "authentication succeeded"));
        } else {
            let delay = attempt.failed().await;
            tracing::info!(client = %self.ip, user = %user, "AUTH failed");
            // Slow only this client down; the flush sends nothing until the delay has passed.
            tokio::time::sleep(delay).await;
            self.error(Reply::new(
                535,
                "5.7.8",
                "authentication credentials invalid: check the app's user name and password",
            ));
        }
    }

    /// Gets one SASL response (the initial one, or after a `334` prompt), base64-decoded.
    /// `Ok(None)` when the exchange was ended with a reply already queued.
    async fn sasl(&mut self, initial: Option<String>, prompt: &str) -> io::Result<Option<Vec<u8>>> {
        let text = match initial {
            Some(t) => t,
            None => {
                self.conn.queue(format!("334 {prompt}\r\n").as_bytes());
                let max = self.shared.cfg.smtp.max_line_length;
                let timeout = self.shared.cfg.smtp.command_timeout;
                match self.conn.read_line(max, timeout).await? {
                    Line::Full(l) => String::from_utf8_lossy(l).trim().to_string(),
                    Line::TooLong { .. } => String::new(),
                }
            }
        };
        if text == "*" {
            self.error(Reply::new(501, "5.0.0", "authentication cancelled"));
            return Ok(None);
        }
        if text == "=" {
            return Ok(Some(Vec::new()));
        }
        match auth::decode_b64(&text) {
            Some(b) if !text.is_empty() => Ok(Some(b)),
            _ => {
                self.error(Reply::new(
                    501,
                    "5.5.2",
                    "cannot decode the base64 response",
                ));
                Ok(None)
            }
        }
    }
}
