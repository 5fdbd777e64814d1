//! DMARC checks (record, policy, reporting address, DKIM alignment of herald's signatures) and
//! the informational MTA-STS and TLS-RPT records.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Alignment, Dmarc, Policy, Psd};
use mail_auth::mta_sts::{MtaSts, TlsRpt};

use super::lookup::Answer;
use super::{Ctx, Finding, Status};
use crate::dns::records::dmarc_value;
use crate::signing::align::organizational_domain;

fn is_dmarc(txt: &str) -> bool {
    let t = txt.trim_start().as_bytes();
    t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"v=DMARC1")
}

/// The DMARC records at `_dmarc.<name>`; `Ok(None)` when there are none.
async fn fetch(
    ctx: &Ctx<'_>,
    name: &str,
) -> Result<Option<Vec<String>>, super::lookup::LookupFailure> {
    Ok(match ctx.dns.txt(&format!("_dmarc.{name}")).await? {
        Answer::Found(txts) => {
            let d: Vec<String> = txts.into_iter().filter(|t| is_dmarc(t)).collect();
            (!d.is_empty()).then_some(d)
        }
        _ => None,
    })
}

/// The DMARC checks; `enforcement` gets the policy in force, for BIMI.
pub(super) async fn check(
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
    enforcement: &mut Option<super::bimi::Enforcement>,
) {
    let suggested = format!(
        "publish _dmarc.{}. TXT \"{}\"",
        ctx.domain,
        dmarc_value(ctx.cfg)
    );
    let network = |e: super::lookup::LookupFailure| {
        Finding::new("dmarc.record", Status::Error, e.to_string())
            .fix("check that the resolver answers, then run again")
    };
    // DMARCbis: the organizational domain by the DNS tree walk; the PSL's answer beside it.
    let walk = match super::orgdomain::walk(ctx, &ctx.domain).await {
        Err(e) => return out.push(network(e)),
        Ok(w) => w,
    };
    out.push(orgdomain_finding(ctx, &walk));
    let (records, from_org) = match fetch(ctx, &ctx.domain).await {
        Err(e) => return out.push(network(e)),
        Ok(Some(r)) => (r, None),
        // No record of its own: the organizational domain's applies, else the public suffix
        // domain's (RFC 9989 §4.10.1), as the walk found them.
        Ok(None) => match walk.at(&walk.org).or(walk.found.last()) {
            Some(f) => (vec![f.text.clone()], Some(f.name.clone())),
            None => (Vec::new(), None),
        },
    };
    let record = match records.as_slice() {
        [] => {
            out.push(
                Finding::new(
                    "dmarc.record",
                    Status::Fail,
                    format!("no DMARC record at _dmarc.{}", ctx.domain),
                )
                .fix(format!(
                    "{suggested}, then move to p=quarantine and p=reject once reports show every legitimate source passing"
                )),
            );
            return;
        }
        [one] => one,
        many => {
            out.push(
                Finding::new(
                    "dmarc.record",
                    Status::Fail,
                    format!(
                        "{} DMARC records; receivers ignore DMARC when there is more than one",
                        many.len()
                    ),
                )
                .fix("keep a single v=DMARC1 record"),
            );
            return;
        }
    };
    let where_ = match &from_org {
        Some(org) => format!(
            "_dmarc.{org} (the organizational domain's record applies, found by the DNS tree walk)"
        ),
        None => format!("_dmarc.{}", ctx.domain),
    };
    let from_org = from_org.is_some();
    let dmarc = match Dmarc::parse(record.as_bytes()) {
        Ok(d) => d,
        Err(e) => {
            out.push(
                Finding::new(
                    "dmarc.record",
                    Status::Fail,
                    format!("the DMARC record at {where_} is malformed ({e}): \"{record}\""),
                )
                .fix(suggested),
            );
            return;
        }
    };
    out.push(Finding::new(
        "dmarc.record",
        Status::Pass,
        format!("{where_}: \"{record}\""),
    ));
    let policy = if from_org && dmarc.sp != Policy::Unspecified {
        dmarc.sp
    } else {
        dmarc.p
    };
    out.push(match policy {
        Policy::Reject => Finding::new("dmarc.policy", Status::Pass, "p=reject: unauthenticated mail is rejected"),
        Policy::Quarantine => Finding::new(
            "dmarc.policy",
            Status::Pass,
            "p=quarantine: unauthenticated mail goes to spam",
        )
        .fix("once reports show every legitimate source passing, move to p=reject"),
        Policy::None => Finding::new(
            "dmarc.policy",
            Status::Warn,
            "p=none: receivers only report; mail forged as this domain is still delivered",
        )
        .fix("read the aggregate reports; once every legitimate source passes, move to p=quarantine, then to p=reject"),
        Policy::Unspecified => Finding::new("dmarc.policy", Status::Fail, "the record has no valid p= policy")
            .fix(suggested.clone()),
    });
    out.push(if dmarc.rua.is_empty() {
        Finding::new(
            "dmarc.rua",
            Status::Warn,
            "no rua=: you receive no aggregate reports, so you cannot tell when a stricter policy is safe",
        )
        .fix("add rua=mailto:<address> to the record ([spf] dmarc_rua in herald's config)")
    } else {
        Finding::new(
            "dmarc.rua",
            Status::Pass,
            format!(
                "aggregate reports go to {}",
                dmarc.rua.iter().map(|u| u.uri()).collect::<Vec<_>>().join(", ")
            ),
        )
    });
    let pct = super::orgdomain::legacy_pct(record);
    *enforcement = Some(super::bimi::Enforcement {
        enforced: matches!(policy, Policy::Quarantine | Policy::Reject)
            && !dmarc.t
            && pct.as_deref().is_none_or(|p| p == "100"),
        described: format!(
            "now p={}{}{}",
            policy_name(policy),
            if dmarc.t { ", t=y" } else { "" },
            pct.map(|p| format!(", pct={p}")).unwrap_or_default()
        ),
    });
    dmarcbis_tags(record, &dmarc, out);
    out.push(alignment(ctx, dmarc.adkim, &walk).await);
    let rua: Vec<String> = dmarc.rua.iter().map(|u| u.uri().to_string()).collect();
    super::reports::check(ctx, &rua, out).await;
}

