//! The guard of each app's reputation (issue 24): hard-bounce, block and complaint rates per
//! app over rolling windows (24 h and 7 d, in hourly buckets), derived from the events this
//! node sees; past the configured thresholds (after a minimum volume) it warns, then pauses
//! the app. A paused app's submissions get `451 4.7.1 app paused: <why>` and its queued mail
//! is held, while other apps flow; `herald app resume NAME` ends the pause.
//!
//! Pauses are kept in the suppression store (so the CLI and every cluster node see them);
//! the counts are this node's own.

pub(crate) mod admin;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::config::BounceConfig;
use crate::events::{BounceClass, Event, EventHub, EventKind};
use crate::store::StoreError;
use crate::suppress::store::{Pause, Store};

const HOUR: u64 = 3600;
const WEEK_HOURS: u64 = 24 * 7;

/// Counts of one hour (or a window's sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Recipients that reached a final outcome (delivered or bounced).
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// Hard bounces (at delivery or returned later).
    pub hard: u64,
    /// Soft bounces and other permanent failures.
    pub soft: u64,
    /// Refusals for reputation, policy or authentication (temporary ones too).
    pub block: u64,
    /// Complaints.
    pub complaints: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.hard += o.hard;
        self.soft += o.soft;
        self.block += o.block;
        self.complaints += o.complaints;
    }

    fn pct(&self, n: u64) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.sent as f64
        }
    }

    /// Hard bounces as percent of recipients sent.
    pub fn hard_rate(&self) -> f64 {
        self.pct(self.hard)
    }

    /// Blocks as percent of recipients sent.
    pub fn block_rate(&self) -> f64 {
        self.pct(self.block)
    }

    /// Complaints as percent of recipients sent.
    pub fn complaint_rate(&self) -> f64 {
        self.pct(self.complaints)
    }
}

/// One app's rates, as `herald app stats` and the admin JSON show them.
#[derive(Debug, Clone, Serialize)]
pub struct AppStats {
    /// The app.
    pub app: String,
    /// The last 24 hours.
    pub day: Counts,
    /// The last 7 days.
    pub week: Counts,
    /// Why it is paused, if it is.
    pub paused: Option<String>,
}

#[derive(Default)]
struct Window {
    /// (hour number, counts), oldest first, at most a week.
    hours: VecDeque<(u64, Counts)>,
    warned_at: u64,
}

impl Window {
    fn bump(&mut self, now: u64, f: impl FnOnce(&mut Counts)) {
        let hour = now / HOUR;
        if self.hours.back().is_none_or(|(h, _)| *h != hour) {
            self.hours.push_back((hour, Counts::default()));
        }
        while self
            .hours
            .front()
            .is_some_and(|(h, _)| *h + WEEK_HOURS <= hour)
        {
            self.hours.pop_front();
        }
        if let Some((_, c)) = self.hours.back_mut() {
            f(c);
        }
    }

    fn sum(&self, now: u64, hours: u64) -> Counts {
        let hour = now / HOUR;
        let mut out = Counts::default();
        for (h, c) in &self.hours {
            if h + hours > hour {
                out.add(c);
            }
        }
        out
    }
}

/// The guard: counts per app, thresholds, and the pause list.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

/// The guard's part of `[bounce]`: read at every counted event, so a copy, not the section.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    hard_bounce_warn: f64,
    hard_bounce_pause: f64,
    complaint_warn: f64,
    complaint_pause: f64,
    min_volume: u64,
}

impl Thresholds {
    fn of(cfg: &BounceConfig) -> Thresholds {
        Thresholds {
            hard_bounce_warn: cfg.hard_bounce_warn,
            hard_bounce_pause: cfg.hard_bounce_pause,
            complaint_warn: cfg.complaint_warn,
            complaint_pause: cfg.complaint_pause,
            min_volume: cfg.min_volume,
        }
    }
}

struct Inner {
    thresholds: RwLock<Thresholds>,
    windows: Mutex<HashMap<String, Window>>,
    paused: RwLock<HashMap<String, Pause>>,
    store: Store,
    hub: EventHub,
    node: String,
}

