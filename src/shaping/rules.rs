//! Which destination an MX host belongs to, and which replies count as a push-back.
//!
//! A destination is a rule's name when one of its MX patterns matches (all of Google's MX
//! hosts are one destination, whatever the recipient domain); otherwise the MX host's parent
//! domain (`mx1.example.org` → `example.org`), so a site's several MX hosts share one budget.

use super::state::Reaction;
use crate::config::{ShapingConfig, ShapingLimits};
use crate::reply::EnhancedStatus;

/// A destination's name and the limits in force for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The rule's name, or the MX host's parent domain.
    pub name: String,
    /// Its limits (`connections` resolved to a number).
    pub limits: ShapingLimits,
}

/// The rules in force, compiled for matching.
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    rules: Vec<(Vec<Pattern>, String, ShapingLimits)>,
    default: ShapingLimits,
}

#[derive(Debug, Clone)]
enum Pattern {
    /// `*.example.net`: any host strictly under it.
    Under(String),
    /// The host itself.
    Exactly(String),
}

impl Pattern {
    fn parse(p: &str) -> Pattern {
        let p = p.trim().trim_end_matches('.').to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(base) => Pattern::Under(format!(".{base}")),
            None => Pattern::Exactly(p),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Pattern::Under(suffix) => host.ends_with(suffix.as_str()),
            Pattern::Exactly(h) => host == h,
        }
    }
}

/// `connections = 0` means the pool's per-host limit.
fn resolved(mut limits: ShapingLimits, per_host: u32) -> ShapingLimits {
    if limits.connections == 0 {
        limits.connections = per_host;
    }
    limits
}

impl Matcher {
    /// The rules of `[shaping]`, with `per_host` (`[delivery] max_connections_per_host`) for
    /// a connection limit left at 0.
    pub(super) fn new(cfg: &ShapingConfig, per_host: u32) -> Matcher {
        Matcher {
            rules: cfg
                .effective_rules()
                .into_iter()
                .map(|r| {
                    let limits = resolved(r.limits(), per_host);
                    let patterns = r.mx.iter().map(|p| Pattern::parse(p)).collect();
                    (patterns, r.name, limits)
                })
                .collect(),
            default: resolved(cfg.default_limits, per_host),
        }
    }

    /// The destination of MX host `mx`.
    pub(super) fn destination(&self, mx: &str) -> Destination {
        let host = mx.trim_end_matches('.').to_ascii_lowercase();
        for (patterns, name, limits) in &self.rules {
            if patterns.iter().any(|p| p.matches(&host)) {
                return Destination {
                    name: name.clone(),
                    limits: *limits,
                };
            }
        }
        let name = match host.split_once('.') {
            Some((_, parent)) if parent.contains('.') => parent.to_string(),
            _ => host,
        };
        Destination {
            name,
            limits: self.default,
        }
    }
}

/// How a reply pushes back, if it does: a reputation or rate deferral suspends (Gmail's
/// `4.7.28`, Microsoft's `4.7.650`, Yahoo's `TSS04`/`TS04`, and `4.7.0` replies that say
/// "rate" or "reputation"); any other `421` pauses. Permanent and other replies do not.
pub(crate) fn reaction(code: u16, status: Option<EnhancedStatus>, text: &str) -> Option<Reaction> {
    if !(400..500).contains(&code) {
        return None;
    }
    let upper = text.to_ascii_uppercase();
    let status = status.map(|s| (s.class, s.subject, s.detail));
    let reputation = matches!(status, Some((4, 7, 28)) | Some((4, 7, 650)))
        || upper.contains("TSS04")
        || upper.contains("[TS04]")
        || (status == Some((4, 7, 0))
            && (upper.contains("RATE LIMIT") || upper.contains("REPUTATION")));
    if reputation {
        Some(Reaction::Suspend)
    } else if code == 421 {
        Some(Reaction::Pause)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShapingRule;

    fn st(s: &str) -> Option<EnhancedStatus> {
        EnhancedStatus::parse(s)
    }

    #[test]
    fn providers_are_grouped_by_their_mx_hosts() {
        let m = Matcher::new(&ShapingConfig::default(), 10);
        let g = m.destination("gmail-smtp-in.l.google.com.");
        assert_eq!(g.name, "google");
        assert_eq!(g.limits.connections, 20);
        assert_eq!(m.destination("ALT1.ASPMX.L.GOOGLE.COM").name, "google");
        assert_eq!(m.destination("x.googlemail.com").name, "google");
        let ms = m.destination("contoso-com.mail.protection.outlook.com");
        assert_eq!(ms.name, "microsoft");
        assert_eq!(ms.limits.messages_per_connection, 100);
        assert_eq!(m.destination("mta5.am0.yahoodns.net").name, "yahoo");
        // Not google.com itself, nor a look-alike.
        assert_eq!(m.destination("evilgoogle.com").name, "evilgoogle.com");
        // Others: the MX host's parent domain, with the default limits.
        let other = m.destination("mx1.example.org");
        assert_eq!(other.name, "example.org");
        assert_eq!(other.limits.connections, 10);
        assert_eq!(m.destination("example.org").name, "example.org");
    }

    #[test]
    fn a_configured_rule_replaces_the_shipped_one_and_adds_new_ones() {
        let cfg = ShapingConfig {
            rules: vec![
                ShapingRule {
                    name: "Google".into(),
                    mx: vec!["*.google.com".into()],
                    connections: 3,
                    messages_per_connection: 0,
                    messages_per_minute: 600,
                },
                ShapingRule {
                    name: "corp".into(),
                    mx: vec!["mx.corp.example".into()],
                    connections: 0,
                    messages_per_connection: 5,
                    messages_per_minute: 0,
                },
            ],
            ..ShapingConfig::default()
        };
        let m = Matcher::new(&cfg, 7);
        let g = m.destination("aspmx.l.google.com");
        assert_eq!((g.name.as_str(), g.limits.connections), ("Google", 3));
        assert_eq!(g.limits.messages_per_minute, 600);
        // The shipped rule is gone: googlemail falls back to its parent domain.
        assert_eq!(m.destination("x.googlemail.com").name, "googlemail.com");
        let c = m.destination("mx.corp.example");
        assert_eq!((c.name.as_str(), c.limits.connections), ("corp", 7));
        assert_eq!(m.destination("a.mx.corp.example").name, "mx.corp.example");
    }

    #[test]
    fn reputation_deferrals_suspend_other_421s_pause() {
        let gmail = "Our system has detected an unusual rate of unsolicited mail";
        assert_eq!(reaction(421, st("4.7.28"), gmail), Some(Reaction::Suspend));
        assert_eq!(
            reaction(451, st("4.7.650"), "rate limited due to IP reputation"),
            Some(Reaction::Suspend)
        );
        let yahoo = "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume";
        assert_eq!(reaction(421, st("4.7.0"), yahoo), Some(Reaction::Suspend));
        assert_eq!(
            reaction(421, st("4.3.2"), "shutting down"),
            Some(Reaction::Pause)
        );
        assert_eq!(
            reaction(421, None, "too many connections"),
            Some(Reaction::Pause)
        );
        assert_eq!(reaction(451, st("4.3.0"), "try again later"), None);
        assert_eq!(reaction(550, st("5.7.28"), gmail), None);
        assert_eq!(reaction(250, None, "ok"), None);
    }
}