/// The organizational domain by the tree walk, and whether the Public Suffix List agrees.
fn orgdomain_finding(ctx: &Ctx<'_>, walk: &super::orgdomain::Walk) -> Finding {
    let psl = organizational_domain(&ctx.domain);
    if walk.org == psl {
        return Finding::new(
            "dmarc.orgdomain",
            Status::Info,
            format!(
                "organizational domain {} (DNS tree walk, RFC 9989; the Public Suffix List agrees)",
                walk.org
            ),
        );
    }
    let why = if walk.found.is_empty() {
        "no DMARC record was found on the way up".to_string()
    } else {
        let names: Vec<&str> = walk.found.iter().map(|f| f.name.as_str()).collect();
        format!("DMARC records found at {}", names.join(", "))
    };
    Finding::new(
        "dmarc.orgdomain",
        Status::Warn,
        format!(
            "the DNS tree walk (RFC 9989) gives {} as the organizational domain of {} ({why}), \
             the Public Suffix List gives {psl}: receivers following DMARCbis use {} for relaxed \
             alignment and the fallback policy, herald's signer chooses keys by the list",
            walk.org, ctx.domain, walk.org
        ),
    )
    .fix(format!(
        "to make both agree, publish the DMARC record at _dmarc.{psl} (or add psd=n to the record \
         at the domain that is your organization)"
    ))
}

/// DMARCbis tags: `t=y` (testing), `np=`, `psd=`, and the legacy `pct=`.
fn dmarcbis_tags(record: &str, dmarc: &Dmarc, out: &mut Vec<Finding>) {
    if dmarc.t {
        out.push(
            Finding::new(
                "dmarc.testing",
                Status::Warn,
                "t=y (testing mode, RFC 9989): receivers apply the policy one step lower \
                 (reject as quarantine, quarantine as none)",
            )
            .fix("remove t=y once the aggregate reports show every legitimate source passing"),
        );
    }
    let has = |tag: &str| {
        record.split(';').any(|t| {
            t.split_once('=')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(tag))
        })
    };
    if has("np") {
        out.push(Finding::new(
            "dmarc.np",
            Status::Info,
            format!(
                "np={}: the policy for mail from subdomains that do not exist",
                policy_name(dmarc.np)
            ),
        ));
    }
    if has("psd") {
        let what = match dmarc.psd {
            Psd::Yes => "psd=y: this name is a public suffix domain (its own mail is unusual)",
            Psd::No => "psd=n: this name is an organizational domain; the tree walk stops here",
            Psd::Default => "psd=u: no statement",
        };
        out.push(Finding::new("dmarc.psd", Status::Info, what));
    }
    match super::orgdomain::legacy_pct(record).as_deref() {
        None => {}
        Some("100") => out.push(Finding::new(
            "dmarc.pct",
            Status::Info,
            "pct=100 is legacy (RFC 9989 removed pct) and has no effect",
        )),
        Some(pct) => out.push(
            Finding::new(
                "dmarc.pct",
                Status::Warn,
                format!(
                    "pct={pct} is legacy: RFC 9989 removed it, so receivers following DMARCbis \
                     apply the policy to all mail, not {pct}%"
                ),
            )
            .fix("remove pct= (use t=y while testing a stricter policy)"),
        ),
    }
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => "unspecified",
    }
}

