//! `herald check DOMAIN`: audits a domain's live mail DNS through the configured resolver and
//! says, finding by finding, what is right, what is wrong and how to fix it.
//!
//! Every finding has a stable id (`spf.record`, `dkim.<selector>`, `dmarc.policy`, …) so that
//! monitoring and tests can match on it. A failure to get an answer is its own status
//! ([`Status::Error`]) and fails the run like a failed check: a check that could not be made is
//! never reported as passed.

mod bimi;
mod bimi_svg;
pub(crate) mod dkim;
mod dmarc;
pub(crate) mod lookup;
mod mta_sts;
mod orgdomain;
mod ptr;
pub(crate) mod readiness;
mod reports;
mod return_path;
mod spf;
mod spf_walk;

use ipnet::IpNet;
use mail_auth::MessageAuthenticator;
use serde::Serialize;

use crate::config::Config;
use crate::dns::records::{self, normalize_name};
use crate::signing::PublishedKey;
use lookup::{Answer, Dns};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Correct.
    Pass,
    /// For information only (optional records).
    Info,
    /// Works, but should be improved; does not fail the run.
    Warn,
    /// Wrong: mail from herald will fail authentication or be at risk. Fails the run.
    Fail,
    /// The check could not be made (no answer from DNS). Fails the run.
    Error,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Info => "INFO",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
        }
    }
}

/// One result line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    /// Stable id, e.g. `spf.lookups`.
    pub id: String,
    /// The outcome.
    pub status: Status,
    /// What was found, in plain words.
    pub message: String,
    /// What to do about it, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(id: impl Into<String>, status: Status, message: impl Into<String>) -> Finding {
        Finding {
            id: id.into(),
            status,
            message: message.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

/// Everything `herald check` found for one domain.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The domain checked.
    pub domain: String,
    /// The resolver asked (`system` or the configured servers).
    pub resolver: String,
    /// True when no finding failed or errored.
    pub ok: bool,
    /// The findings in order: DNS, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, reverse DNS.
    pub findings: Vec<Finding>,
    /// The app the verdict is about (`herald check --app`), if one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Gmail's, Yahoo's and Microsoft's verdicts on mail herald sends as this domain.
    pub readiness: Vec<readiness::Verdict>,
    /// The providers' refusal codes herald has seen, explained.
    pub seen: Vec<readiness::SeenCode>,
}

impl Report {
    /// Human-readable text, one line per finding, fixes indented below.
    pub(crate) fn render_text(&self) -> String {
        let mut out = format!(
            "herald check {} (resolver: {})\n",
            self.domain, self.resolver
        );
        let width = self.findings.iter().map(|f| f.id.len()).max().unwrap_or(0);
        for f in &self.findings {
            out.push_str(&format!(
                "  {:<5}  {:<width$}  {}\n",
                f.status.label(),
                f.id,
                f.message
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("  {:<5}  {:<width$}  fix: {}\n", "", "", fix));
            }
        }
        let count = |s: Status, one: &str, many: &str| {
            let n = self.findings.iter().filter(|f| f.status == s).count();
            format!("{n} {}", if n == 1 { one } else { many })
        };
        out.push_str(&format!(
            "\n{}, {}, {}, {}: {}\n",
            count(Status::Pass, "passed", "passed"),
            count(Status::Fail, "failed", "failed"),
            count(Status::Error, "error", "errors"),
            count(Status::Warn, "warning", "warnings"),
            if self.ok {
                "all required checks pass"
            } else {
                "something required is wrong (exit 1)"
            }
        ));
        out.push_str(&self.render_readiness());
        out
    }

    /// The providers' verdicts and the refusals seen, as text.
    fn render_readiness(&self) -> String {
        let mut out = format!(
            "\nWill the big providers take this mail?{} (their bulk-sender rules)\n",
            match &self.app {
                Some(app) => format!(" (app {app})"),
                None => String::new(),
            }
        );
        for v in &self.readiness {
            let failing: Vec<&str> = v
                .rules
                .iter()
                .filter(|r| r.required && matches!(r.status, Status::Fail | Status::Error))
                .map(|r| r.id)
                .collect();
            out.push_str(&format!("  {:<10} {}", v.provider, v.verdict));
            if !failing.is_empty() {
                out.push_str(&format!(": {}", failing.join(", ")));
            }
            out.push('\n');
        }
        // The rules are the same for the three but for which are required and the complaint
        // ceiling: list them once, with who requires each.
        let Some(first) = self.readiness.first() else {
            return out;
        };
        for (i, rule) in first.rules.iter().enumerate() {
            let by: Vec<&str> = self
                .readiness
                .iter()
                .filter(|v| v.rules.get(i).is_some_and(|r| r.required))
                .map(|v| v.provider)
                .collect();
            let required = if by.is_empty() {
                "recommended".to_string()
            } else {
                format!("required by {}", by.join(", "))
            };
            out.push_str(&format!(
                "  {:<5}  {:<11}  {}  ({required})\n",
                rule.status.label(),
                rule.id,
                rule.evidence
            ));
            if let Some(fix) = &rule.fix {
                out.push_str(&format!("  {:<5}  {:<11}  fix: {fix}\n", "", ""));
            }
        }
        for seen in &self.seen {
            out.push_str(&format!(
                "  SEEN   {} {} ({} time{}): {}\n         e.g. {}\n",
                seen.provider,
                seen.code,
                seen.count,
                if seen.count == 1 { "" } else { "s" },
                seen.meaning,
                seen.example
            ));
        }
        out
    }
}

