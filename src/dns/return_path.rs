//! The DNS records of the apps' return-path domains (`herald dns` prints them, `herald check`
//! verifies them): an MX to herald's feedback listener, so bounces come back to herald, and an
//! SPF record, since receivers check SPF against the VERP MAIL FROM's domain.

use ipnet::IpNet;

use crate::config::Config;
use crate::dns::records::{DnsRecord, Purpose, normalize_name, split_txt};

/// The SPF value of a return-path domain: herald's include, or its addresses.
pub(crate) fn spf_value(cfg: &Config, addresses: &[IpNet]) -> String {
    crate::dns::records::domain_spf_value(cfg, addresses)
}

/// The return-path domains of the configuration, normalised, without repeats.
pub(crate) fn domains(cfg: &Config) -> Vec<String> {
    let mut all: Vec<String> = cfg
        .apps
        .values()
        .filter_map(|a| a.return_path_domain.as_deref())
        .map(normalize_name)
        .collect();
    all.sort();
    all.dedup();
    all
}

/// MX and SPF records of every return-path domain.
pub(crate) fn return_path_records(cfg: &Config, addresses: &[IpNet]) -> Vec<DnsRecord> {
    let host = normalize_name(&cfg.server.hostname);
    let zone = |d: &str| psl::domain_str(d).unwrap_or(d).to_string();
    let mut out = Vec::new();
    for d in domains(cfg) {
        let mx = format!("10 {host}.");
        out.push(DnsRecord {
            zone: zone(&d),
            name: d.clone(),
            rtype: "MX",
            ttl: 3600,
            value: mx.clone(),
            strings: vec![mx],
            purpose: Purpose::ReturnPath,
            active: None,
            note: format!(
                "herald's return path: bounces to b-…@{d} come back to herald's feedback \
                 listener at {host} (port 25; [feedback] listen)"
            ),
        });
        let spf = spf_value(cfg, addresses);
        out.push(DnsRecord {
            zone: zone(&d),
            name: d.clone(),
            rtype: "TXT",
            ttl: 3600,
            strings: split_txt(&spf),
            value: spf,
            purpose: Purpose::ReturnPath,
            active: None,
            note: format!(
                "SPF of the return path: receivers check herald's addresses against the MAIL \
                 FROM domain {d} (relaxed DMARC alignment with its parent domain holds)"
            ),
        });
    }
    out
}
