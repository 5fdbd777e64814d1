//! The `[bounce]` section (issue 24): how remote refusals are classified, the return path
//! herald owns (VERP tokens), the complaint address, the suppression list and the per-app
//! guard. Per-app switches live in `[apps.NAME]` ([`super::AppConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Bounces, complaints, suppression and the per-app guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceConfig {
    /// Extra classification rules, tried before the shipped ones (first match wins).
    pub rules: Vec<BounceRule>,
    /// The HMAC key of the VERP tokens and the reference header: a file holding at least 32
    /// random bytes (generated, mode 0600, when missing). Every node of a cluster must share
    /// it; defaults to `<data_dir>/bounce.key`.
    pub token_key_file: Option<PathBuf>,
    /// How long a VERP token stays valid after the message was sent (late DSNs arrive days
    /// later; complaints weeks later).
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// The local part of the complaint address at `[feedback] domain` (`CFBL-Address`).
    pub complaint_local_part: String,
    /// The suppression database (SQLite) for a single node; defaults to
    /// `<data_dir>/suppress.sqlite`. With `[cluster]` the list lives in PostgreSQL.
    pub database: Option<PathBuf>,
    /// How long a hard bounce keeps an address suppressed (`0s`: for ever).
    #[serde(with = "humantime_serde")]
    pub hard_bounce_expiry: Duration,
    /// How long a complaint keeps an address suppressed (`0s`: for ever, the default).
    #[serde(with = "humantime_serde")]
    pub complaint_expiry: Duration,
    /// How often the in-memory index and the pause list are brought in step with the store
    /// (changes made by the CLI or by another cluster node).
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Hard-bounce rate (percent) that logs a warning for an app.
    pub hard_bounce_warn: f64,
    /// Hard-bounce rate (percent) that pauses an app.
    pub hard_bounce_pause: f64,
    /// Complaint rate (percent) that logs a warning for an app.
    pub complaint_warn: f64,
    /// Complaint rate (percent) that pauses an app.
    pub complaint_pause: f64,
    /// Recipients an app must have sent to in a window before its rates can pause it.
    pub min_volume: u64,
    /// Most bounces and complaints accepted from one client address per hour on the return
    /// path (a flood is refused with `450`).
    pub max_per_hour_per_ip: u32,
    /// Largest DSN or ARF report read, in bytes.
    pub max_report_size: usize,
}

impl Default for BounceConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            token_key_file: None,
            token_lifetime: Duration::from_secs(60 * 24 * 3600),
            complaint_local_part: "fbl".into(),
            database: None,
            hard_bounce_expiry: Duration::from_secs(30 * 24 * 3600),
            complaint_expiry: Duration::ZERO,
            refresh_interval: Duration::from_secs(5),
            hard_bounce_warn: 5.0,
            hard_bounce_pause: 10.0,
            complaint_warn: 0.1,
            complaint_pause: 0.3,
            min_volume: 500,
            max_per_hour_per_ip: 1000,
            max_report_size: 2 * 1024 * 1024,
        }
    }
}

/// One classification rule: every given condition must hold.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BounceRule {
    /// The reply code (`550`), or its first digit (`5`).
    #[serde(default)]
    pub code: Option<u16>,
    /// The enhanced status (`5.7.26`), or a prefix of it ending in a dot (`5.7.`).
    #[serde(default)]
    pub status: Option<String>,
    /// Text the reply must contain (case-insensitive).
    #[serde(default)]
    pub contains: Option<String>,
    /// The class given when the rule matches.
    pub class: RuleClass,
}

/// The class a rule gives (the config's mirror of `events::BounceClass`, which sits above
/// the configuration in the layers).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleClass {
    /// The address does not exist.
    Hard,
    /// Temporary trouble with the mailbox.
    Soft,
    /// Reputation, policy, spam or authentication.
    Block,
    /// Rate limited.
    Throttle,
    /// Anything else.
    Other,
}

/// Where the suppression of an app is kept and looked up.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SuppressionScope {
    /// One list per sending domain, shared by every app sending from it.
    #[default]
    Domain,
    /// The app's own list (its domain's shared entries still apply).
    App,
}

impl BounceConfig {
    /// Checks the values an operator could get wrong; `Err` holds (key, problem).
    pub fn check(&self) -> Result<(), (String, String)> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.code.is_none() && r.status.is_none() && r.contains.is_none() {
                return Err((
                    format!("bounce.rules[{i}]"),
                    "a rule needs at least one of code, status or contains".into(),
                ));
            }
        }
        for (key, v) in [
            ("bounce.hard_bounce_warn", self.hard_bounce_warn),
            ("bounce.hard_bounce_pause", self.hard_bounce_pause),
            ("bounce.complaint_warn", self.complaint_warn),
            ("bounce.complaint_pause", self.complaint_pause),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err((key.into(), format!("{v} is not a percentage (0 to 100)")));
            }
        }
        if self.complaint_local_part.is_empty() || self.complaint_local_part.contains('@') {
            return Err((
                "bounce.complaint_local_part".into(),
                "give the part before the @, e.g. \"fbl\"".into(),
            ));
        }
        if self.refresh_interval.is_zero() {
            return Err((
                "bounce.refresh_interval".into(),
                "must be longer than 0s".into(),
            ));
        }
        Ok(())
    }

    /// `Some(d)` unless `d` is zero (for ever).
    pub fn expiry(d: Duration) -> Option<Duration> {
        (!d.is_zero()).then_some(d)
    }
}
