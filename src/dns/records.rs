//! The DNS records an operator publishes for herald: the SPF include, and per signing domain
//! the DKIM keys, the SPF record, a starting DMARC record and the TLS-RPT record.
//!
//! One builder ([`build`]) feeds three outputs so they never disagree: `herald dns` (zone-file
//! text or JSON), the admin endpoint's `/dns` ([`render_json`]) and the authoritative listener
//! ([`served_names`]).

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::Config;
use crate::signing::PublishedKey;
use crate::signing::align::organizational_domain;

/// TTL suggested for every record (one hour: short enough to fix mistakes quickly).
pub(crate) const DEFAULT_TTL: u32 = 3600;

/// Size above which an SPF record risks answers too large for UDP (RFC 7208 §3.4).
pub(crate) const SPF_SIZE_ADVICE: usize = 450;

/// Longest character-string in a TXT record (RFC 1035 §3.3).
pub(crate) const TXT_STRING_MAX: usize = 255;

/// What a record is for; lets tools and the listener pick records without parsing comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Purpose {
    /// Herald's own SPF include (`_spf.relay.example.net`).
    SpfInclude,
    /// A DKIM public key at `<selector>._domainkey.<domain>`.
    Dkim,
    /// The SPF record a signing domain carries.
    Spf,
    /// The starting DMARC record at `_dmarc.<domain>`.
    Dmarc,
    /// The TLS-RPT record at `_smtp._tls.<domain>`.
    TlsRpt,
    /// The MX of the feedback domain, pointing at herald's report listener.
    ReportMx,
    /// RFC 7489 §7.1: the report domain agrees to receive a domain's DMARC reports.
    ReportAuthorization,
    /// The MTA-STS announcement at `_mta-sts.<domain>` (policy hosted by herald's `[web]`).
    MtaSts,
    /// `mta-sts.<domain>`, the policy host, pointing at herald.
    MtaStsHost,
    /// The BIMI record at `<selector>._bimi.<domain>` (`[bimi]`).
    Bimi,
    /// An app's return-path domain (issue 24): its MX to herald's feedback listener, and its
    /// SPF record (the VERP MAIL FROM is checked against it).
    ReturnPath,
}

/// One TXT record to publish.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DnsRecord {
    /// The zone the record most likely belongs in (the signing domain, or the include's
    /// parent), used to group the output.
    pub zone: String,
    /// Fully qualified owner name, without the trailing dot.
    pub name: String,
    /// Always `TXT` today; kept explicit for JSON consumers.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// Suggested TTL in seconds.
    pub ttl: u32,
    /// The record's text as resolvers concatenate it.
    pub value: String,
    /// The value split into ≤255-byte character-strings, as it goes on the wire.
    pub strings: Vec<String>,
    /// What the record is for.
    pub purpose: Purpose,
    /// For DKIM records: whether herald signs with the key now (false: retiring).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Advice for the operator (printed as a comment in zone output).
    pub note: String,
}

/// Every record to publish, with the warnings the operator must read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecordSet {
    /// The include name (`[spf] include`), empty when not configured.
    pub include: String,
    /// Herald's egress addresses listed in the include.
    pub addresses: Vec<IpNet>,
    /// True when the addresses were read from the host's interfaces rather than configured.
    pub addresses_guessed: bool,
    /// The records, grouped by zone in output order.
    pub records: Vec<DnsRecord>,
    /// Problems the operator must look at before publishing.
    pub warnings: Vec<String>,
}

/// Herald's egress addresses: `[spf] addresses`, or the host's global addresses when none are
/// configured (second value true: they must be confirmed by the operator).
pub(crate) fn egress_addresses(cfg: &Config) -> (Vec<IpNet>, bool) {
    if !cfg.spf.addresses.is_empty() {
        return (cfg.spf.addresses.clone(), false);
    }
    let found = super::host::global_addresses()
        .into_iter()
        .map(IpNet::from)
        .collect();
    (found, true)
}

/// The SPF mechanisms for a list of networks: `ip4:203.0.113.10 ip6:2001:db8::/64`.
pub(crate) fn ip_mechanisms(addresses: &[IpNet]) -> Vec<String> {
    addresses
        .iter()
        .map(|net| {
            let kind = match net {
                IpNet::V4(_) => "ip4",
                IpNet::V6(_) => "ip6",
            };
            if net.prefix_len() == net.max_prefix_len() {
                format!("{kind}:{}", net.addr())
            } else {
                format!("{kind}:{}", net.trunc())
            }
        })
        .collect()
}

