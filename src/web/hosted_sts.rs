//! MTA-STS policies herald hosts for the business's own domains (RFC 8461 §3.2), served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`, and the DNS records that announce
//! them: `_mta-sts.<domain>` TXT with an `id` derived from the policy text (so it changes
//! exactly when the policy does), `mta-sts.<domain>` pointing at herald, and `_smtp._tls`.

use std::collections::BTreeMap;

use crate::config::{Config, HostedStsConfig};
use crate::dns::records::{DEFAULT_TTL, DnsRecord, Purpose};
use crate::signing::align::organizational_domain;

/// One domain's policy as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostedPolicy {
    /// The policy domain.
    pub domain: String,
    /// The policy file's text (CRLF line ends).
    pub text: String,
    /// The `id=` of the `_mta-sts` TXT record: 20 hex digits of the text's SHA-256.
    pub id: String,
    /// The `mx:` patterns in the policy.
    pub mx: Vec<String>,
}

/// The policy file for `domain` with these `mx` patterns.
pub(crate) fn render(domain: &str, sts: &HostedStsConfig, mx: &[String]) -> HostedPolicy {
    let mut text = format!("version: STSv1\r\nmode: {}\r\n", sts.mode.as_str());
    for m in mx {
        text.push_str(&format!("mx: {m}\r\n"));
    }
    text.push_str(&format!("max_age: {}\r\n", sts.max_age.as_secs()));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let id: String = digest
        .as_ref()
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    HostedPolicy {
        domain: domain.to_string(),
        text,
        id,
        mx: mx.to_vec(),
    }
}

/// The domain's MX hosts could not be looked up, so its hosted policy has no `mx:` lines.
#[derive(Debug, thiserror::Error)]
#[error("MX of {domain}: {why}")]
pub(crate) struct MxLookupError {
    /// The hosted domain.
    pub domain: String,
    /// The resolver's answer.
    pub why: String,
}

/// The `mx:` patterns for `domain`: the configured ones, else the domain's live MX hosts.
pub(crate) async fn mx_patterns(
    resolver: &mail_auth::MessageAuthenticator,
    domain: &str,
    sts: &HostedStsConfig,
) -> Result<Vec<String>, MxLookupError> {
    if !sts.mx.is_empty() {
        return Ok(sts
            .mx
            .iter()
            .map(|m| m.trim().to_ascii_lowercase())
            .collect());
    }
    let mut hosts = crate::outbound::resolve::mx_hosts(resolver, domain)
        .await
        .map_err(|e| MxLookupError {
            domain: domain.to_string(),
            why: e.to_string(),
        })?;
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

/// The policy of one hosted domain, MX resolved as configured.
pub(crate) async fn policy_for(
    cfg: &Config,
    resolver: &mail_auth::MessageAuthenticator,
    domain: &str,
) -> Option<Result<HostedPolicy, MxLookupError>> {
    let (name, sts) = cfg
        .web
        .mta_sts
        .iter()
        .find(|(d, _)| d.trim_end_matches('.').eq_ignore_ascii_case(domain))?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    Some(
        mx_patterns(resolver, &name, sts)
            .await
            .map(|mx| render(&name, sts, &mx)),
    )
}

/// Every hosted policy; a domain whose MX cannot be looked up is left out, with the reason.
pub(crate) async fn all_policies(
    cfg: &Config,
    resolver: &mail_auth::MessageAuthenticator,
) -> (Vec<HostedPolicy>, Vec<String>) {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for domain in cfg.web.mta_sts.keys() {
        match policy_for(cfg, resolver, domain).await {
            Some(Ok(p)) => policies.push(p),
            Some(Err(e)) => problems.push(format!(
                "hosted MTA-STS for {domain}: {e}; set [web.mta_sts.\"{domain}\"] mx to list \
                 the MX hosts"
            )),
            None => {}
        }
    }
    (policies, problems)
}

/// The records announcing the hosted policies.
pub(crate) fn records(cfg: &Config, policies: &[HostedPolicy]) -> Vec<DnsRecord> {
    let host = super::names::web_host(cfg);
    let tlsrpt = cfg
        .report
        .own_rua
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .is_none()
        .then(|| cfg.feedback.tlsrpt_address())
        .flatten();
    let mut out = Vec::new();
    let by_domain: BTreeMap<&str, &HostedPolicy> =
        policies.iter().map(|p| (p.domain.as_str(), p)).collect();
    for (domain, p) in by_domain {
        let zone = organizational_domain(domain).to_string();
        let txt = |name: String, value: String, purpose, note: String| DnsRecord {
            zone: zone.clone(),
            name,
            rtype: "TXT",
            ttl: DEFAULT_TTL,
            strings: crate::dns::records::split_txt(&value),
            value,
            purpose,
            active: None,
            note,
        };
        out.push(txt(
            format!("_mta-sts.{domain}"),
            format!("v=STSv1; id={}", p.id),
            Purpose::MtaSts,
            format!(
                "MTA-STS: senders fetch the policy herald hosts at https://mta-sts.{domain}/\
                 .well-known/mta-sts.txt; the id changes whenever the policy does (mx: {})",
                p.mx.join(" ")
            ),
        ));
        out.push(DnsRecord {
            zone: zone.clone(),
            name: format!("mta-sts.{domain}"),
            rtype: "CNAME",
            ttl: DEFAULT_TTL,
            value: format!("{host}."),
            strings: vec![format!("{host}.")],
            purpose: Purpose::MtaStsHost,
            active: None,
            note: format!(
                "the policy host: herald's [web] listener answers for it and obtains its \
                 certificate once this points at {host}"
            ),
        });
        if let Some(addr) = &tlsrpt {
            out.push(txt(
                format!("_smtp._tls.{domain}"),
                format!("v=TLSRPTv1; rua=mailto:{addr}"),
                Purpose::TlsRpt,
                "TLS-RPT: receivers' reports about TLS to your domain go to herald's feedback \
                 listener"
                    .into(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostedStsMode;

    fn sts(mode: HostedStsMode) -> HostedStsConfig {
        HostedStsConfig {
            mode,
            mx: Vec::new(),
            max_age: std::time::Duration::from_secs(604_800),
        }
    }

    #[test]
    fn the_policy_follows_rfc_8461_and_its_id_changes_exactly_with_it() {
        let mx = vec![
            "mx1.example.com".to_string(),
            "*.mx.example.net".to_string(),
        ];
        let p = render("example.com", &sts(HostedStsMode::Testing), &mx);
        assert_eq!(
            p.text,
            "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: *.mx.example.net\r\n\
             max_age: 604800\r\n"
        );
        assert_eq!(p.id.len(), 20);
        assert!(
            p.id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "RFC 8461 id: 1*32 alphanumerics"
        );
        assert_eq!(
            p.id,
            render("example.com", &sts(HostedStsMode::Testing), &mx).id
        );
        assert_ne!(
            p.id,
            render("example.com", &sts(HostedStsMode::Enforce), &mx).id
        );
        assert_ne!(
            p.id,
            render("example.com", &sts(HostedStsMode::Testing), &mx[..1]).id
        );
    }
}
