//! `dmarc.reports`: will reports reach their destination, and do they arrive? Each `rua=`
//! address outside the domain's organization needs the RFC 7489 §7.1 record
//! `<domain>._report._dmarc.<report domain>` (receivers send nothing without it); reports sent
//! to herald's own feedback address must have arrived in the last 48 hours.

use super::lookup::Answer;
use super::{Ctx, Finding, Status};
use crate::dns::records::report_authorization;

/// How recent the last report must be.
const RECENT: i64 = 48 * 3600;

pub(super) async fn check(ctx: &Ctx<'_>, rua: &[String], out: &mut Vec<Finding>) {
    let mut missing = Vec::new();
    for address in rua {
        let Some((_, name)) = report_authorization(&ctx.domain, address) else {
            continue;
        };
        match ctx.dns.txt(&name).await {
            Ok(Answer::Found(txts))
                if txts
                    .iter()
                    .any(|t| t.trim_start().to_ascii_lowercase().starts_with("v=dmarc1")) => {}
            Ok(_) => missing.push(name),
            Err(e) => {
                return out.push(
                    Finding::new("dmarc.reports", Status::Error, e.to_string())
                        .fix("check that the resolver answers, then run again"),
                );
            }
        }
    }
    if !missing.is_empty() {
        return out.push(
            Finding::new(
                "dmarc.reports",
                Status::Fail,
                format!(
                    "the report address is outside {} and its domain has not agreed to receive \
                     its reports (RFC 7489 §7.1): receivers send no reports at all",
                    ctx.domain
                ),
            )
            .fix(
                missing
                    .iter()
                    .map(|n| format!("publish {n}. TXT \"v=DMARC1\""))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        );
    }
    let own = ctx.cfg.feedback.dmarc_address();
    let to_herald = own
        .as_ref()
        .is_some_and(|o| rua.iter().any(|a| a.eq_ignore_ascii_case(o)));
    if !to_herald {
        return out.push(Finding::new(
            "dmarc.reports",
            Status::Info,
            format!(
                "reports go to {}, not to herald's feedback listener; load them with `herald \
                 dmarc import`",
                if rua.is_empty() {
                    "nobody".to_string()
                } else {
                    rua.join(", ")
                }
            ),
        ));
    }
    let path = crate::store::database_path(ctx.cfg);
    let last = if path.exists() {
        match crate::store::open(ctx.cfg).await {
            Ok(s) => s.last_dmarc_report(&ctx.domain).await.ok().flatten(),
            Err(_) => None,
        }
    } else {
        None
    };
    let now = crate::store::now();
    out.push(match last {
        Some(t) if now - t <= RECENT => Finding::new(
            "dmarc.reports",
            Status::Pass,
            format!(
                "reports reach herald; the last one for {} arrived {} hours ago",
                ctx.domain,
                (now - t) / 3600
            ),
        ),
        Some(t) => Finding::new(
            "dmarc.reports",
            Status::Warn,
            format!(
                "no report for {} in the last 48 hours (the last one arrived {} hours ago)",
                ctx.domain,
                (now - t) / 3600
            ),
        )
        .fix("check the MX of the feedback domain and that [feedback] listen is reachable on port 25"),
        None => Finding::new(
            "dmarc.reports",
            Status::Warn,
            format!("no DMARC report for {} has arrived yet", ctx.domain),
        )
        .fix("receivers send daily: check the feedback domain's MX (herald dns) and [feedback] listen; allow 48 hours"),
    });
}
