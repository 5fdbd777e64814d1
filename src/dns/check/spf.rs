//! SPF checks: exactly one record, herald's include reached, RFC 7208 limits (10 DNS-querying
//! terms counted through includes and redirects, 2 void look-ups), a strict ending, and a real
//! evaluation with mail-auth's verifier for each of herald's addresses.

use std::sync::Arc;

use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::spf::{Mechanism, Qualifier, Spf};

use super::spf_walk::{Walk, literal};
use super::{Ctx, Finding, Status};

/// RFC 7208 §4.6.4: DNS-querying mechanisms and modifiers allowed in one evaluation.
const MAX_LOOKUPS: u32 = 10;
/// RFC 7208 §4.6.4: void look-ups allowed.
const MAX_VOID: usize = 2;

/// Whether a TXT record is an SPF record (`v=spf1` alone or followed by a space).
pub(super) fn is_spf(txt: &str) -> bool {
    let t = txt.trim_start().as_bytes();
    t.len() >= 6 && t[..6].eq_ignore_ascii_case(b"v=spf1") && t.get(6).is_none_or(|b| *b == b' ')
}

pub(super) async fn check(ctx: &Ctx<'_>, apex: &[String], out: &mut Vec<Finding>) {
    let spf: Vec<&String> = apex.iter().filter(|t| is_spf(t)).collect();
    let suggested = crate::dns::records::domain_spf_value(ctx.cfg, &ctx.addresses);
    let record = match spf.as_slice() {
        [] => {
            out.push(
                Finding::new(
                    "spf.record",
                    Status::Fail,
                    format!(
                        "{} has no SPF record (no TXT record starting with v=spf1)",
                        ctx.domain
                    ),
                )
                .fix(format!("publish {}. TXT \"{suggested}\"", ctx.domain)),
            );
            return;
        }
        [one] => one.as_str(),
        many => {
            out.push(
                Finding::new(
                    "spf.record",
                    Status::Fail,
                    format!(
                        "{} has {} SPF records; receivers treat this as a permanent error and \
                         SPF fails for all mail: {}",
                        ctx.domain,
                        many.len(),
                        many.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ")
                    ),
                )
                .fix("merge them into one v=spf1 record that keeps every mechanism once and ends with a single ~all or -all"),
            );
            return;
        }
    };
    out.push(Finding::new(
        "spf.record",
        Status::Pass,
        format!("one SPF record: \"{record}\""),
    ));
    let parsed = match Spf::parse(record.as_bytes()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            out.push(
                Finding::new(
                    "spf.syntax",
                    Status::Fail,
                    format!("the SPF record is malformed ({e}); receivers return permerror"),
                )
                .fix(format!(
                    "replace it with a valid record, e.g. \"{suggested}\""
                )),
            );
            return;
        }
    };

    let mut walk = Walk::new(ctx);
    walk.run(&ctx.domain, parsed.clone()).await;
    if let Some(e) = &walk.network {
        out.push(
            Finding::new(
                "spf.lookups",
                Status::Error,
                format!("could not follow the SPF record's look-ups: {e}"),
            )
            .fix("check that the resolver answers, then run again"),
        );
    } else {
        report_include(ctx, &walk, out);
        report_limits(&walk, out);
    }
    report_all(ctx, &walk, &parsed, out);
    evaluate(ctx, out).await;
}

