//! Which destination an MX host belongs to, and which replies count as a push-back.
//!
//! A destination is a rule's name when one of its MX patterns matches (all of Google's MX
//! hosts are one destination, whatever the recipient domain); otherwise the MX host's parent
//! domain (`mx1.example.org` → `example.org`), so a site's several MX hosts share one budget.
//!
//! In a cluster of `n` live nodes each node takes `1/n` of a destination's connections and
//! messages per minute (rounded down, never below one), so the nodes together stay within
//! what the rule says; messages per connection are per connection and stay whole. A connection
//! limit left at 0 is `[delivery] max_connections_per_host`, the node's own pool limit, and
//! stays each node's.

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
    /// `[delivery] max_connections_per_host`, for a connection limit left at 0.
    per_host: u32,
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

/// One node's share of `limit` among `nodes` (rounded down, at least 1; 0 stays "no limit").
pub(super) fn share_of(limit: u32, nodes: u32) -> u32 {
    match limit {
        0 => 0,
        l => (l / nodes.max(1)).max(1),
    }
}

/// One node's share of a destination's limits when `nodes` nodes deliver to it.
fn shared(limits: ShapingLimits, nodes: u32) -> ShapingLimits {
    ShapingLimits {
        connections: share_of(limits.connections, nodes),
        messages_per_connection: limits.messages_per_connection,
        messages_per_minute: share_of(limits.messages_per_minute, nodes),
    }
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
                    let patterns = r.mx.iter().map(|p| Pattern::parse(p)).collect();
                    (patterns, r.name.clone(), r.limits())
                })
                .collect(),
            default: cfg.default_limits,
            per_host,
        }
    }

    /// The destination of MX host `mx`, with this node's share of its limits when `nodes`
    /// nodes deliver (1 on a single node).
    pub(super) fn destination(&self, mx: &str, nodes: u32) -> Destination {
        let host = mx.trim_end_matches('.').to_ascii_lowercase();
        let (name, limits) = match self
            .rules
            .iter()
            .find(|(patterns, _, _)| patterns.iter().any(|p| p.matches(&host)))
        {
            Some((_, name, limits)) => (name.clone(), *limits),
            None => {
                let name = match host.split_once('.') {
                    Some((_, parent)) if parent.contains('.') => parent.to_string(),
                    _ => host,
                };
                (name, self.default)
            }
        };
        Destination {
            name,
            limits: resolved(shared(limits, nodes), self.per_host),
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
        let g = m.destination("gmail-smtp-in.l.google.com.", 1);
        assert_eq!(g.name, "google");
        assert_eq!(g.limits.connections, 20);
        assert_eq!(m.destination("ALT1.ASPMX.L.GOOGLE.COM", 1).name, "google");
        assert_eq!(m.destination("x.googlemail.com", 1).name, "google");
        let ms = m.destination("contoso-com.mail.protection.outlook.com", 1);
        assert_eq!(ms.name, "microsoft");
        assert_eq!(ms.limits.messages_per_connection, 100);
        assert_eq!(m.destination("mta5.am0.yahoodns.net", 1).name, "yahoo");
        // Not google.com itself, nor a look-alike.
        assert_eq!(m.destination("evilgoogle.com", 1).name, "evilgoogle.com");
        // Others: the MX host's parent domain, with the default limits.
        let other = m.destination("mx1.example.org", 1);
        assert_eq!(other.name, "example.org");
        assert_eq!(other.limits.connections, 10);
        assert_eq!(m.destination("example.org", 1).name, "example.org");
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
        let g = m.destination("aspmx.l.google.com", 1);
        assert_eq!((g.name.as_str(), g.limits.connections), ("Google", 3));
        assert_eq!(g.limits.messages_per_minute, 600);
        // The shipped rule is gone: googlemail falls back to its parent domain.
        assert_eq!(m.destination("x.googlemail.com", 1).name, "googlemail.com");
        let c = m.destination("mx.corp.example", 1);
        assert_eq!((c.name.as_str(), c.limits.connections), ("corp", 7));
        assert_eq!(
            m.destination("a.mx.corp.example", 1).name,
            "mx.corp.example"
        );
    }

    #[test]
    fn in_a_cluster_each_node_takes_its_share_of_a_destinations_limits() {
        let cfg = ShapingConfig {
            rules: vec![ShapingRule {
                name: "prov".into(),
                mx: vec!["*.prov.example".into()],
                connections: 10,
                messages_per_connection: 50,
                messages_per_minute: 600,
            }],
            ..ShapingConfig::default()
        };
        let m = Matcher::new(&cfg, 5);
        let three = m.destination("mx.prov.example", 3);
        assert_eq!(three.limits.connections, 3, "10 among 3 rounds down");
        assert_eq!(three.limits.messages_per_minute, 200);
        assert_eq!(three.limits.messages_per_connection, 50, "per connection");
        let alone = m.destination("mx.prov.example", 1);
        assert_eq!(alone.limits.connections, 10);
        // More nodes than connections: one each (the only way to deliver at all).
        assert_eq!(m.destination("mx.prov.example", 40).limits.connections, 1);
        assert_eq!(share_of(0, 3), 0, "no limit stays no limit");
        assert_eq!(share_of(7, 0), 7);
        // Google's shipped 20 connections: 10 each for two nodes.
        assert_eq!(
            m.destination("aspmx.l.google.com", 2).limits.connections,
            10
        );
        // The node's own pool limit (connections left at 0) is not divided.
        assert_eq!(m.destination("mx1.example.org", 3).limits.connections, 5);
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
