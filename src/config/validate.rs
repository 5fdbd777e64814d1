//! Validation of what serde cannot check: values that parse but make no sense, each error
//! naming the key.

use super::{Config, ConfigError};

impl Config {
    /// Checks what serde cannot: values that parse but make no sense.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, problem: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };
        if self.feedback.listen.is_some() && self.feedback.dmarc_address().is_none() {
            return Err(err(
                "feedback.domain",
                "must be set when feedback.listen is: the report domain whose MX points at \
                 herald, e.g. reports.relay.example.net"
                    .into(),
            ));
        }
        let unsubscribing: Vec<&str> = (self.apps.iter())
            .filter(|(_, a)| a.unsubscribe == super::UnsubscribeMode::OneClick)
            .map(|(n, _)| n.as_str())
            .collect();
        if let Err((key, problem)) = self.web.validate(&unsubscribing) {
            return Err(err(&key, problem));
        }
        super::validate_bimi(&self.bimi).map_err(|(key, problem)| err(&key, problem))?;
        self.bounce
            .check()
            .map_err(|(key, problem)| err(&key, problem))?;
        (self.shaping.check()).map_err(|(key, problem)| err(&key, problem))?;
        if self.feedback.max_message_size < 1024 || self.feedback.max_report_size < 1024 {
            return Err(err(
                "feedback.max_message_size",
                "feedback.max_message_size and max_report_size must be at least 1024 bytes".into(),
            ));
        }
        if self.dane.trust_resolver_ad {
            if self.dns.servers.is_empty() {
                return Err(err(
                    "dane.trust_resolver_ad",
                    "needs [dns] servers set to a local validating resolver (e.g. unbound on \
                     127.0.0.1): the system resolver may be anywhere"
                        .into(),
                ));
            }
            if let Some(remote) = self.dns.servers.iter().find(|s| !s.ip().is_loopback()) {
                return Err(err(
                    "dane.trust_resolver_ad",
                    format!(
                        "only allowed with loopback resolvers, but [dns] servers has {remote}: \
                         an AD bit from across a network can be forged; run a validating \
                         resolver on this machine or let herald validate (trust_resolver_ad = false)"
                    ),
                ));
            }
            if self.dane.trust_anchor.is_some() {
                return Err(err(
                    "dane.trust_anchor",
                    "is for herald's own validation; with trust_resolver_ad = true the resolver \
                     holds the trust anchor"
                        .into(),
                ));
            }
        }
        if let Some(anchor) = &self.dane.trust_anchor
            && !anchor.is_file()
        {
            return Err(err(
                "dane.trust_anchor",
                format!("{} is not a readable file", anchor.display()),
            ));
        }
        validate_log_level(&self.server.log_level)
            .map_err(|p| err("server.log_level", p.to_string()))?;
        self.validate_history(file)?;
        if self.server.hostname.trim().is_empty() {
            return Err(err("server.hostname", "must not be empty".into()));
        }
        if self.smtp.max_message_size < 1024 {
            return Err(err(
                "smtp.max_message_size",
                "must be at least 1024 bytes".into(),
            ));
        }
        if self.smtp.max_recipients == 0 {
            return Err(err("smtp.max_recipients", "must be at least 1".into()));
        }
        if self.smtp.max_line_length < 1000 {
            return Err(err(
                "smtp.max_line_length",
                "must be at least 1000 (RFC 5321 §4.5.3.1.6)".into(),
            ));
        }
        if self.smtp.max_connections == 0 || self.smtp.max_connections_per_ip == 0 {
            return Err(err(
                "smtp.max_connections",
                "connection limits must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("smtp.command_timeout", self.smtp.command_timeout),
            ("smtp.data_timeout", self.smtp.data_timeout),
            (
                "smtp.tls_handshake_timeout",
                self.smtp.tls_handshake_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(err(key, "must be longer than zero, e.g. \"10s\"".into()));
            }
        }
        if self.smtp.plain.is_some() && self.smtp.plain_networks.is_empty() {
            return Err(err(
                "smtp.plain_networks",
                "the plain listener is enabled but no network is allowed on it".into(),
            ));
        }
        let production = !self.tls.allow_dev_certs && !self.dkim.allow_dev_keys;
        for (name, app) in &self.apps {
            let key = |k: &str| format!("apps.{name}.{k}");
            if production && app.password_hash.trim() == super::DEMO_PASSWORD_HASH {
                return Err(err(
                    &key("password_hash"),
                    "is the demo password's hash from the README, which anyone can log in with; \
                     create a password with `herald app add NAME --sender …` (or `herald app \
                     hash-password`) and paste its hash"
                        .into(),
                ));
            }
            if !app.password_hash.starts_with("$argon2id$") {
                return Err(err(
                    &key("password_hash"),
                    "must be an argon2id hash; create one with `herald app hash-password`".into(),
                ));
            }
            if app.senders.is_empty() {
                return Err(err(
                    &key("senders"),
                    "must list at least one address or @domain".into(),
                ));
            }
            for s in &app.senders {
                validate_sender_pattern(s).map_err(|p| err(&key("senders"), p.to_string()))?;
            }
        }
        for s in &self.smtp.plain_senders {
            validate_sender_pattern(s).map_err(|p| err("smtp.plain_senders", p.to_string()))?;
        }
        for (i, k) in self.dkim.keys.iter().enumerate() {
            let key = |f: &str| format!("dkim.keys[{i}].{f}");
            if k.domain.is_empty() || !k.domain.contains('.') {
                return Err(err(
                    &key("domain"),
                    format!("{:?} is not a domain", k.domain),
                ));
            }
            if k.selector.is_empty()
                || !k
                    .selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(err(
                    &key("selector"),
                    format!("{:?} is not a valid selector", k.selector),
                ));
            }
        }
        if self.delivery.retry_schedule.is_empty() {
            return Err(err(
                "delivery.retry_schedule",
                "must list at least one wait".into(),
            ));
        }
        if !matches!(self.spf.qualifier.as_str(), "-all" | "~all") {
            return Err(err(
                "spf.qualifier",
                format!("{:?} must be \"-all\" or \"~all\"", self.spf.qualifier),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster
                .validate()
                .map_err(|(key, problem)| err(key, problem))?;
        }
        Ok(())
    }
}

impl super::ClusterConfig {
    /// What serde cannot check in `[cluster]`: (key, problem).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url: tokio_postgres::Config = self.database_url.parse().map_err(|e| {
            (
                "cluster.database_url",
                format!(
                    "is not a PostgreSQL connection string ({e}); e.g. \
                     \"postgresql://herald@db.example.net:5432/herald\""
                ),
            )
        })?;
        if url.get_password().is_some() {
            return Err((
                "cluster.database_url",
                "contains a password; put it in cluster.password_file (mode 0600) or the \
                 PGPASSWORD environment variable instead, so it is never shown with the config"
                    .into(),
            ));
        }
        if url.get_hosts().is_empty() {
            return Err((
                "cluster.database_url",
                "names no host (a name, an address, or a Unix socket directory)".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(("cluster.pool_size", "must be at least 1".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(("cluster.connect_timeout", "must be longer than zero".into()));
        }
        if self.lease < std::time::Duration::from_secs(2) {
            return Err((
                "cluster.lease",
                "must be at least 2s (renewed every quarter of it); 60s suits most clusters".into(),
            ));
        }
        if let Some(id) = &self.node_id
            && (id.trim().is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            return Err((
                "cluster.node_id",
                format!("{id:?} must be 1-64 letters, digits, '-', '_' or '.'"),
            ));
        }
        Ok(())
    }
}

/// The levels `server.log_level` takes, alone or after `target=`.
const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Refuses a `log_level` that is not a level or `target=level` list: `tracing` would read a
/// bare word such as `verbose` as a module name and log nothing from herald at all.
fn validate_log_level(filter: &str) -> Result<(), BadLogLevel> {
    let is_level = |w: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            _ => directive,
        };
        if !is_level(level) {
            return Err(BadLogLevel::NotALevel {
                directive: directive.to_string(),
                levels: LOG_LEVELS.map(|l| format!("\"{l}\"")).join(", "),
            });
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| BadLogLevel::NotAFilter {
            filter: filter.to_string(),
            why: e.to_string(),
        })
}

/// A `log_level` that herald would not log with (an unknown word silences everything).
#[derive(Debug, thiserror::Error)]
enum BadLogLevel {
    /// A directive whose level is not one of the levels.
    #[error(
        "{directive:?} is not a log level; use one of {levels}, or a level per module such as \"info,herald=debug\""
    )]
    NotALevel {
        /// The directive as written.
        directive: String,
        /// The valid levels, quoted.
        levels: String,
    },
    /// Levels that tracing's filter syntax still refuses.
    #[error("{filter:?} is not a log filter ({why}); e.g. \"info\"")]
    NotAFilter {
        /// The whole value.
        filter: String,
        /// The filter parser's words.
        why: String,
    },
}

/// A `senders` entry that is neither form herald matches.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadSenderPattern(String);

/// Checks one `senders` entry; a wildcard (`*@example.com`) is refused with the form that
/// means it (`@example.com`), since herald matches no wildcards.
pub(crate) fn validate_sender_pattern(s: &str) -> Result<(), BadSenderPattern> {
    if let Some((local, domain)) = s.rsplit_once('@')
        && (local.contains('*') || local.contains('%'))
    {
        return Err(BadSenderPattern(format!(
            "{s:?} has a wildcard, which herald does not match; write \"@{}\" for every \
             address at {}",
            domain.trim_start_matches("*."),
            domain.trim_start_matches("*.")
        )));
    }
    if s.contains('*') {
        return Err(BadSenderPattern(format!(
            "{s:?} has a wildcard, which herald does not match; list each domain as \
             \"@example.com\" (subdomains are separate entries)"
        )));
    }
    let ok = match s.strip_prefix('@') {
        Some(domain) => !domain.is_empty() && !domain.contains('@'),
        None => s
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty()),
    };
    if ok {
        Ok(())
    } else {
        Err(BadSenderPattern(format!(
            "{s:?} is neither an address (user@example.com) nor a domain entry (@example.com)"
        )))
    }
}
