//! The running "after delivery" subsystem of one node: the token key, the suppression list,
//! the guard, the follower that derives suppressions and rates from the event hub, and the
//! intake of bounces and complaints mailed to herald (plugged into the feedback listener).

use std::sync::Arc;

use crate::config::{AppConfig, Config, SuppressionScope};
use crate::events::{BounceClass, Event, EventHub, EventKind};
use crate::guard::Guard;
use crate::reply::Reply;
use crate::suppress::{NewSuppression, Reason, Suppressions, sending_domain};

use super::verp::{self, Token, TokenKey};
use super::{arf, dsn};
use crate::suppress::metrics;

/// Events the follower may fall behind by before it loses some (counted by the hub).
const FOLLOW_CAPACITY: usize = 65_536;

/// Most events the follower takes at once.
const FOLLOW_BATCH: usize = 1024;

/// How long the follower lets events gather after a burst before it takes the next: one
/// wake-up of its task per burst, not per event. Suppressions and the guard's rates follow
/// within this much.
const FOLLOW_LINGER: std::time::Duration = std::time::Duration::from_millis(25);

/// The events the follower acts on: classified answers (metrics, the guard's block count),
/// deliveries and bounces (the guard's rates, hard-bounce suppression) and complaints.
fn followed(e: &Event) -> bool {
    e.class.is_some()
        || matches!(
            e.kind,
            EventKind::Delivered | EventKind::Bounced | EventKind::Complained
        )
}

/// Why a bounce could not be passed on (the spool's or signer's own error, from a layer above).
pub(crate) type ForwardError = Box<dyn std::error::Error + Send + Sync>;

