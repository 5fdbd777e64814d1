//! Who a reported source is: **herald** (one of its `[spf] addresses`), **authorized** (the
//! domain's live SPF passes the address — evaluated with mail-auth, as `herald check` does —
//! or the mail carried an aligned DKIM signature with a key that is not herald's), or
//! **unknown** (forged, or a sender nobody listed). With its PTR name, for a person to
//! recognise it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use mail_auth::MessageAuthenticator;
use mail_auth::spf::verify::SpfParameters;
use serde::Serialize;

use crate::config::Config;

/// The class of a sending address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceClass {
    /// One of herald's own egress addresses.
    Herald,
    /// Another sender the domain authorizes (its SPF, or its DKIM key).
    Authorized,
    /// Neither: forged mail, or a legitimate sender nobody set up yet.
    Unknown,
}

impl SourceClass {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceClass::Herald => "herald",
            SourceClass::Authorized => "authorized",
            SourceClass::Unknown => "unknown",
        }
    }
}

/// Classifies addresses for one configuration; DNS through `[dns] servers`.
pub(crate) struct Classifier {
    addresses: Vec<ipnet::IpNet>,
    herald_keys: HashSet<(String, String)>,
    helo: String,
    auth: Option<MessageAuthenticator>,
    /// After this, no more DNS questions: one summary's look-ups share [`DNS_BUDGET`].
    deadline: Instant,
    /// PTR names already looked up (a source reported for several domains is asked once).
    ptrs: Mutex<HashMap<IpAddr, Option<String>>>,
}

/// How long one DNS question may take before the source is classified without it.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long all the DNS questions of one classifier (one summary) may take together: with a
/// dead resolver a summary costs this much, not a timeout per domain and source.
const DNS_BUDGET: Duration = Duration::from_secs(5);

impl Classifier {
    /// A classifier for `cfg` (without DNS when no resolver can be built).
    pub(crate) fn new(cfg: &Config) -> Classifier {
        let auth = match crate::resolver::authenticator(&cfg.dns) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("dmarc: no resolver, sources are classified without DNS: {e:#}");
                None
            }
        };
        Classifier {
            addresses: cfg.spf.addresses.clone(),
            herald_keys: cfg
                .dkim
                .keys
                .iter()
                .map(|k| (norm(&k.domain), norm(&k.selector)))
                .collect(),
            helo: cfg.server.hostname.clone(),
            auth,
            deadline: Instant::now() + DNS_BUDGET,
            ptrs: Mutex::new(HashMap::new()),
        }
    }

    /// When the next DNS question must be answered by: [`DNS_TIMEOUT`] from now, at most the
    /// classifier's deadline; `None` once the budget is spent.
    fn dns_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        (now < self.deadline).then(|| (now + DNS_TIMEOUT).min(self.deadline))
    }

    /// The class of `ip` sending as `domain`, and why, given the DKIM signatures receivers saw
    /// on its mail (`(d=, s=, result)`).
    pub(crate) async fn classify(
        &self,
        domain: &str,
        ip: IpAddr,
        dkim_seen: &[(String, String, String)],
    ) -> (SourceClass, String) {
        if self.addresses.iter().any(|n| n.contains(&ip)) {
            return (
                SourceClass::Herald,
                "one of herald's [spf] addresses".into(),
            );
        }
        if let Some(auth) = &self.auth {
            let sender = format!("postmaster@{domain}");
            let eval = auth.verify_spf(SpfParameters::verify_mail_from(
                ip, &self.helo, &self.helo, &sender,
            ));
            if let Some(by) = self.dns_deadline()
                && let Ok(out) = tokio::time::timeout_at(by, eval).await
                && out.result() == mail_auth::SpfResult::Pass
            {
                return (
                    SourceClass::Authorized,
                    format!("the live SPF record of {domain} passes it"),
                );
            }
        }
        let org = org_domain(domain);
        for (d, s, result) in dkim_seen {
            if result == "pass"
                && org_domain(d) == org
                && !self.herald_keys.contains(&(norm(d), norm(s)))
            {
                return (
                    SourceClass::Authorized,
                    format!("signs with an aligned DKIM key that is not herald's (d={d} s={s})"),
                );
            }
        }
        (
            SourceClass::Unknown,
            "not herald, not in the domain's SPF, no aligned DKIM signature".into(),
        )
    }

    /// The PTR name of `ip`, if it has one (asked once per classifier, within its budget).
    pub(crate) async fn ptr(&self, ip: IpAddr) -> Option<String> {
        if let Some(known) = self.ptrs.lock().unwrap_or_else(|p| p.into_inner()).get(&ip) {
            return known.clone();
        }
        let auth = self.auth.as_ref()?;
        let by = self.dns_deadline()?;
        let name = match tokio::time::timeout_at(by, auth.resolver().reverse_lookup(ip)).await {
            Ok(Ok(lookup)) => lookup.answers().iter().find_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::PTR(name) => {
                    Some(name.to_string().trim_end_matches('.').to_string())
                }
                _ => None,
            }),
            // No answer in time: not cached, the next summary asks again.
            Err(_) => return None,
            Ok(Err(_)) => None,
        };
        self.ptrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ip, name.clone());
        name
    }
}

fn norm(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The organizational domain (relaxed DMARC alignment), e.g. `mail.example.com` → `example.com`.
pub(crate) fn org_domain(domain: &str) -> String {
    crate::signing::align::organizational_domain(&norm(domain)).to_string()
}
