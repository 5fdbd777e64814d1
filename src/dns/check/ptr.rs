//! Reverse DNS of herald's egress addresses (`ptr.<address>`): Gmail, Yahoo and Microsoft refuse
//! or junk mail from an address without a PTR record whose name resolves back to it
//! (forward-confirmed reverse DNS), and many receivers also compare it with the EHLO name.
//!
//! One finding per address, with the first thing wrong and the one line that fixes it. The PTR
//! zone belongs to whoever owns the address block (the hosting provider, usually), so the fix
//! names who to ask.

use std::net::IpAddr;

use super::lookup::Answer;
use super::{Ctx, Finding, Status};

/// What the reverse DNS of one address came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reverse {
    /// A PTR name resolving back to the address and equal to the EHLO name.
    Confirmed(String),
    /// No PTR record at all.
    Missing,
    /// PTR names found, none resolving back to the address: (names, what they resolve to).
    NotConfirmed(Vec<String>, Vec<IpAddr>),
    /// Forward-confirmed, but named differently from the EHLO name.
    OtherName(String),
    /// DNS did not answer.
    Unknown(String),
}

/// Checks every single egress address; ranges are noted, since herald cannot know which
/// address of a range it leaves from.
pub(super) async fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let ehlo = ctx
        .cfg
        .server
        .hostname
        .trim_end_matches('.')
        .to_ascii_lowercase();
    for net in &ctx.addresses {
        if net.prefix_len() != net.max_prefix_len() {
            out.push(
                Finding::new(
                    format!("ptr.{}", net.trunc()),
                    Status::Info,
                    format!(
                        "{} is a range: reverse DNS is checked for single addresses only",
                        net.trunc()
                    ),
                )
                .fix("list the addresses herald actually sends from in [spf] addresses to have their PTR checked"),
            );
            continue;
        }
        let ip = net.addr();
        out.push(finding(ip, &ehlo, reverse(ctx, ip, &ehlo).await));
    }
}

/// Looks up the PTR of `ip` and each name it gives, forward.
pub(crate) async fn reverse(ctx: &Ctx<'_>, ip: IpAddr, ehlo: &str) -> Reverse {
    let names = match ctx.dns.ptr(ip).await {
        Err(e) => return Reverse::Unknown(e.to_string()),
        Ok(Answer::Found(names)) => names,
        Ok(_) => return Reverse::Missing,
    };
    let mut seen = Vec::new();
    let mut confirmed = Vec::new();
    for name in &names {
        match ctx.dns.addresses(name).await {
            Err(e) => return Reverse::Unknown(e.to_string()),
            Ok(Answer::Found(ips)) => {
                if ips.contains(&ip) {
                    confirmed.push(name.clone());
                }
                seen.extend(ips);
            }
            Ok(_) => {}
        }
    }
    if confirmed.iter().any(|n| n == ehlo) {
        Reverse::Confirmed(ehlo.to_string())
    } else if let Some(first) = confirmed.into_iter().next() {
        Reverse::OtherName(first)
    } else {
        Reverse::NotConfirmed(names, seen)
    }
}

fn finding(ip: IpAddr, ehlo: &str, reverse: Reverse) -> Finding {
    let id = format!("ptr.{ip}");
    let set_ptr = format!(
        "ask the owner of {ip} (your hosting provider) to set its PTR record to {ehlo}, \
         and publish {ehlo} {} {ip}",
        if ip.is_ipv4() { "A" } else { "AAAA" }
    );
    match reverse {
        Reverse::Confirmed(name) => Finding::new(
            id,
            Status::Pass,
            format!("{ip} has PTR {name}, which resolves back to {ip} and is herald's EHLO name"),
        ),
        Reverse::Missing => Finding::new(
            id,
            Status::Fail,
            format!(
                "{ip} has no PTR record: Gmail, Yahoo and Microsoft refuse or junk mail from addresses without reverse DNS"
            ),
        )
        .fix(set_ptr),
        Reverse::NotConfirmed(names, seen) => {
            let fwd = names.first().cloned().unwrap_or_default();
            let names = names.join(", ");
            let resolves = if seen.is_empty() {
                "to nothing".to_string()
            } else {
                let ips: Vec<String> = seen.iter().map(ToString::to_string).collect();
                format!("to {}", ips.join(", "))
            };
            Finding::new(
                id,
                Status::Fail,
                format!(
                    "{ip} has PTR {names}, but that name resolves {resolves}, not back to {ip} \
                     (reverse DNS not forward-confirmed)"
                ),
            )
            .fix(format!(
                "publish {fwd} {} {ip} (or have the PTR changed to {ehlo} and publish that name's address)",
                if ip.is_ipv4() { "A" } else { "AAAA" }
            ))
        }
        Reverse::OtherName(name) => Finding::new(
            id,
            Status::Fail,
            format!(
                "{ip} has PTR {name} (forward-confirmed), but herald says EHLO {ehlo}: receivers \
                 compare the two"
            ),
        )
        .fix(format!(
            "set [server] hostname = \"{name}\", or have the PTR of {ip} changed to {ehlo}"
        )),
        Reverse::Unknown(e) => Finding::new(id, Status::Error, format!("{ip}: {e}"))
            .fix("check that the resolver answers, then run again"),
    }
}