/// The include record's value: `v=spf1 ip4:… ip6:… -all`.
pub(crate) fn include_value(cfg: &Config, addresses: &[IpNet]) -> String {
    let mut parts = vec!["v=spf1".to_string()];
    parts.extend(ip_mechanisms(addresses));
    parts.push(cfg.spf.qualifier.clone());
    parts.join(" ")
}

/// The SPF record a signing domain should carry.
pub(crate) fn domain_spf_value(cfg: &Config, addresses: &[IpNet]) -> String {
    if cfg.spf.include.is_empty() {
        let mut parts = vec!["v=spf1".to_string()];
        parts.extend(ip_mechanisms(addresses));
        parts.push("~all".into());
        parts.join(" ")
    } else {
        format!("v=spf1 include:{} ~all", normalize_name(&cfg.spf.include))
    }
}

/// A `mailto:` URI from a configured address that may or may not carry the scheme.
pub(crate) fn mailto(address: &str) -> String {
    let a = address.trim();
    if a.contains(':') {
        a.to_string()
    } else {
        format!("mailto:{a}")
    }
}

/// The address DMARC aggregate reports go to: herald's own `dmarc@<feedback.domain>` when
/// the feedback listener is configured, else `[spf] dmarc_rua` (without `mailto:`).
pub(crate) fn dmarc_rua_for(cfg: &Config) -> Option<String> {
    if let Some(own) = cfg.feedback.dmarc_address() {
        return Some(own);
    }
    cfg.spf
        .dmarc_rua
        .as_deref()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix("mailto:")
                .or_else(|| s.strip_prefix("MAILTO:"))
                .unwrap_or(s)
                .to_string()
        })
}

/// The starting DMARC record: `p=none` with reports to [`dmarc_rua_for`].
pub(crate) fn dmarc_value(cfg: &Config) -> String {
    match dmarc_rua_for(cfg) {
        Some(rua) => format!("v=DMARC1; p=none; rua={}", mailto(&rua)),
        None => "v=DMARC1; p=none".into(),
    }
}

/// The RFC 7489 §7.1 authorization record a report address outside `domain`'s organization
/// needs (`<domain>._report._dmarc.<report domain>`), as `(zone, name)`; `None` when the
/// report address is inside the domain's organization and receivers need no authorization.
pub(crate) fn report_authorization(domain: &str, rua: &str) -> Option<(String, String)> {
    let rua_domain = normalize_name(rua.rsplit_once('@').map(|(_, d)| d).unwrap_or(rua));
    let domain = normalize_name(domain);
    if rua_domain.is_empty() || organizational_domain(&rua_domain) == organizational_domain(&domain)
    {
        return None;
    }
    Some((
        organizational_domain(&rua_domain).to_string(),
        format!("{domain}._report._dmarc.{rua_domain}"),
    ))
}