/// Passes a bounce on to an app's own sender address: spools `raw` with the null sender `<>`
/// (so it is never bounced in turn) to the address given; `Ok` once durable.
pub(crate) type Forwarder = Arc<
    dyn Fn(
            String,
            Vec<u8>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ForwardError>> + Send>>
        + Send
        + Sync,
>;

/// What one accepted recipient of the feedback listener is.
#[derive(Debug, Clone)]
pub enum Mailbox {
    /// A VERP address with a valid token, of `app`.
    Bounce {
        /// The verified token.
        token: Token,
        /// The app it was made for.
        app: String,
    },
    /// The complaint (ARF) address.
    Complaints,
}

/// The subsystem's shared handle.
#[derive(Clone)]
pub struct AfterDelivery {
    cfg: Arc<std::sync::RwLock<Arc<Config>>>,
    key: TokenKey,
    /// The suppression list.
    pub suppressions: Suppressions,
    /// The per-app guard.
    pub guard: Guard,
    hub: EventHub,
    node: String,
    forwarder: Arc<std::sync::OnceLock<Forwarder>>,
}

impl AfterDelivery {
    /// Sets how bounces are passed on to the apps' senders (`forward_bounces`); without one
    /// they are only recorded.
    pub fn set_forwarder(&self, f: Forwarder) {
        let _ = self.forwarder.set(f);
    }

    /// Opens the list (SQLite, or PostgreSQL through `db`), the guard and the token key, and
    /// starts the follower of `hub` and the refreshers.
    pub async fn start(
        cfg: Arc<Config>,
        db: Option<crate::cluster::Db>,
        hub: EventHub,
        node: String,
    ) -> anyhow::Result<AfterDelivery> {
        let key = TokenKey::load_or_create(&key_path(&cfg))?;
        let suppressions = Suppressions::open(&cfg, db).await?;
        let guard = Guard::new(
            &cfg.bounce,
            suppressions.store().clone(),
            hub.clone(),
            node.clone(),
        )
        .await?;
        let every = cfg.bounce.refresh_interval;
        suppressions.spawn_refresh(every);
        guard.spawn_refresh(every);
        let after = AfterDelivery {
            cfg: Arc::new(std::sync::RwLock::new(cfg)),
            key,
            suppressions,
            guard,
            hub: hub.clone(),
            node,
            forwarder: Arc::default(),
        };
        let follower = after.clone();
        let events = hub.subscribe_where(FOLLOW_CAPACITY, followed);
        tokio::spawn(async move { follower.follow(events).await });
        Ok(after)
    }

    /// The configuration in force.
    fn cfg(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a reloaded configuration: apps' return paths and switches, rules, thresholds.
    /// (The token key, the database and the refresh interval stay as they started.)
    pub fn reload(&self, cfg: Arc<Config>) {
        self.guard.set_thresholds(&cfg.bounce);
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = cfg;
    }

    /// The hub this subsystem emits into and follows.
    pub fn hub(&self) -> &EventHub {
        &self.hub
    }

    /// The token key (for VERP addresses at delivery and the reference header at submission).
    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The VERP MAIL FROM at `domain` (the envelope's return path domain) for one transaction
    /// of a message of `app`, or `None` when it has none (or the message is itself a bounce:
    /// `mail_from` empty, and a bounce is never bounced).
    pub fn return_path(
        &self,
        app: Option<&str>,
        domain: Option<&str>,
        mail_from: &str,
        queue_id: &str,
        recipients: &[String],
        now: u64,
    ) -> Option<String> {
        let (app, domain) = (app?, domain?);
        if mail_from.is_empty() {
            return None;
        }
        let expires = now + self.cfg().bounce.token_lifetime.as_secs();
        Some(verp::address(
            &self.key, domain, queue_id, app, recipients, expires,
        ))
    }

    /// The header fields herald adds to a message of `app` to `recipients`: `Feedback-ID`
    /// (Gmail's format), `CFBL-Address` (RFC 9477) and `CFBL-Feedback-ID` (the signed
    /// reference complaints are matched with). Empty without `[feedback] domain`.
    pub fn headers(&self, app: &str, recipients: &[String], now: u64) -> Vec<u8> {
        let Some(address) = self.complaint_address() else {
            return Vec::new();
        };
        let reference: [u8; 10] = rand::random();
        let reference: String = reference.iter().map(|b| format!("{b:02x}")).collect();
        let token = verp::make(
            &self.key,
            &reference,
            app,
            &verp::recipient_tag_source(recipients),
            now + self.cfg().bounce.token_lifetime.as_secs(),
        );
        let sender_id = self.cfg().server.hostname.replace(':', "");
        format!(
            "Feedback-ID: {app}:{app}:herald:{sender_id}\r\nCFBL-Address: {address}; report=arf\r\n\
             {}: {token}\r\n",
            arf::REFERENCE_HEADER
        )
        .into_bytes()
    }

    /// `fbl@<feedback.domain>`, if a feedback domain is set.
    pub fn complaint_address(&self) -> Option<String> {
        let cfg = self.cfg();
        let d = cfg.feedback.domain.trim();
        (!d.is_empty()).then(|| format!("{}@{d}", cfg.bounce.complaint_local_part))
    }

    /// Whether `to` is one of this subsystem's addresses: `None` when not (the caller's
    /// other mailboxes apply), else the mailbox or the refusal (`550`: no such token).
    pub fn rcpt(&self, to: &str) -> Option<Result<Mailbox, Reply>> {
        let to = to.trim().to_ascii_lowercase();
        if self.complaint_address().is_some_and(|a| a == to) {
            return Some(Ok(Mailbox::Complaints));
        }
        let (local, domain) = to.rsplit_once('@')?;
        let cfg = self.cfg();
        let apps: Vec<&String> = cfg
            .apps
            .iter()
            .filter(|(_, a)| {
                a.return_path_domain
                    .as_deref()
                    .is_some_and(|d| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
            })
            .map(|(n, _)| n)
            .collect();
        if apps.is_empty() {
            return None;
        }
        let refuse = |why: &str| {
            metrics::feedback_refused(why);
            tracing::info!(rcpt = %to, reason = why, "bounce: refused at the return path");
            Some(Err(Reply::new(
                550,
                "5.1.1",
                format!("<{to}>: no such address here (return path of herald; {why})"),
            )))
        };
        let Some(token) = verp::token_of_local_part(local) else {
            return refuse("no token");
        };
        match verp::verify(&self.key, token, crate::clock::unix_now()) {
            Ok(token) => match apps.into_iter().find(|a| token.is_for_app(a)) {
                Some(app) => Some(Ok(Mailbox::Bounce {
                    token,
                    app: app.clone(),
                })),
                None => refuse("token of another app"),
            },
            Err(verp::TokenError::Expired) => refuse("expired token"),
            Err(verp::TokenError::BadSignature) => refuse("bad token"),
            Err(verp::TokenError::Malformed) => refuse("no token"),
        }
    }

    /// Takes one mail for `boxes` (from [`AfterDelivery::rcpt`]); the reply after DATA.
    /// Suppressions are durable before the `250`.
    pub async fn receive(&self, client: &str, boxes: &[Mailbox], raw: &[u8]) -> Reply {
        if raw.len() > self.cfg().bounce.max_report_size {
            metrics::feedback_refused("too_large");
            return Reply::new(
                552,
                "5.3.4",
                format!(
                    "bounce or report larger than {} bytes (bounce.max_report_size)",
                    self.cfg().bounce.max_report_size
                ),
            );
        }
        let mut said = Vec::new();
        for b in boxes {
            let r = match b {
                Mailbox::Bounce { token, app } => self.bounce(client, token, app, raw).await,
                Mailbox::Complaints => self.complaint(client, raw).await,
            };
            match r {
                Ok(text) => said.push(text),
                Err(reply) => return reply,
            }
        }
        Reply::new(250, "2.0.0", said.join("; "))
    }

    async fn bounce(
        &self,
        client: &str,
        token: &Token,
        app: &str,
        raw: &[u8],
    ) -> Result<String, Reply> {
        let found = dsn::parse(raw, |a| token.covers(a), 100);
        let now = crate::clock::unix_now();
        let mut taken = 0;
        for r in found.iter().filter(|r| r.is_failure()) {
            if !token.covers(&r.recipient) {
                metrics::feedback_refused("unknown_recipient");
                tracing::info!(client, app, recipient = %r.recipient,
                    "bounce: ignored a recipient the token does not name");
                continue;
            }
            let class = super::classify(&self.cfg().bounce.rules, r.code, &r.status, &r.diagnostic);
            metrics::classified(class.as_str(), "dsn");
            let domain = self.app_domain(app);
            if class == BounceClass::Hard
                && let Err(e) = self
                    .suppress(
                        app,
                        &domain,
                        &r.recipient,
                        Reason::HardBounce,
                        &r.diagnostic,
                        now,
                    )
                    .await
            {
                tracing::error!(error = %e, "bounce: cannot record the suppression");
                return Err(Reply::new(
                    451,
                    "4.3.0",
                    "cannot record the bounce right now; please try again later",
                ));
            }
            tracing::info!(client, app, queue_id = %token.queue_id, recipient = %r.recipient,
                class = class.as_str(), reply = %r.diagnostic, event = "bounce_received",
                "bounce: DSN received at the return path");
            let mut e = self.event(EventKind::Bounced, now, &r.recipient, app);
            e.queue_id = Some(token.queue_id.clone());
            e.class = Some(class);
            e.reply = Some(if r.diagnostic.is_empty() {
                r.status.clone()
            } else {
                r.diagnostic.clone()
            });
            self.hub.emit(e);
            taken += 1;
        }
        let forwarded = self.forward(app, raw).await?;
        if taken == 0 {
            metrics::feedback_refused("no_failure");
            return Ok(format!(
                "bounce received; it reports no failure herald can match{forwarded}"
            ));
        }
        Ok(format!(
            "bounce received: {taken} recipient(s) recorded{forwarded}"
        ))
    }

    /// Passes the bounce on to the app's own sender when the app asks for it
    /// (`forward_bounces`): the `From:` of the returned original headers, if it is one of the
    /// app's senders (herald never mails an address a bounce names otherwise). Sent with the
    /// null sender, so it is never bounced in turn.
    async fn forward(&self, app: &str, raw: &[u8]) -> Result<String, Reply> {
        let cfg = self.cfg();
        let Some(a) = cfg.apps.get(app).filter(|a| a.forward_bounces) else {
            return Ok(String::new());
        };
        let Some(forwarder) = self.forwarder.get() else {
            return Ok(String::new());
        };
        let Some(to) = dsn::original_from(raw).filter(|f| sender_matches(&a.senders, f)) else {
            tracing::info!(
                app,
                "bounce: not passed on: the returned headers name none of the app's senders"
            );
            return Ok("; not passed on (no original sender of the app in it)".into());
        };
        match forwarder(to.clone(), crlf(raw)).await {
            Ok(()) => {
                tracing::info!(app, to = %to, event = "bounce_forwarded", "bounce: passed on to the app's sender");
                Ok(format!("; passed on to <{to}>"))
            }
            Err(e) => {
                tracing::error!(app, error = %e, "bounce: cannot pass it on");
                Err(Reply::new(
                    451,
                    "4.3.0",
                    "cannot queue the bounce for the original sender; please try again later",
                ))
            }
        }
    }

    async fn complaint(&self, client: &str, raw: &[u8]) -> Result<String, Reply> {
        let Some(c) = arf::parse(raw) else {
            metrics::feedback_refused("malformed");
            return Ok("not an ARF complaint; ignored".into());
        };
        let now = crate::clock::unix_now();
        let cfg = self.cfg();
        let matched = c.tokens.iter().find_map(|t| {
            let token = verp::verify(&self.key, t, now).ok()?;
            let app = cfg.apps.keys().find(|a| token.is_for_app(a))?;
            Some((token, app.clone()))
        });
        let Some((token, app)) = matched else {
            metrics::feedback_refused("bad_token");
            tracing::info!(client, "complaint: no valid token; ignored");
            return Ok("complaint without a valid herald token; ignored".into());
        };
        let Some(recipient) = c.recipient.filter(|r| token.covers(r)) else {
            metrics::feedback_refused("unknown_recipient");
            tracing::info!(client, app = %app, "complaint: the recipient is not the one the token names; ignored");
            return Ok("complaint about a recipient herald cannot match; ignored".into());
        };
        let domain = self.app_domain(&app);
        let detail = format!("{} report from {client}", c.feedback_type);
        if let Err(e) = self
            .suppress(&app, &domain, &recipient, Reason::Complaint, &detail, now)
            .await
        {
            tracing::error!(error = %e, "complaint: cannot record the suppression");
            return Err(Reply::new(
                451,
                "4.3.0",
                "cannot record the complaint right now; please try again later",
            ));
        }
        metrics::complaint(&app);
        tracing::info!(client, app = %app, recipient = %recipient, event = "complained",
            "complaint: recipient suppressed");
        let mut e = self.event(EventKind::Complained, now, &recipient, &app);
        e.reply = Some(detail);
        self.hub.emit(e);
        Ok("complaint recorded".into())
    }

    fn event(&self, kind: EventKind, now: u64, recipient: &str, app: &str) -> Event {
        let mut e = Event::new(kind, now, recipient);
        e.app = Some(app.to_string());
        e.node = self.node.clone();
        e
    }

    /// The sending domain of `app` for a bounce or complaint that no longer has its message:
    /// the organizational domain of its return path, else of its first sender pattern.
    fn app_domain(&self, app: &str) -> String {
        let cfg = self.cfg();
        let a = cfg.apps.get(app);
        a.and_then(|a| a.return_path_domain.clone())
            .or_else(|| a.and_then(|a| a.senders.first().cloned()))
            .map(|d| sending_domain(&d))
            .unwrap_or_default()
    }

    async fn suppress(
        &self,
        app: &str,
        domain: &str,
        recipient: &str,
        reason: Reason,
        detail: &str,
        now: u64,
    ) -> Result<(), crate::suppress::SuppressError> {
        let scope = self
            .cfg()
            .apps
            .get(app)
            .map(|a: &AppConfig| a.suppression_scope)
            .unwrap_or_default();
        let entry = self
            .suppressions
            .record(NewSuppression {
                domain: domain.to_string(),
                app: (scope == SuppressionScope::App).then(|| app.to_string()),
                address: recipient.to_string(),
                reason,
                detail: detail.to_string(),
                at: now as i64,
            })
            .await?;
        tracing::info!(app, domain = %entry.domain, recipient = %entry.address,
            reason = reason.as_str(), count = entry.count, event = "suppressed",
            "suppression list: address added");
        Ok(())
    }

    /// Follows the hub: counts every outcome against its app, and suppresses hard bounces
    /// seen at delivery (returned DSNs are suppressed by the intake itself, before its 250).
    async fn follow(self, mut events: tokio::sync::mpsc::Receiver<Arc<Event>>) {
        let mut burst = Vec::with_capacity(FOLLOW_BATCH);
        let mut apps: Vec<String> = Vec::new();
        while events.recv_many(&mut burst, FOLLOW_BATCH).await > 0 {
            let mut latest = 0;
            for e in burst.drain(..) {
                self.follow_one(&e).await;
                latest = latest.max(e.time);
                if let Some(app) = e.app.as_deref()
                    && !apps.iter().any(|a| a == app)
                {
                    apps.push(app.to_string());
                }
            }
            // The rate gauges once per burst: six labelled gauges per app, not per event.
            self.guard
                .publish_rates(apps.iter().map(String::as_str), latest);
            apps.clear();
            tokio::time::sleep(FOLLOW_LINGER).await;
        }
    }

    /// What one event changes: the classification metric, a hard bounce's suppression, the
    /// app's rates.
    async fn follow_one(&self, e: &Event) {
        if let (Some(class), Some(_)) = (e.class, e.attempt) {
            metrics::classified(class.as_str(), "delivery");
            tracing::debug!(event = "classified", class = class.as_str(),
                outcome = e.kind.as_str(), recipient = %e.recipient,
                queue_id = e.queue_id.as_deref().unwrap_or("-"),
                reply = e.reply.as_deref().unwrap_or(""), "bounce: remote answer classified");
        }
        if e.kind == EventKind::Bounced
            && e.class == Some(BounceClass::Hard)
            && e.attempt.is_some()
            && !e.sender.is_empty()
        {
            let app = e.app.clone().unwrap_or_default();
            let detail = e.reply.clone().unwrap_or_default();
            if let Err(err) = self
                .suppress(
                    &app,
                    &e.sender,
                    &e.recipient,
                    Reason::HardBounce,
                    &detail,
                    e.time,
                )
                .await
            {
                tracing::error!(error = %err, recipient = %e.recipient, "cannot record the suppression of a hard bounce");
            }
        }
        self.guard.observe(e).await;
    }

    /// The RCPT check of a submission: the refusal when `recipient` is suppressed for the
    /// sending domain of `mail_from` (and `app`), unless the app turned suppression off.
    pub fn rcpt_refusal(
        &self,
        app: Option<&str>,
        mail_from: &str,
        recipient: &str,
    ) -> Option<Reply> {
        let cfg = self.cfg();
        if let Some(a) = app.and_then(|a| cfg.apps.get(a))
            && !a.suppression
        {
            return None;
        }
        let entry = self.suppressions.lookup(mail_from, app, recipient)?;
        metrics::suppressed_recipient(app.unwrap_or("-"));
        let mut e = Event::new(EventKind::Suppressed, crate::clock::unix_now(), recipient);
        e.app = app.map(str::to_string);
        e.sender = mail_from.to_string();
        e.node = self.node.clone();
        let reply = crate::suppress::refusal(&entry);
        e.reply = Some(reply.to_string());
        self.hub.emit(e);
        Some(reply)
    }

    /// The `451 4.7.1` refusal of a submission when `app` is paused.
    pub fn pause_refusal(&self, app: &str) -> Option<Reply> {
        let why = self.guard.paused(app)?;
        metrics::paused_submission(app);
        Some(Guard::refusal(app, &why))
    }
}

/// `raw` with every line ending CRLF (a bare CR or LF from the network never reaches the
/// next hop as one).
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Whether `address` matches one of an app's sender `patterns` (`user@d` or `@d`).
fn sender_matches(patterns: &[String], address: &str) -> bool {
    let a = address.trim().to_ascii_lowercase();
    let Some((_, domain)) = a.rsplit_once('@') else {
        return false;
    };
    patterns.iter().any(|p| {
        let p = p.trim().to_ascii_lowercase();
        match p.strip_prefix('@') {
            Some(d) => d == domain,
            None => p == a,
        }
    })
}

/// The token key file of `cfg`.
pub(crate) fn key_path(cfg: &Config) -> std::path::PathBuf {
    cfg.bounce
        .token_key_file
        .clone()
        .unwrap_or_else(|| cfg.server.data_dir.join("bounce.key"))
}