impl Guard {
    /// A guard with `cfg`'s thresholds, its pause list in `store`, emitting into `hub`.
    pub async fn new(
        cfg: &BounceConfig,
        store: Store,
        hub: EventHub,
        node: String,
    ) -> Result<Guard, StoreError> {
        let g = Guard {
            inner: Arc::new(Inner {
                thresholds: RwLock::new(Thresholds::of(cfg)),
                windows: Mutex::new(HashMap::new()),
                paused: RwLock::new(HashMap::new()),
                store,
                hub,
                node,
            }),
        };
        g.refresh().await?;
        Ok(g)
    }

    /// Takes new thresholds (a reload).
    pub fn set_thresholds(&self, cfg: &BounceConfig) {
        *self
            .inner
            .thresholds
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Thresholds::of(cfg);
    }

    /// Why `app` is paused, if it is (memory only: called at every MAIL FROM and round).
    pub fn paused(&self, app: &str) -> Option<String> {
        let map = self.inner.paused.read().unwrap_or_else(|p| p.into_inner());
        map.get(app).map(|p| p.reason.clone())
    }

    /// Reads the pause list from the store (pauses and resumes made elsewhere). An app resumed
    /// elsewhere starts counting afresh, so its old rates do not pause it again at once.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let list = self.inner.store.pauses().await?;
        let mut resumed = Vec::new();
        {
            let mut map = self.inner.paused.write().unwrap_or_else(|p| p.into_inner());
            for p in list {
                if p.paused {
                    crate::suppress::metrics::app_paused(&p.app, true);
                    map.insert(p.app.clone(), p);
                } else if let Some(old) = map.get(&p.app) {
                    if p.at >= old.at {
                        map.remove(&p.app);
                        resumed.push(p.app.clone());
                    }
                } else {
                    crate::suppress::metrics::app_paused(&p.app, false);
                }
            }
        }
        for app in resumed {
            tracing::info!(app = %app, event = "resumed", "guard: app resumed; its counts start afresh");
            crate::suppress::metrics::app_paused(&app, false);
            self.inner
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&app);
        }
        Ok(())
    }

    /// Counts `event` against its app and pauses the app if a threshold is passed. The
    /// app's rate gauges on `/metrics` follow at [`Guard::publish_rates`].
    pub async fn observe(&self, event: &Event) {
        let Some(app) = event.app.as_deref() else {
            return;
        };
        let now = event.time;
        let counted = {
            let mut windows = self.inner.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = match windows.get_mut(app) {
                Some(w) => w,
                None => windows.entry(app.to_string()).or_default(),
            };
            count(w, event, now)
        };
        if counted {
            self.evaluate(app, now).await;
        }
    }

    /// Sets the rate gauges of `apps` on `/metrics` (24 h and 7 d: hard_bounce, block,
    /// complaint) from their counts at `now`: once per burst of events, not per event.
    pub fn publish_rates<'a>(&self, apps: impl IntoIterator<Item = &'a str>, now: u64) {
        let windows = self.inner.windows.lock().unwrap_or_else(|p| p.into_inner());
        for app in apps {
            let Some(w) = windows.get(app) else {
                continue;
            };
            for (name, hours) in [("24h", 24), ("7d", WEEK_HOURS)] {
                let c = w.sum(now, hours);
                crate::suppress::metrics::app_rate(app, name, "hard_bounce", c.hard_rate());
                crate::suppress::metrics::app_rate(app, name, "block", c.block_rate());
                crate::suppress::metrics::app_rate(app, name, "complaint", c.complaint_rate());
            }
        }
    }

    /// The counts of `app` over the last 24 h and 7 d.
    pub fn stats(&self, app: &str, now: u64) -> AppStats {
        let windows = self.inner.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (day, week) = windows
            .get(app)
            .map(|w| (w.sum(now, 24), w.sum(now, WEEK_HOURS)))
            .unwrap_or_default();
        AppStats {
            app: app.to_string(),
            day,
            week,
            paused: self.paused(app),
        }
    }

    async fn evaluate(&self, app: &str, now: u64) {
        if self.paused(app).is_some() {
            return;
        }
        let t = *self
            .inner
            .thresholds
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut pause = None;
        let mut warn = None;
        {
            let mut windows = self.inner.windows.lock().unwrap_or_else(|p| p.into_inner());
            let Some(w) = windows.get_mut(app) else {
                return;
            };
            for (name, hours) in [("24h", 24), ("7d", WEEK_HOURS)] {
                let c = w.sum(now, hours);
                if c.sent < t.min_volume.max(1) {
                    continue;
                }
                let why = |kind: &str, rate: f64, limit: f64| {
                    format!(
                        "{kind} rate {rate:.2}% over {name} ({} of {} recipients) is at or above \
                         {limit}%",
                        if kind == "hard bounce" {
                            c.hard
                        } else {
                            c.complaints
                        },
                        c.sent
                    )
                };
                if c.hard_rate() >= t.hard_bounce_pause {
                    pause.get_or_insert(why("hard bounce", c.hard_rate(), t.hard_bounce_pause));
                } else if c.complaint_rate() >= t.complaint_pause {
                    pause.get_or_insert(why("complaint", c.complaint_rate(), t.complaint_pause));
                } else if c.hard_rate() >= t.hard_bounce_warn {
                    warn.get_or_insert(why("hard bounce", c.hard_rate(), t.hard_bounce_warn));
                } else if c.complaint_rate() >= t.complaint_warn {
                    warn.get_or_insert(why("complaint", c.complaint_rate(), t.complaint_warn));
                }
            }
            if pause.is_none() && warn.is_some() && now.saturating_sub(w.warned_at) >= HOUR {
                w.warned_at = now;
            } else {
                warn = None;
            }
        }
        if let Some(why) = warn {
            tracing::warn!(app = %app, event = "guard_warning", "guard: {why}; the app will be paused if it reaches the pause threshold");
        }
        if let Some(why) = pause {
            self.pause(app, &why, now).await;
        }
    }

    /// Pauses `app` with `why` (the guard, or an operator).
    pub async fn pause(&self, app: &str, why: &str, now: u64) {
        let p = Pause {
            app: app.to_string(),
            paused: true,
            reason: why.to_string(),
            at: now as i64,
        };
        self.inner
            .paused
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(app.to_string(), p.clone());
        tracing::warn!(app = %app, event = "paused", reason = %why,
            "guard: app paused; its submissions get 451 and its queued mail is held until \
             herald app resume {app}");
        crate::suppress::metrics::app_paused(app, true);
        crate::suppress::metrics::app_pause_started(app);
        let mut e = Event::new(EventKind::Paused, now, "");
        e.app = Some(app.to_string());
        e.node = self.inner.node.clone();
        e.reply = Some(format!("451 4.7.1 app paused: {why}"));
        self.inner.hub.emit(e);
        if let Err(e) = self.inner.store.set_pause(p).await {
            tracing::error!(app = %app, error = %e, "guard: cannot record the pause in the store; it holds on this node only");
        }
    }

    /// Resumes `app` on this node and in the store (other nodes follow at their refresh);
    /// its counts start afresh. False when it was not paused.
    pub async fn resume(&self, app: &str, now: u64) -> Result<bool, StoreError> {
        let was = resume(&self.inner.store, app, now).await?;
        self.refresh().await?;
        Ok(was)
    }

    /// The `451 4.7.1` reply for a submission of paused `app`.
    pub fn refusal(app: &str, why: &str) -> crate::reply::Reply {
        crate::reply::Reply::new(
            451,
            "4.7.1",
            format!("app paused: {why}; the operator resumes it with herald app resume {app}"),
        )
    }

    /// Keeps the pause list in step with the store until the process ends.
    pub fn spawn_refresh(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let g = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = g.refresh().await {
                    tracing::warn!(error = %e, "guard: cannot read the pause list");
                }
            }
        })
    }
}

