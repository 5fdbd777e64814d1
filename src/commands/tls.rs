//! `herald tls show DOMAIN`: the whole transport policy herald applies to a destination — MX
//! hosts, DNSSEC status, TLSA records (DANE), the MTA-STS policy — and, per MX host, which
//! policy wins and why.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::clock::unix_now;
use crate::mta_sts::StsResolver;
use crate::outbound::dane::{Dane, DanePlan, HostDane};
use crate::outbound::resolve;
use crate::tls_policy::TlsDirective;

/// `herald tls` subcommands.
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Print MX hosts, DNSSEC status, TLSA records, the MTA-STS policy, and the policy herald
    /// applies to each MX host (DANE takes precedence over MTA-STS).
    Show {
        /// Recipient domain.
        domain: String,
    },
}

/// Runs an `herald tls` subcommand. Exit 1 when DNS fails or an MX host cannot be used now.
pub async fn run(config: &Path, cmd: TlsCommand) -> anyhow::Result<ExitCode> {
    let cfg = super::load_config(config)?;
    let TlsCommand::Show { domain } = cmd;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let auth = crate::resolver::authenticator(&cfg.dns)?;
    let dane = Dane::new(&cfg)?;
    let sts = StsResolver::new(&cfg)?;
    let (hosts, resolution) = tokio::join!(resolve::mx_hosts(&auth, &domain), sts.resolve(&domain));
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => {
            println!("domain:   {domain}");
            println!("mx:       {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let plan = dane.plan(&domain, &hosts).await;
    let directive = sts.directive_from(&resolution);
    let mut out = String::new();
    let _ = writeln!(out, "domain:   {domain}");
    let mode = if dane.enabled() {
        dane.resolver().mode_name()
    } else {
        "off ([dane] enabled = false)"
    };
    let _ = writeln!(out, "dnssec:   {mode}");
    let mx_status = match (&plan.summary, plan.mx_secure) {
        _ if !dane.enabled() => "DNSSEC not checked".to_string(),
        (_, true) => "DNSSEC-secure".to_string(),
        (Some(why), false) => format!("not secure: {why}"),
        (None, false) => "not secure".to_string(),
    };
    let _ = writeln!(out, "mx:       {} ({mx_status})", hosts.join(" "));
    if let Some(relay) = &cfg.delivery.relay_host {
        let _ = writeln!(
            out,
            "relay:    all mail goes through the smart host {relay} ([delivery] relay_host) \
             with verified TLS; the per-host policies below apply only without it"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "[mta-sts]");
    for line in super::sts::render(&resolution, &directive, cfg.mta_sts.port, unix_now()).lines() {
        if !line.starts_with("domain:") {
            let _ = writeln!(out, "{line}");
        }
    }
    let mut trouble = false;
    for host in &hosts {
        let _ = writeln!(out);
        let _ = writeln!(out, "[{host}]");
        let (tlsa, applies) = host_lines(&dane, &plan, host, &directive, &mut trouble);
        for line in tlsa {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "applies:  {applies}");
    }
    print!("{out}");
    Ok(if trouble {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The TLSA lines and the "applies" verdict for one MX host.
fn host_lines(
    dane: &Dane,
    plan: &DanePlan,
    host: &str,
    directive: &TlsDirective,
    trouble: &mut bool,
) -> (Vec<String>, String) {
    let name = dane.tlsa_name(host);
    match plan.host(host) {
        HostDane::Applies(target) => {
            let base = dane.tlsa_name(&target.base);
            let mut lines = vec![if target.base == target.host {
                format!("tlsa:     {base} (DNSSEC-secure)")
            } else {
                format!(
                    "tlsa:     {base} (DNSSEC-secure; {host} is a CNAME for {})",
                    target.base
                )
            }];
            lines.extend(
                target
                    .record_lines()
                    .iter()
                    .map(|r| format!("          {r}")),
            );
            let applies = if target.records.is_empty() {
                "dane, encrypt only: no TLSA record is usable for SMTP (RFC 7672 §3.1), so \
                 STARTTLS is required but the certificate is not checked"
                    .to_string()
            } else {
                "dane: STARTTLS required, the certificate chain must match a TLSA record; \
                 never in clear (DANE takes precedence over MTA-STS)"
                    .to_string()
            };
            (lines, applies)
        }
        HostDane::Unusable {
            result_type,
            detail,
        } => {
            *trouble = true;
            let kind = serde_json::to_value(result_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (
                vec![format!("tlsa:     {name}: {detail}")],
                format!("not used now ({kind}): deliveries to this host defer until DNS is fixed"),
            )
        }
        HostDane::NotApplicable(why) => {
            let applies = match directive {
                TlsDirective::Sts { policy, .. }
                    if directive.requires_verified_tls() && !policy.matches_mx(host) =>
                {
                    "not used: not listed in the MTA-STS policy".to_string()
                }
                d if d.requires_verified_tls() => format!(
                    "{}: STARTTLS with a WebPKI-verified certificate for {host}",
                    d.label()
                ),
                d => format!("{}: STARTTLS when offered, any certificate", d.label()),
            };
            (vec![format!("tlsa:     none used ({why})")], applies)
        }
    }
}