fn report_include(ctx: &Ctx<'_>, walk: &Walk<'_>, out: &mut Vec<Finding>) {
    if ctx.include.is_empty() {
        out.push(
            Finding::new(
                "spf.include",
                Status::Warn,
                "[spf] include is not set, so there is no include to look for",
            )
            .fix("set [spf] include and publish it (herald dns)"),
        );
        return;
    }
    let unpublished = matches!(walk.cache.get(&ctx.include), Some(None));
    match &walk.herald_via {
        Some(_) if unpublished => out.push(
            Finding::new(
                "spf.include",
                Status::Fail,
                format!(
                    "includes herald's include:{0}, but {0} has no valid SPF record, so the \
                     include fails for every receiver",
                    ctx.include
                ),
            )
            .fix(format!(
                "publish {}. TXT \"{}\" (herald dns), or delegate the name to herald's [dns_server] listener",
                ctx.include,
                crate::dns::records::include_value(ctx.cfg, &ctx.addresses)
            )),
        ),
        Some(chain) if chain.len() == 1 => out.push(Finding::new(
            "spf.include",
            Status::Pass,
            format!("includes herald's include:{}", ctx.include),
        )),
        Some(chain) => out.push(Finding::new(
            "spf.include",
            Status::Pass,
            format!(
                "includes herald's include:{} through {}",
                ctx.include,
                chain.join(" → ")
            ),
        )),
        None => out.push(
            Finding::new(
                "spf.include",
                Status::Fail,
                format!(
                    "does not include herald's include:{}, so mail herald sends for {} fails SPF",
                    ctx.include, ctx.domain
                ),
            )
            .fix(format!(
                "add include:{} to the existing record, before its all mechanism",
                ctx.include
            )),
        ),
    }
}

fn report_limits(walk: &Walk<'_>, out: &mut Vec<Finding>) {
    for problem in &walk.broken {
        out.push(
            Finding::new("spf.includes", Status::Fail, problem.clone())
                .fix("remove or correct the include/redirect; receivers return permerror"),
        );
    }
    for problem in &walk.mx_over {
        out.push(
            Finding::new(
                "spf.mx",
                Status::Fail,
                format!(
                    "{problem}; RFC 7208 §4.6.4 allows 10 per mx mechanism and receivers \
                     return permerror beyond that"
                ),
            )
            .fix("replace the mx mechanism by ip4:/ip6: ranges of the hosts that send mail"),
        );
    }
    let breakdown = walk
        .per_record
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(d, n)| format!("{d}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut extra = String::new();
    if walk.macros {
        extra.push_str("; terms with macros were expanded as for mail from herald and followed");
    }
    if walk.ptr {
        extra.push_str("; ptr is used: it is slow and deprecated (RFC 7208 §5.5), replace it");
    }
    let breakdown = if breakdown.is_empty() {
        String::new()
    } else {
        format!(" ({breakdown})")
    };
    if walk.lookups <= MAX_LOOKUPS {
        out.push(Finding::new(
            "spf.lookups",
            if walk.ptr { Status::Warn } else { Status::Pass },
            format!(
                "{} DNS {} of the {MAX_LOOKUPS} allowed{breakdown}{extra}",
                walk.lookups,
                plural(walk.lookups as usize, "look-up", "look-ups")
            ),
        ));
    } else {
        out.push(
            Finding::new(
                "spf.lookups",
                Status::Fail,
                format!(
                    "{} DNS look-ups, more than the {MAX_LOOKUPS} RFC 7208 allows; receivers \
                     return permerror and SPF fails{breakdown}{extra}",
                    walk.lookups
                ),
            )
            .fix("remove includes of services you no longer use, or replace a, mx and nested includes by ip4:/ip6: ranges"),
        );
    }
    if walk.void.len() <= MAX_VOID {
        out.push(Finding::new(
            "spf.void",
            Status::Pass,
            format!(
                "{} void {} of the {MAX_VOID} allowed{}",
                walk.void.len(),
                plural(walk.void.len(), "look-up", "look-ups"),
                if walk.void.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", walk.void.join(", "))
                }
            ),
        ));
    } else {
        out.push(
            Finding::new(
                "spf.void",
                Status::Fail,
                format!(
                    "{} void look-ups (names with no record), more than the {MAX_VOID} RFC 7208 \
                     allows; receivers return permerror: {}",
                    walk.void.len(),
                    walk.void.join(", ")
                ),
            )
            .fix("remove the mechanisms that point at names which do not exist or have no record"),
        );
    }
}

