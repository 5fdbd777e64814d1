//! `herald check` for the return-path domains (issue 24) under the checked domain: an MX to
//! herald (bounces come back to its feedback listener) and an SPF record (receivers check it
//! against the VERP MAIL FROM).

use hickory_resolver::proto::rr::RecordType;

use super::lookup::Answer;
use super::spf::is_spf;
use super::{Ctx, Finding, Status};
use crate::dns::records::normalize_name;

/// Checks every return-path domain whose organizational domain is the checked domain's.
pub(super) async fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let org = |d: &str| psl::domain_str(d).unwrap_or(d).to_string();
    let mine = org(&ctx.domain);
    let host = normalize_name(&ctx.cfg.server.hostname);
    for d in crate::dns::return_path::domains(ctx.cfg)
        .into_iter()
        .filter(|d| org(d) == mine)
    {
        match mx_hosts(ctx, &d).await {
            Err(e) => out.push(Finding::new("return_path.mx", Status::Error, e.to_string())),
            Ok(hosts) if hosts.contains(&host) => out.push(Finding::new(
                "return_path.mx",
                Status::Pass,
                format!("{d} MX points at herald ({host}): bounces come back to it"),
            )),
            Ok(hosts) => out.push(
                Finding::new(
                    "return_path.mx",
                    Status::Fail,
                    format!(
                        "{d} (herald's return path) has MX {}; bounces will not reach herald",
                        if hosts.is_empty() {
                            "none".to_string()
                        } else {
                            hosts.join(", ")
                        }
                    ),
                )
                .fix(format!("publish {d}. MX 10 {host}.")),
            ),
        }
        let suggested = crate::dns::records::domain_spf_value(ctx.cfg, &ctx.addresses);
        match ctx.dns.txt(&d).await {
            Err(e) => out.push(Finding::new(
                "return_path.spf",
                Status::Error,
                e.to_string(),
            )),
            Ok(Answer::Found(txt)) if txt.iter().filter(|t| is_spf(t)).count() == 1 => {
                let spf = txt.iter().find(|t| is_spf(t)).cloned().unwrap_or_default();
                let reaches = ctx.include.is_empty()
                    || spf
                        .split_whitespace()
                        .any(|t| t.trim_start_matches(['+', '~', '?']) == format!("include:{}", ctx.include));
                if reaches {
                    out.push(Finding::new(
                        "return_path.spf",
                        Status::Pass,
                        format!("{d} has an SPF record: \"{spf}\""),
                    ));
                } else {
                    out.push(
                        Finding::new(
                            "return_path.spf",
                            Status::Fail,
                            format!("{d}'s SPF record does not include herald's {}: \"{spf}\"", ctx.include),
                        )
                        .fix(format!("publish {d}. TXT \"{suggested}\"")),
                    );
                }
            }
            Ok(_) => out.push(
                Finding::new(
                    "return_path.spf",
                    Status::Fail,
                    format!("{d} (herald's return path) has no single SPF record; SPF fails for its VERP MAIL FROM"),
                )
                .fix(format!("publish {d}. TXT \"{suggested}\"")),
            ),
        }
    }
}

/// The MX host names of `domain`, normalised (empty when it has none).
async fn mx_hosts(ctx: &Ctx<'_>, domain: &str) -> Result<Vec<String>, MxError> {
    let name = hickory_resolver::proto::rr::Name::from_ascii(format!("{domain}."))
        .map_err(|e| MxError::BadName(domain.to_string(), e.to_string()))?;
    match ctx.auth.resolver().lookup(name, RecordType::MX).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::MX(mx) => {
                    Some(normalize_name(&mx.exchange.to_ascii()))
                }
                _ => None,
            })
            .collect()),
        Err(_) if ctx.dns.count(domain, RecordType::MX).await.is_ok() => Ok(Vec::new()),
        Err(e) => Err(MxError::NoAnswer(domain.to_string(), e.to_string())),
    }
}

/// Why the return-path domain's MX could not be read.
#[derive(Debug, thiserror::Error)]
enum MxError {
    #[error("{0:?} is not a valid DNS name: {1}")]
    BadName(String, String),
    #[error("no answer for MX {0}: {1}")]
    NoAnswer(String, String),
}
