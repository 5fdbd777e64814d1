//! Webhooks to the apps: each app with a `webhook_url` gets its events POSTed in batches,
//! signed the Standard Webhooks way ([`sign`]), from the durable outbox the history writer
//! fills ([`crate::history`]).
//!
//! At least once: a batch leaves the database only when the endpoint answered `2xx`; until
//! then it is retried with the same `webhook-id` and body, after `retry_initial`, doubling up
//! to `retry_max`, for `give_up_after` (a day by default), then dropped and counted. Batches of
//! one app go out in order, one at a time. A slow or dead endpoint only grows its app's outbox
//! (bounded by `max_backlog`); mail never waits for it.
//!
//! With `[cluster]` the outbox is the cluster's ([`pg`]): any live node sends the batches of
//! every node, so a node that dies does not hold its events back ([`outbox`]).

pub(crate) mod client;
pub(crate) mod outbox;
pub(crate) mod pg;
pub(crate) mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{now_ms, unix_now};
use crate::config::{Config, WebhooksConfig};
use crate::events::stats;
use crate::history::History;
use crate::history::db;
use client::{Client, Outcome};
use outbox::Outbox;

/// One app's endpoint: its URL and signing key.
#[derive(Clone, PartialEq, Eq)]
struct Endpoint {
    url: String,
    key: Vec<u8>,
}

/// The endpoints a configuration gives (apps with a `webhook_url` and a valid secret).
fn endpoints(cfg: &Config) -> HashMap<String, Endpoint> {
    cfg.apps
        .iter()
        .filter_map(|(name, a)| {
            let url = a.webhook_url.clone()?;
            let key = a.webhook_secret.as_ref()?.key()?;
            Some((name.clone(), Endpoint { url, key }))
        })
        .collect()
}

/// The running senders, one per app with a webhook; they follow reloads
/// ([`Webhooks::prepare_reload`], then [`Webhooks::apply_reload`]).
#[derive(Clone)]
pub(crate) struct Webhooks {
    history: History,
    running: Arc<Mutex<Running>>,
}

/// The senders in force and the `[webhooks]` settings they run with (as text, to compare).
#[derive(Default)]
struct Running {
    senders: HashMap<String, (Endpoint, tokio::task::JoinHandle<()>)>,
    settings: String,
}

/// A reload's webhook settings, checked and ready to put in force.
pub(crate) struct Prepared {
    endpoints: HashMap<String, Endpoint>,
    client: Option<Client>,
    settings: WebhooksConfig,
    /// The outbox backlog of each app that had no webhook before.
    backlogs: Vec<(String, u64)>,
}

/// Starts one sender per app that has a webhook.
pub(crate) fn start(cfg: &Config, history: &History) -> anyhow::Result<Webhooks> {
    let hooks = Webhooks {
        history: history.clone(),
        running: Arc::default(),
    };
    let prepared = hooks.prepare_reload(cfg)?;
    hooks.apply_reload(prepared);
    Ok(hooks)
}

impl Webhooks {
    /// First phase of a reload: the endpoints of `cfg` and their HTTP client (which may fail
    /// to build), and each new app's outbox backlog read from the database.
    pub(crate) fn prepare_reload(&self, cfg: &Config) -> anyhow::Result<Prepared> {
        let endpoints = endpoints(cfg);
        let client = if endpoints.is_empty() {
            None
        } else {
            Some(Client::new(cfg)?)
        };
        let known = self.history.webhook_apps();
        let mut backlogs = Vec::new();
        for app in endpoints.keys().filter(|a| !known.contains(*a)) {
            let name = app.clone();
            let n = self.history.db.call_now(move |c| db::backlog(c, &name))?;
            backlogs.push((app.clone(), n));
        }
        Ok(Prepared {
            endpoints,
            client,
            settings: cfg.webhooks.clone(),
            backlogs,
        })
    }

    /// Second phase: stops the senders of apps whose webhook went or changed, starts those
    /// of new or changed ones, and tells the history writer which apps' events to queue.
    /// (A sender stopped mid-POST leaves its batch in the outbox: it is sent again.)
    pub(crate) fn apply_reload(&self, p: Prepared) {
        let mut guard = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let running = &mut *guard;
        let settings = format!("{:?}", p.settings);
        let settings_changed = running.settings != settings;
        running.settings = settings;
        running.senders.retain(|app, (endpoint, task)| {
            let keep = !settings_changed && p.endpoints.get(app) == Some(endpoint);
            if !keep {
                task.abort();
                tracing::info!(app, "webhook: sender stopped (reloaded)");
            }
            keep
        });
        for (app, n) in p.backlogs {
            stats::stats()
                .backlog
                .get_or_create(&stats::app(&app))
                .set(n as i64);
        }
        self.history.set_webhook_apps(
            p.endpoints.keys().cloned().collect(),
            p.settings.max_backlog,
            p.settings.batch_size,
        );
        let Some(client) = p.client else {
            return;
        };
        let outbox = match &self.history.pg {
            Some(pg) => Outbox::Shared {
                local: self.history.db.clone(),
                pg: pg::SharedOutbox::new(pg.db().clone()),
            },
            None => Outbox::Local(self.history.db.clone()),
        };
        for (app, endpoint) in p.endpoints {
            if running.senders.contains_key(&app) {
                continue;
            }
            tracing::info!(app, url = endpoint.url, "webhook: sending events");
            let task = tokio::spawn(run_app(Sender {
                app: app.clone(),
                url: endpoint.url.clone(),
                key: endpoint.key.clone(),
                client: client.clone(),
                outbox: outbox.clone(),
                queued: self.history.queued.clone(),
                settings: p.settings.clone(),
            }));
            running.senders.insert(app, (endpoint, task));
        }
    }
}