/// What the checks need to know about herald and the domain.
pub(crate) struct Ctx<'a> {
    cfg: &'a Config,
    auth: &'a MessageAuthenticator,
    dns: Dns<'a>,
    domain: String,
    keys: &'a [PublishedKey],
    /// The domain whose active keys sign mail from the checked domain: the domain itself or
    /// the nearest parent with an active key, as the signer chooses.
    signing_domain: Option<String>,
    /// When no key signs yet: the domain whose generated, not yet active keys will sign once
    /// `herald dkim activate` switches them on (judged as if they did, so that `herald check`
    /// can pass before activation, as the README's roll-out order needs).
    pending_domain: Option<String>,
    include: String,
    addresses: Vec<IpNet>,
}

/// [`run`] for the mail of one app (`app`, or every app sending as `domain` when `None`), with
/// what the running herald has seen (`observed`) for the providers' verdicts.
pub(crate) async fn run_for(
    cfg: &Config,
    auth: &MessageAuthenticator,
    keys: &[PublishedKey],
    domain: &str,
    app: Option<&str>,
    observed: &readiness::Observed,
) -> Report {
    let (addresses, guessed) = records::egress_addresses(cfg);
    let domain = normalize_name(domain);
    let signing_domain = crate::signing::align::candidates(&domain)
        .into_iter()
        .find(|d| {
            keys.iter()
                .any(|k| k.active && normalize_name(&k.domain) == *d)
        })
        .map(str::to_string);
    let pending_domain = signing_domain
        .is_none()
        .then(|| {
            crate::signing::align::candidates(&domain)
                .into_iter()
                .find(|d| keys.iter().any(|k| normalize_name(&k.domain) == *d))
                .map(str::to_string)
        })
        .flatten();
    let ctx = Ctx {
        cfg,
        auth,
        dns: Dns::new(auth),
        domain,
        keys,
        signing_domain,
        pending_domain,
        include: normalize_name(&cfg.spf.include),
        addresses,
    };
    let mut findings = Vec::new();
    if guessed {
        findings.push(
            Finding::new(
                "herald.addresses",
                Status::Warn,
                format!(
                    "[spf] addresses is not set; checking with this host's global addresses: {}",
                    if ctx.addresses.is_empty() {
                        "none found".to_string()
                    } else {
                        records::ip_mechanisms(&ctx.addresses).join(" ")
                    }
                ),
            )
            .fix("set [spf] addresses to the public addresses herald's mail leaves from"),
        );
    }
    if let Some(w) = records::unsigned_bounce_warning(cfg, keys) {
        findings.push(Finding::new("herald.bounces", Status::Warn, w).fix(format!(
            "give {} an active DKIM key (or set [delivery] dsn_domain to a domain that has one)",
            cfg.dsn_domain()
        )));
    }
    check_all(&ctx, &mut findings).await;
    let apps = readiness::apps_for(cfg, &ctx.domain, app);
    let verdicts = readiness::verdicts(cfg, &ctx.domain, &apps, &findings, observed);
    let ok = !findings
        .iter()
        .any(|f| matches!(f.status, Status::Fail | Status::Error))
        && verdicts.iter().all(|v| v.ready);
    Report {
        domain: ctx.domain.clone(),
        resolver: if cfg.dns.servers.is_empty() {
            "system".into()
        } else {
            cfg.dns
                .servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        ok,
        findings,
        app: app.map(str::to_string),
        readiness: verdicts,
        seen: readiness::seen_codes(&observed.replies),
    }
}

async fn check_all(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    // The first look-up tells whether the domain exists and whether the resolver answers at
    // all; when either is not the case every other check would say the same thing again.
    let apex = match ctx.dns.txt(&ctx.domain).await {
        Err(e) => {
            out.push(
                Finding::new(
                    "dns.resolver",
                    Status::Error,
                    format!("the resolver gave no answer ({e}); nothing could be checked"),
                )
                .fix("check [dns] servers and that the resolver is reachable, then run again"),
            );
            return;
        }
        Ok(Answer::NxDomain) => {
            out.push(
                Finding::new(
                    "dns.domain",
                    Status::Fail,
                    format!("{} does not exist (NXDOMAIN)", ctx.domain),
                )
                .fix("check the spelling, and that the domain is registered and delegated"),
            );
            return;
        }
        Ok(Answer::NoData) => Vec::new(),
        Ok(Answer::Found(records)) => records,
    };
    spf::check(ctx, &apex, out).await;
    dkim::check(ctx, out).await;
    let mut enforcement = None;
    dmarc::check(ctx, out, &mut enforcement).await;
    dmarc::informational(ctx, out).await;
    mta_sts::check(ctx, out).await;
    return_path::check(ctx, out).await;
    ptr::check(ctx, out).await;
    bimi::check(ctx, enforcement.as_ref(), out).await;
}