/// The final `all` of the record, following a redirect when the record has no `all`.
fn report_all(ctx: &Ctx<'_>, walk: &Walk<'_>, record: &Spf, out: &mut Vec<Finding>) {
    let mut current = record;
    let mut via = String::new();
    for _ in 0..10 {
        if let Some(pos) = current
            .directives
            .iter()
            .position(|d| d.mechanism == Mechanism::All)
        {
            let q = &current.directives[pos].qualifier;
            let text = match q {
                Qualifier::Fail => "-all",
                Qualifier::SoftFail => "~all",
                Qualifier::Neutral => "?all",
                Qualifier::Pass => "+all",
            };
            let mut f = match q {
                Qualifier::Fail | Qualifier::SoftFail => {
                    Finding::new("spf.all", Status::Pass, format!("ends with {text}{via}"))
                }
                Qualifier::Neutral => Finding::new(
                    "spf.all",
                    Status::Fail,
                    format!("ends with ?all{via}: mail from anywhere is neutral, not rejected"),
                )
                .fix("end the record with ~all (or -all once every sender is listed)"),
                Qualifier::Pass => Finding::new(
                    "spf.all",
                    Status::Fail,
                    format!("ends with +all{via}: anyone may send as {}", ctx.domain),
                )
                .fix("end the record with ~all (or -all once every sender is listed)"),
            };
            if pos + 1 < current.directives.len() && f.status == Status::Pass {
                f = Finding::new(
                    "spf.all",
                    Status::Warn,
                    format!("{text}{via} is followed by mechanisms that are never evaluated"),
                )
                .fix(format!("move {text} to the end of the record"));
            }
            out.push(f);
            return;
        }
        let Some(target) = current
            .redirect
            .as_ref()
            .and_then(|m| literal(m, &ctx.domain))
        else {
            break;
        };
        match walk.cache.get(&target) {
            Some(Some(next)) => {
                via = format!(" (via redirect={target})");
                current = next;
            }
            _ => break,
        }
    }
    out.push(
        Finding::new(
            "spf.all",
            Status::Fail,
            format!("the SPF record has no all mechanism{via}: mail from other hosts is neutral"),
        )
        .fix("end the record with ~all (or -all once every sender is listed)"),
    );
}

/// Evaluates the live record with mail-auth for each of herald's addresses.
async fn evaluate(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if ctx.addresses.is_empty() {
        out.push(
            Finding::new(
                "spf.eval",
                Status::Fail,
                "herald has no egress address to evaluate (none configured, none found on this host)",
            )
            .fix("set [spf] addresses"),
        );
        return;
    }
    let sender = format!("herald-check@{}", ctx.domain);
    let helo = ctx.cfg.server.hostname.as_str();
    for net in &ctx.addresses {
        let ip = net.addr();
        let output = ctx
            .auth
            .verify_spf(SpfParameters::verify_mail_from(ip, helo, helo, &sender))
            .await;
        let result = output.result();
        let f = match result {
            SpfResult::Pass => Finding::new(
                "spf.eval",
                Status::Pass,
                format!("mail from {ip} with a sender at {}: pass", ctx.domain),
            ),
            SpfResult::TempError => Finding::new(
                "spf.eval",
                Status::Error,
                format!("mail from {ip}: temperror (a DNS look-up failed during evaluation)"),
            )
            .fix("check that the resolver answers, then run again"),
            other => Finding::new(
                "spf.eval",
                Status::Fail,
                format!(
                    "mail from {ip} with a sender at {}: {} (receivers see SPF fail for herald's mail)",
                    ctx.domain,
                    result_name(other)
                ),
            )
            .fix(format!(
                "make sure {}'s SPF record includes include:{} and that the include lists {ip}",
                ctx.domain,
                if ctx.include.is_empty() { "…" } else { &ctx.include }
            )),
        };
        out.push(f);
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The RFC 7208 name of a result.
fn result_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none (no SPF record found)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_spf_records() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=x"));
        assert!(!is_spf("v=spf€ -all"));
        assert!(!is_spf("v=sp"));
    }
}