/// Whether herald's DKIM signatures for this domain would align under `adkim`; relaxed
/// alignment compares organizational domains found by the DNS tree walk (DMARCbis).
async fn alignment(ctx: &Ctx<'_>, adkim: Alignment, walk: &super::orgdomain::Walk) -> Finding {
    let mode = match adkim {
        Alignment::Strict => "strict",
        Alignment::Relaxed => "relaxed",
    };
    // Not yet active keys are judged as the signer will use them once activated.
    let pending = ctx.signing_domain.is_none();
    let Some(d) = ctx
        .signing_domain
        .as_deref()
        .or(ctx.pending_domain.as_deref())
    else {
        return Finding::new(
            "dmarc.alignment",
            Status::Fail,
            format!(
                "herald has no active DKIM key for {}, so no signature can align",
                ctx.domain
            ),
        )
        .fix(format!(
            "run `herald dkim generate --domain {}`",
            ctx.domain
        ));
    };
    // The signing domain is the domain itself or a parent up to the organizational domain,
    // so it always aligns in relaxed mode; strict mode needs the exact domain.
    let d_org = if d == ctx.domain {
        walk.org.clone()
    } else {
        match super::orgdomain::walk(ctx, d).await {
            Ok(w) => w.org,
            Err(e) => {
                return Finding::new("dmarc.alignment", Status::Error, e.to_string())
                    .fix("check that the resolver answers, then run again");
            }
        }
    };
    let aligned = match adkim {
        Alignment::Strict => d == ctx.domain,
        Alignment::Relaxed => d_org == walk.org,
    };
    if adkim == Alignment::Relaxed && !aligned {
        return Finding::new(
            "dmarc.alignment",
            Status::Fail,
            format!(
                "herald signs with d={d} (a parent by the Public Suffix List), but the DNS tree \
                 walk (RFC 9989) puts {} in organization {} and {d} in {d_org}: receivers \
                 following DMARCbis see no aligned signature",
                ctx.domain, walk.org
            ),
        )
        .fix(format!(
            "add a DKIM key with domain = \"{}\" (herald dkim generate --domain {}), or publish \
             a DMARC record at _dmarc.{d} so the walk finds {d} as the organizational domain",
            ctx.domain, ctx.domain
        ));
    }
    let signs = if pending {
        "once its key is activated, herald signs"
    } else {
        "herald signs"
    };
    if aligned {
        Finding::new(
            "dmarc.alignment",
            Status::Pass,
            format!(
                "{signs} with d={d}, which aligns with {} ({mode} DKIM alignment)",
                ctx.domain
            ),
        )
    } else {
        Finding::new(
            "dmarc.alignment",
            Status::Fail,
            format!(
                "{signs} with d={d}, which does not align with {} under {mode} DKIM alignment (adkim=s)",
                ctx.domain
            ),
        )
        .fix(format!(
            "add a DKIM key with domain = \"{}\" (herald dkim generate --domain {}), or use adkim=r",
            ctx.domain, ctx.domain
        ))
    }
}

/// MTA-STS and TLS-RPT: reported for information; a malformed record is a warning.
pub(super) async fn informational(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let items: [(&str, String, &str, &str); 2] = [
        (
            "mta-sts.record",
            format!("_mta-sts.{}", ctx.domain),
            "v=STSv1",
            "optional: lets senders require TLS when delivering to your MX hosts",
        ),
        (
            "tls-rpt.record",
            format!("_smtp._tls.{}", ctx.domain),
            "v=TLSRPTv1",
            "optional: lets senders report TLS problems delivering to you (herald dns prints one when [report] own_rua is set)",
        ),
    ];
    for (id, name, version, why) in items {
        let f = match ctx.dns.txt(&name).await {
            Err(e) => Finding::new(id, Status::Error, e.to_string()),
            Ok(Answer::Found(txts)) => {
                match txts.iter().find(|t| {
                    t.trim_start()
                        .to_ascii_lowercase()
                        .starts_with(&version.to_ascii_lowercase())
                }) {
                    None => {
                        Finding::new(id, Status::Info, format!("not published at {name} ({why})"))
                    }
                    Some(t) => {
                        let ok = if id == "mta-sts.record" {
                            MtaSts::parse(t.as_bytes()).is_ok()
                        } else {
                            TlsRpt::parse(t.as_bytes()).is_ok()
                        };
                        if ok {
                            Finding::new(id, Status::Info, format!("{name}: \"{t}\""))
                        } else {
                            Finding::new(id, Status::Warn, format!("{name} is malformed: \"{t}\""))
                                .fix(format!("correct the {version} record or remove it"))
                        }
                    }
                }
            }
            Ok(_) => Finding::new(id, Status::Info, format!("not published at {name} ({why})")),
        };
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_dmarc_records_without_panicking_on_any_text() {
        assert!(is_dmarc("v=DMARC1; p=none"));
        assert!(!is_dmarc("v=DMAR€1; p=none"));
        assert!(!is_dmarc("v=DM"));
    }
}
