//! `[shaping]`: traffic shaping per destination (issue 29). Limits per destination
//! (connections at once, messages per connection, messages per minute) with built-in rules for
//! the big providers grouped by their MX hosts, and how herald reacts when a destination pushes
//! back (`421 4.7.28`, `451 4.7.650`, Yahoo's `TSS04`, any other `421`): suspend it for a
//! while, halve its limits, then win them back step by step as mail gets through.

use std::time::Duration;

use serde::Deserialize;

/// Traffic shaping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingConfig {
    /// Shape at all; `false` leaves only `[delivery]`'s connection limits.
    pub enabled: bool,
    /// Use the shipped rules for Google, Microsoft and Yahoo (a rule of the same name in
    /// `rules` replaces the shipped one).
    pub builtin_rules: bool,
    /// How long a destination is suspended after a reputation or rate deferral
    /// (`4.7.28`, `4.7.650`, `TSS04`).
    #[serde(with = "humantime_serde")]
    pub suspend_for: Duration,
    /// How long a destination is paused after any other `421` (the server sheds load). By
    /// default none: a busy host halves the destination's limits, and the delivery goes on
    /// to its next MX host at once (RFC 5321 §5.1); a reputation deferral is what suspends.
    #[serde(with = "humantime_serde")]
    pub pause_for: Duration,
    /// How much of its limits a destination wins back with each message delivered after a
    /// deferral halved them (0.1: ten deliveries from half to full).
    pub recover_step: f64,
    /// The lowest fraction of its limits a destination is slowed to.
    pub min_factor: f64,
    /// Limits for destinations no rule matches (0: no limit of that kind; `connections = 0`
    /// means `[delivery] max_connections_per_host`).
    #[serde(rename = "default")]
    pub default_limits: ShapingLimits,
    /// Rules by MX host; the first whose pattern matches an MX host names its destination.
    pub rules: Vec<ShapingRule>,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            builtin_rules: true,
            suspend_for: Duration::from_secs(15 * 60),
            pause_for: Duration::ZERO,
            recover_step: 0.1,
            min_factor: 0.1,
            default_limits: ShapingLimits::default(),
            rules: Vec::new(),
        }
    }
}

/// The limits of one destination; 0 means no limit of that kind. With `[cluster]`,
/// connections and messages per minute hold for the whole cluster (each live node takes its
/// share, at least one).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ShapingLimits {
    /// Connections (deliveries) to the destination at once, across its MX hosts (cluster-wide
    /// with `[cluster]`, except the per-node fallback of 0).
    pub connections: u32,
    /// Messages sent over one connection before it is closed and a fresh one opened.
    pub messages_per_connection: u32,
    /// Messages per minute to the destination (cluster-wide with `[cluster]`).
    pub messages_per_minute: u32,
}

/// One destination: the MX hosts that make it up and its limits.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShapingRule {
    /// The destination's name (in logs, `/metrics` and `herald queue summary`).
    pub name: String,
    /// MX host patterns: `*.google.com` matches any host under google.com; without `*.` the
    /// host itself.
    pub mx: Vec<String>,
    /// Connections at once (0: `[delivery] max_connections_per_host`).
    #[serde(default)]
    pub connections: u32,
    /// Messages over one connection (0: no limit).
    #[serde(default)]
    pub messages_per_connection: u32,
    /// Messages per minute (0: no limit).
    #[serde(default)]
    pub messages_per_minute: u32,
}

impl ShapingRule {
    /// The rule's limits.
    pub fn limits(&self) -> ShapingLimits {
        ShapingLimits {
            connections: self.connections,
            messages_per_connection: self.messages_per_connection,
            messages_per_minute: self.messages_per_minute,
        }
    }
}

impl ShapingConfig {
    /// The rules in force: the configured ones, then the shipped ones not replaced by name.
    pub fn effective_rules(&self) -> Vec<ShapingRule> {
        let mut rules = self.rules.clone();
        if self.builtin_rules {
            for b in builtin_rules() {
                if !rules.iter().any(|r| r.name.eq_ignore_ascii_case(&b.name)) {
                    rules.push(b);
                }
            }
        }
        rules
    }

    /// Checks what serde cannot: (key, problem).
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if !(self.recover_step > 0.0 && self.recover_step <= 1.0) {
            return Err((
                "shaping.recover_step".into(),
                "must be above 0 and at most 1".into(),
            ));
        }
        if !(self.min_factor > 0.0 && self.min_factor <= 1.0) {
            return Err((
                "shaping.min_factor".into(),
                "must be above 0 and at most 1".into(),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.name.trim().is_empty() || rule.mx.is_empty() {
                return Err((
                    format!("shaping.rules[{i}]"),
                    "needs a name and at least one mx pattern (e.g. \"*.example.net\")".into(),
                ));
            }
            if let Some(bad) = rule.mx.iter().find(|p| {
                let host = p.strip_prefix("*.").unwrap_or(p);
                host.is_empty() || host.contains('*') || host.contains(char::is_whitespace)
            }) {
                return Err((
                    format!("shaping.rules[{i}].mx"),
                    format!("{bad:?} is not a host name or \"*.\" followed by one"),
                ));
            }
        }
        Ok(())
    }
}

/// The shipped rules: the big providers, grouped by the MX hosts they publish. Conservative
/// limits that keep a new sender clear of their automatic rate limiting.
pub fn builtin_rules() -> Vec<ShapingRule> {
    let rule = |name: &str, mx: &[&str], connections, per_connection| ShapingRule {
        name: name.into(),
        mx: mx.iter().map(|s| s.to_string()).collect(),
        connections,
        messages_per_connection: per_connection,
        messages_per_minute: 0,
    };
    vec![
        rule("google", &["*.google.com", "*.googlemail.com"], 20, 100),
        rule("microsoft", &["*.protection.outlook.com"], 10, 100),
        rule("yahoo", &["*.yahoodns.net"], 5, 20),
    ]
}