/// Counts `event` in `w` at `now`; false when it is not a kind the rates count.
fn count(w: &mut Window, event: &Event, now: u64) -> bool {
    let mut counted = true;
    w.bump(now, |c| match (event.kind, event.class) {
        (EventKind::Delivered, _) => {
            c.sent += 1;
            c.delivered += 1;
        }
        (EventKind::Bounced, class) => {
            // A DSN that comes back later is about a recipient already counted as sent
            // (delivered to the next hop): it moves to the bounced side.
            if event.attempt.is_some() {
                c.sent += 1;
            } else {
                c.delivered = c.delivered.saturating_sub(1);
            }
            match class {
                Some(BounceClass::Hard) => c.hard += 1,
                Some(BounceClass::Block) => c.block += 1,
                _ => c.soft += 1,
            }
        }
        (EventKind::Deferred, Some(BounceClass::Block)) => c.block += 1,
        (EventKind::Complained, _) => c.complaints += 1,
        _ => counted = false,
    });
    counted
}

/// Resumes `app` in `store` (the CLI); running nodes take it up within their refresh
/// interval. False when it was not paused.
pub(crate) async fn resume(store: &Store, app: &str, now: u64) -> Result<bool, StoreError> {
    let was = store.pause_of(app).await?.is_some_and(|p| p.paused);
    store
        .set_pause(Pause {
            app: app.to_string(),
            paused: false,
            reason: "resumed by the operator".into(),
            at: now as i64,
        })
        .await?;
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, class: Option<BounceClass>, t: u64) -> Event {
        let mut e = Event::new(kind, t, "a@x.test");
        e.app = Some("news".into());
        e.class = class;
        e.attempt = Some(1);
        e
    }

    async fn guard(dir: &std::path::Path) -> Guard {
        let store = Store::sqlite(&dir.join("s.sqlite")).await.expect("store");
        let cfg = BounceConfig {
            min_volume: 100,
            ..BounceConfig::default()
        };
        Guard::new(&cfg, store, EventHub::new(), "n".into())
            .await
            .expect("guard")
    }

    #[tokio::test]
    async fn twelve_percent_hard_bounces_pause_the_app_only_after_the_minimum_volume() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = guard(dir.path()).await;
        let t = 1_000_000;
        for i in 0..100u64 {
            let e = if i % 25 < 3 {
                event(EventKind::Bounced, Some(BounceClass::Hard), t)
            } else {
                event(EventKind::Delivered, None, t)
            };
            if i == 50 {
                assert!(g.paused("news").is_none(), "below the minimum volume");
            }
            g.observe(&e).await;
        }
        let why = g.paused("news").expect("paused");
        assert!(why.contains("hard bounce rate 12.00%"), "{why}");
        assert_eq!(g.stats("news", t).day.hard, 12);
        assert!(g.paused("billing").is_none());
        // The CLI resumes it through the store; the guard takes it up and starts afresh.
        let store = Store::sqlite(&dir.path().join("s.sqlite"))
            .await
            .expect("store");
        assert!(resume(&store, "news", t + 1).await.expect("resume"));
        g.refresh().await.expect("refresh");
        assert!(g.paused("news").is_none());
        assert_eq!(g.stats("news", t).day.sent, 0);
    }

    #[test]
    fn buckets_older_than_the_window_drop_out() {
        let mut w = Window::default();
        w.bump(0, |c| c.sent += 1);
        w.bump(25 * HOUR, |c| c.sent += 1);
        assert_eq!(w.sum(25 * HOUR, 24).sent, 1);
        assert_eq!(w.sum(25 * HOUR, WEEK_HOURS).sent, 2);
        w.bump(9 * 24 * HOUR, |c| c.sent += 1);
        assert_eq!(w.sum(9 * 24 * HOUR, WEEK_HOURS).sent, 1);
        assert_eq!(w.hours.len(), 1);
    }
}