/// One app's sender.
struct Sender {
    app: String,
    url: String,
    key: Vec<u8>,
    client: Client,
    outbox: Outbox,
    queued: watch::Receiver<u64>,
    settings: WebhooksConfig,
}

/// The wait after the `attempts`-th failure: `retry_initial` doubling, at most `retry_max`.
pub(crate) fn backoff(settings: &WebhooksConfig, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    settings
        .retry_initial
        .saturating_mul(factor)
        .min(settings.retry_max)
}

/// A batch that left the outbox's count: acknowledged (`true`) or given up, with its size.
struct Finished {
    id: i64,
    events: u64,
    acknowledged: bool,
}

async fn run_app(mut s: Sender) {
    let label = stats::app(&s.app);
    let st = stats::stats();
    // The batch just finished is removed in the same trip to the database that reads the
    // next one; its counters move once that removal is committed.
    let mut finished: Option<Finished> = None;
    loop {
        s.queued.mark_unchanged();
        let done = finished.as_ref().map(|f| f.id);
        let next = match s
            .outbox
            .next(&s.app, done, s.settings.batch_size, s.settings.timeout)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(app = s.app, error = %format!("{e:#}"), "webhook: cannot read the outbox");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        if let Some(f) = finished.take() {
            if f.acknowledged {
                st.delivered.get_or_create(&label).inc();
            } else {
                st.dropped.get_or_create(&label).inc_by(f.events);
            }
            st.backlog.get_or_create(&label).dec_by(f.events as i64);
        }
        if let Some(n) = next.backlog {
            st.backlog.get_or_create(&label).set(n as i64);
        }
        let Some(batch) = next.batch else {
            let queued = s.queued.changed();
            match next.recheck {
                None => {
                    if queued.await.is_err() {
                        return;
                    }
                }
                Some(after) => {
                    tokio::select! {
                        r = queued => if r.is_err() { return },
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
            continue;
        };
        if unix_now()
            >= batch
                .created
                .saturating_add(s.settings.give_up_after.as_secs())
        {
            tracing::warn!(
                app = s.app,
                webhook_id = batch.webhook_id,
                events = batch.events,
                attempts = batch.attempts,
                "webhook: batch dropped after the retry period"
            );
            finished = Some(Finished {
                id: batch.id,
                events: batch.events,
                acknowledged: false,
            });
            continue;
        }
        let wait = batch.next_attempt.saturating_sub(now_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        match s
            .client
            .post(&s.url, &s.key, &batch.webhook_id, &batch.body)
            .await
        {
            Outcome::Accepted(status) => {
                tracing::debug!(
                    app = s.app,
                    webhook_id = batch.webhook_id,
                    events = batch.events,
                    status,
                    "webhook: batch delivered"
                );
                finished = Some(Finished {
                    id: batch.id,
                    events: batch.events,
                    acknowledged: true,
                });
            }
            Outcome::Failed(why) => {
                st.failures.get_or_create(&label).inc();
                let attempts = batch.attempts + 1;
                let wait = backoff(&s.settings, attempts);
                tracing::warn!(app = s.app, webhook_id = batch.webhook_id, attempts,
                    retry_in = %humantime::format_duration(wait), error = why, "webhook: POST failed");
                if let Err(e) = s.outbox.retry(batch.id, wait, &why).await {
                    tracing::error!(app = s.app, error = %format!("{e:#}"), "webhook: cannot record a failed attempt");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// `herald webhook test APP`: POSTs one signed `webhook.test` event to the app's endpoint now
/// (not through the outbox) and says what came back.
pub(crate) async fn send_test(cfg: &Config, app: &str) -> anyhow::Result<(String, Outcome)> {
    let a = cfg
        .apps
        .get(app)
        .ok_or_else(|| anyhow::anyhow!("no app {app:?} in [apps]"))?;
    let url = a
        .webhook_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("app {app:?} has no webhook_url"))?;
    let key = a
        .webhook_secret
        .as_ref()
        .and_then(|s| s.key())
        .ok_or_else(|| anyhow::anyhow!("app {app:?} has no valid webhook_secret"))?;
    let client = Client::new(cfg)?;
    let now = unix_now();
    let event = serde_json::json!({
        "id": 0, "time": now, "kind": "test", "node": cfg.server.hostname, "app": app,
        "recipient": "", "sender": "",
    });
    let mut body = crate::history::payload::body(&[event.to_string()], now);
    // The type says it is a test, so receivers can tell it apart.
    if let Some(rest) = body.strip_prefix(b"{\"type\":\"message.events\"".as_slice()) {
        body = [b"{\"type\":\"webhook.test\"".as_slice(), rest].concat();
    }
    let id = crate::history::payload::new_webhook_id();
    let outcome = client.post(&url, &key, &id, &body).await;
    Ok((url, outcome))
}