/// Splits a TXT value into character-strings of at most 255 bytes, never inside a UTF-8
/// character.
pub(crate) fn split_txt(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in value.chars() {
        if current.len() + ch.len_utf8() > TXT_STRING_MAX {
            out.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// Lower-cases a DNS name and drops a trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The zone a name most likely lives in: its parent (the include `_spf.relay.example.net`
/// goes in `relay.example.net`).
fn parent_zone(name: &str) -> String {
    match name.split_once('.') {
        Some((_, parent)) if parent.contains('.') => parent.to_string(),
        _ => name.to_string(),
    }
}

/// Every signing domain: configured keys and keys the signer reports, sorted.
fn signing_domains(cfg: &Config, keys: &[PublishedKey]) -> BTreeSet<String> {
    cfg.dkim
        .keys
        .iter()
        .map(|k| normalize_name(&k.domain))
        .chain(keys.iter().map(|k| normalize_name(&k.domain)))
        .collect()
}

fn txt(zone: &str, name: String, value: String, purpose: Purpose, note: String) -> DnsRecord {
    DnsRecord {
        zone: zone.to_string(),
        name,
        rtype: "TXT",
        ttl: DEFAULT_TTL,
        strings: split_txt(&value),
        value,
        purpose,
        active: None,
        note,
    }
}

/// A warning when herald's own mail (bounces, delay notices, from `cfg.dsn_domain()`) would go
/// out unsigned because no active key aligns with that domain; `None` when it is signed.
pub(crate) fn unsigned_bounce_warning(cfg: &Config, keys: &[PublishedKey]) -> Option<String> {
    let domain = cfg.dsn_domain();
    let signed = crate::signing::align::candidates(&domain)
        .into_iter()
        .any(|d| {
            keys.iter()
                .any(|k| k.active && normalize_name(&k.domain) == d)
        });
    let waiting = crate::signing::align::candidates(&domain)
        .into_iter()
        .find_map(|d| keys.iter().find(|k| normalize_name(&k.domain) == d));
    (!signed).then(|| {
        let fix = match waiting {
            Some(k) => format!(
                "its key {} is not active yet: once DNS serves it, run `herald dkim activate {} \
                 {}`",
                k.selector,
                normalize_name(&k.domain),
                k.selector
            ),
            None => format!(
                "run `herald dkim generate --domain {domain}`, publish it and `herald dkim \
                 activate` it"
            ),
        };
        format!(
            "bounces and delay notices come from MAILER-DAEMON@{domain} (the domain of [server] \
             hostname, or [delivery] dsn_domain) and no active DKIM key aligns with {domain}: \
             they go out unsigned and DMARC-strict receivers may reject them; {fix}"
        )
    })
}

/// Builds every record to publish; `only_domain` keeps the include and that domain's records.
pub(crate) fn build(cfg: &Config, keys: &[PublishedKey], only_domain: Option<&str>) -> RecordSet {
    let (addresses, guessed) = egress_addresses(cfg);
    let include = normalize_name(&cfg.spf.include);
    let mut warnings = Vec::new();
    if guessed {
        if addresses.is_empty() {
            warnings.push(
                "[spf] addresses is empty and this host has no global address: the SPF \
                 records below authorize nothing; set [spf] addresses to herald's public \
                 egress addresses"
                    .into(),
            );
        } else {
            warnings.push(format!(
                "[spf] addresses is empty, so these addresses were read from this host's \
                 interfaces: {}; confirm they are the addresses herald's mail leaves from \
                 (NAT changes them) and set [spf] addresses",
                ip_mechanisms(&addresses).join(" ")
            ));
        }
    }
    if let Some(w) = unsigned_bounce_warning(cfg, keys) {
        warnings.push(w);
    }
    let mut records = Vec::new();
    if include.is_empty() {
        warnings.push(
            "[spf] include is not set: each domain's SPF record lists herald's addresses \
             directly; set it (e.g. _spf.relay.example.net) so every domain references one \
             include that follows herald's addresses"
                .into(),
        );
    } else {
        let value = include_value(cfg, &addresses);
        if value.len() > SPF_SIZE_ADVICE {
            warnings.push(format!(
                "the include record is {} bytes: answers that large need TCP at some receivers \
                 (RFC 7208 §3.4 advises under {SPF_SIZE_ADVICE}); list CIDR ranges instead of \
                 single addresses",
                value.len()
            ));
        }
        records.push(txt(
            &parent_zone(&include),
            include.clone(),
            value,
            Purpose::SpfInclude,
            format!(
                "herald's SPF include: the addresses herald sends from. Every domain \
                 references it with include:{include}. To let herald serve it, delegate \
                 {include} with an NS record to herald's [dns_server] listener instead."
            ),
        ));
    }
    let rua = dmarc_rua_for(cfg);
    if let Some(fb) = cfg.feedback.dmarc_address() {
        let fb_domain = normalize_name(&cfg.feedback.domain);
        let host = normalize_name(&cfg.server.hostname);
        records.push(DnsRecord {
            zone: organizational_domain(&fb_domain).to_string(),
            name: fb_domain.clone(),
            rtype: "MX",
            ttl: DEFAULT_TTL,
            value: format!("10 {host}."),
            strings: vec![format!("10 {host}.")],
            purpose: Purpose::ReportMx,
            active: None,
            note: format!(
                "the report domain: receivers deliver DMARC reports for {fb} to herald's \
                 feedback listener at {host} (port 25; [feedback] listen)"
            ),
        });
    }
    records.extend(super::return_path::return_path_records(cfg, &addresses));
    if rua.is_none() {
        warnings.push(
            "[spf] dmarc_rua is not set: the DMARC records carry no rua= and you will receive \
             no aggregate reports to tell when p=quarantine is safe"
                .into(),
        );
    }
    let wanted = only_domain.map(normalize_name);
    let domains = signing_domains(cfg, keys);
    if let Some(w) = &wanted
        && !domains.contains(w)
    {
        warnings.push(format!(
            "{w} is not a signing domain: no [[dkim.keys]] entry has domain = \"{w}\""
        ));
    }
    for domain in domains
        .iter()
        .filter(|d| wanted.as_ref().is_none_or(|w| w == *d))
    {
        let mut domain_keys: Vec<&PublishedKey> = keys
            .iter()
            .filter(|k| normalize_name(&k.domain) == *domain)
            .collect();
        domain_keys.sort_by(|a, b| b.active.cmp(&a.active).then(a.selector.cmp(&b.selector)));
        if domain_keys.is_empty() {
            warnings.push(format!(
                "{domain}: no DKIM key could be loaded; run `herald dkim generate --domain \
                 {domain}` and check [[dkim.keys]]"
            ));
        }
        let domain_keys_active = domain_keys.iter().any(|k| k.active);
        for key in domain_keys {
            let note = if key.active {
                format!(
                    "DKIM key {} ({} {} bits), active: herald signs {domain} mail with it",
                    key.selector,
                    key.algorithm.as_str(),
                    key.bits
                )
            } else if !domain_keys_active {
                format!(
                    "DKIM key {} ({} {} bits), not active yet: publish this record, then run \
                     `herald dkim activate {domain} {}` once DNS serves it",
                    key.selector,
                    key.algorithm.as_str(),
                    key.bits,
                    key.selector
                )
            } else {
                format!(
                    "DKIM key {} ({} {} bits), not signing (active = false): a new key is \
                     switched on with `herald dkim activate {domain} {}` once DNS serves this \
                     record; a retired one stays published a few days, then is removed",
                    key.selector,
                    key.algorithm.as_str(),
                    key.bits,
                    key.selector
                )
            };
            let mut rec = txt(
                domain,
                format!("{}._domainkey.{domain}", key.selector.to_ascii_lowercase()),
                key.txt.clone(),
                Purpose::Dkim,
                note,
            );
            rec.active = Some(key.active);
            records.push(rec);
        }
        records.push(txt(
            domain,
            domain.clone(),
            domain_spf_value(cfg, &addresses),
            Purpose::Spf,
            format!(
                "SPF for {domain}. If {domain} already has a TXT record starting with v=spf1, \
                 add include:{} to it instead (before its all): two SPF records make every \
                 SPF check fail",
                if include.is_empty() { "…" } else { &include }
            ),
        ));
        records.push(txt(
            domain,
            format!("_dmarc.{domain}"),
            dmarc_value(cfg),
            Purpose::Dmarc,
            "starting DMARC policy: p=none only reports. Read the aggregate reports; once \
             every legitimate source passes, move to p=quarantine, then to p=reject"
                .into(),
        ));
        if let Some(b) = cfg.bimi.get(domain.as_str()) {
            records.push(txt(
                domain,
                format!("{}._bimi.{domain}", b.selector),
                b.record_value(),
                Purpose::Bimi,
                "BIMI: the logo receivers show beside your mail once DMARC is at quarantine or \
                 reject (run `herald check` to see whether it qualifies)"
                    .into(),
            ));
        }
        if let Some(rua) = cfg
            .report
            .own_rua
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            records.push(txt(
                domain,
                format!("_smtp._tls.{domain}"),
                format!("v=TLSRPTv1; rua={}", mailto(rua)),
                Purpose::TlsRpt,
                "TLS-RPT: where receiving servers send reports about TLS to your domain".into(),
            ));
        }
        if let Some((zone, name)) = rua.as_deref().and_then(|r| report_authorization(domain, r)) {
            records.push(txt(
                &zone,
                name,
                "v=DMARC1".into(),
                Purpose::ReportAuthorization,
                format!(
                    "RFC 7489 §7.1: {zone} agrees to receive the DMARC reports of {domain}; \
                     without it receivers send {domain}'s reports nowhere"
                ),
            ));
        }
    }
    RecordSet {
        include,
        addresses,
        addresses_guessed: guessed,
        records,
        warnings,
    }
}

/// The same records as JSON, for `herald dns --format json` and the admin endpoint's `/dns`.
pub(crate) fn render_json(cfg: &Config, keys: &[PublishedKey]) -> serde_json::Value {
    set_to_json(&build(cfg, keys, None))
}

/// A built record set as JSON.
pub(crate) fn set_to_json(set: &RecordSet) -> serde_json::Value {
    serde_json::to_value(set).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// The names herald's authoritative listener answers and their TXT character-strings: the
/// include, and every DKIM selector (answered when the operator delegates it).
pub(crate) fn served_names(cfg: &Config, keys: &[PublishedKey]) -> Vec<(String, Vec<String>)> {
    build(cfg, keys, None)
        .records
        .into_iter()
        .filter(|r| matches!(r.purpose, Purpose::SpfInclude | Purpose::Dkim))
        .map(|r| (r.name, r.strings))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_255_bytes() {
        let v = "a".repeat(600);
        let parts = split_txt(&v);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(parts.concat(), v);
        assert_eq!(split_txt(""), vec![String::new()]);
    }

    #[test]
    fn mechanisms_drop_host_prefix() {
        let nets: Vec<IpNet> = vec![
            "203.0.113.10/32".parse().unwrap(),
            "198.51.100.7/24".parse().unwrap(),
            "2001:db8::1/128".parse().unwrap(),
        ];
        assert_eq!(
            ip_mechanisms(&nets),
            ["ip4:203.0.113.10", "ip4:198.51.100.0/24", "ip6:2001:db8::1"]
        );
    }

    fn config(addresses: &[&str]) -> Config {
        let mut cfg: Config = serde_json::from_str("{}").unwrap();
        cfg.spf.include = "_spf.relay.example.net.".into();
        cfg.spf.addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        cfg
    }

    fn key(domain: &str, selector: &str, active: bool) -> PublishedKey {
        PublishedKey {
            domain: domain.into(),
            selector: selector.into(),
            algorithm: crate::config::DkimAlgorithm::Rsa,
            bits: 2048,
            txt: format!("v=DKIM1; k=rsa; p={}", "A".repeat(392)),
            active,
        }
    }

    #[test]
    fn builds_every_record_for_every_signing_domain() {
        let cfg = config(&["203.0.113.10/32"]);
        let keys = [
            key("example.com", "new", true),
            key("example.com", "old", false),
            key("example.org", "s", true),
        ];
        let set = build(&cfg, &keys, None);
        let names: Vec<&str> = set.records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "_spf.relay.example.net",
                "new._domainkey.example.com",
                "old._domainkey.example.com",
                "example.com",
                "_dmarc.example.com",
                "s._domainkey.example.org",
                "example.org",
                "_dmarc.example.org",
            ]
        );
        assert_eq!(set.records[0].value, "v=spf1 ip4:203.0.113.10 -all");
        assert_eq!(
            set.records[3].value,
            "v=spf1 include:_spf.relay.example.net ~all"
        );
        assert_eq!(set.records[4].value, "v=DMARC1; p=none");
        assert!(set.warnings.iter().any(|w| w.contains("dmarc_rua")));
        assert_eq!(set.records[2].active, Some(false));
        assert!(set.records[2].note.contains("not signing"));
        // A domain whose only key is not active yet: "activate", never "remove it".
        let pending = build(&cfg, &[key("example.net", "s1", false)], None);
        let note = &pending.records[1].note;
        assert!(
            note.contains("not active yet") && note.contains("herald dkim activate example.net s1"),
            "{note}"
        );
        let zone = crate::dns::zone::render(&set);
        assert!(
            zone.contains("new._domainkey.example.com. 3600 IN TXT (\n    \"v=DKIM1; k=rsa; p=AAA")
        );
        let only = build(&cfg, &keys, Some("Example.ORG."));
        assert_eq!(only.records.len(), 4);
        assert_eq!(
            served_names(&cfg, &keys).len(),
            4,
            "the include and three selectors"
        );
    }

    #[test]
    fn warns_about_a_large_include() {
        let many: Vec<String> = (1..=40).map(|i| format!("198.51.100.{i}/32")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let set = build(&config(&refs), &[], None);
        assert!(
            set.warnings.iter().any(|w| w.contains("CIDR")),
            "{:?}",
            set.warnings
        );
        assert!(set.records[0].strings.len() > 1);
    }
}
