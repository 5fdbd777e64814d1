//! DKIM checks: every active selector herald signs with is published with exactly herald's
//! public key; retired selectors still published are pointed out.

use base64::Engine;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::DkimError;

use super::lookup::Answer;
use super::{Ctx, Finding, Status};
use crate::dns::records::normalize_name;
use crate::signing::PublishedKey;

/// The tags of a DKIM key record (`v=DKIM1; k=rsa; p=…`), values with whitespace removed.
pub(crate) fn dkim_tag(txt: &str, tag: &str) -> Option<String> {
    txt.split(';').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(tag)
            .then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// The decoded public key (`p=`) of a DKIM key record.
pub(crate) fn public_key(txt: &str) -> Option<Vec<u8>> {
    let p = dkim_tag(txt, "p")?;
    base64::engine::general_purpose::STANDARD.decode(p).ok()
}

pub(super) async fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    // The keys of the domain that signs (the domain itself or a parent), or, when none is
    // active, any retired keys of the domain itself (still worth a word if published).
    let pending = ctx.signing_domain.is_none();
    let d = (ctx.signing_domain.as_deref())
        .or(ctx.pending_domain.as_deref())
        .unwrap_or(&ctx.domain);
    let keys: Vec<&PublishedKey> = ctx
        .keys
        .iter()
        .filter(|k| normalize_name(&k.domain) == d)
        .collect();
    if ctx.signing_domain.is_none() && ctx.pending_domain.is_none() {
        out.push(
            Finding::new(
                "dkim.keys",
                Status::Fail,
                format!(
                    "herald has no DKIM key for {}: it cannot sign (and will refuse) mail from it",
                    ctx.domain
                ),
            )
            .fix(format!(
                "run `herald dkim generate --domain {}`, add the key to [[dkim.keys]] and publish it (herald dns)",
                ctx.domain
            )),
        );
    }
    for key in keys {
        if pending {
            out.push(check_not_yet_active(&ctx.dns, key).await);
        } else {
            out.push(check_key(&ctx.dns, key).await);
        }
    }
}

/// A generated key that does not sign yet (no key of its domain does): judged as if it
/// signed, so the check passes once DNS serves it — the moment to run `herald dkim activate`.
async fn check_not_yet_active(dns: &super::lookup::Dns<'_>, key: &PublishedKey) -> Finding {
    let mut as_active = key.clone();
    as_active.active = true;
    let mut finding = check_key(dns, &as_active).await;
    let activate = format!(
        "herald dkim activate {} {}",
        normalize_name(&key.domain),
        key.selector.to_ascii_lowercase()
    );
    if finding.status == Status::Pass {
        finding.message = format!(
            "{} publishes the key generated for herald (not active yet): run `{activate}` to \
             let it sign",
            key.record_name()
        );
    } else if let Some(fix) = finding.fix.take() {
        finding.fix = Some(format!(
            "{fix}; once DNS serves it, run `{activate}` (the key is not active yet)"
        ));
    }
    finding
}

/// Whether DNS (the configured resolver `auth`) serves exactly `key`'s public key at its
/// selector: the check `herald check` makes, reused by `herald dkim activate` before it lets a
/// key sign. [`Status::Pass`] when it does; for an inactive key the finding reads as the check
/// of a retired one, so callers judge `Pass` only.
pub(crate) async fn check_published(
    auth: &mail_auth::MessageAuthenticator,
    key: &PublishedKey,
) -> Finding {
    // Judge the key as if it signed: a key about to be activated must be published.
    let mut as_active = key.clone();
    as_active.active = true;
    check_key(&super::lookup::Dns::new(auth), &as_active).await
}

async fn check_key(dns: &super::lookup::Dns<'_>, key: &PublishedKey) -> Finding {
    let id = format!("dkim.{}", key.selector.to_ascii_lowercase());
    let domain = normalize_name(&key.domain);
    let name = format!("{}._domainkey.{domain}", key.selector.to_ascii_lowercase());
    let publish = format!(
        "publish {name}. TXT \"{}\" (herald dns --domain {domain})",
        key.txt
    );
    let records = match dns.txt(&name).await {
        Err(e) => {
            return Finding::new(id, Status::Error, e.to_string())
                .fix("check that the resolver answers, then run again");
        }
        Ok(Answer::NxDomain | Answer::NoData) => {
            return if key.active {
                Finding::new(
                    id,
                    Status::Fail,
                    format!("no DKIM record at {name}: herald's signatures with selector {} cannot be verified", key.selector),
                )
                .fix(publish)
            } else {
                Finding::new(
                    id,
                    Status::Pass,
                    format!(
                        "selector {} (active = false) is not published: fine for a retired key; \
                         a new one must be published before `herald dkim activate`",
                        key.selector
                    ),
                )
            };
        }
        Ok(Answer::Found(records)) => records,
    };
    let candidates: Vec<&String> = records
        .iter()
        .filter(|r| dkim_tag(r, "p").is_some())
        .collect();
    let Some(record) = candidates.first() else {
        return Finding::new(
            id,
            if key.active {
                Status::Fail
            } else {
                Status::Warn
            },
            format!("{name} has TXT records but none is a DKIM key (no p= tag)"),
        )
        .fix(publish);
    };
    if candidates.len() > 1 {
        return Finding::new(
            id,
            Status::Fail,
            format!(
                "{name} has {} DKIM key records; verifiers may pick the wrong one",
                candidates.len()
            ),
        )
        .fix(format!("keep only one record: {publish}"));
    }
    match DomainKey::parse(record.as_bytes()) {
        Err(mail_auth::Error::Dkim(DkimError::RevokedPublicKey)) => {
            return if key.active {
                Finding::new(
                    id,
                    Status::Fail,
                    format!("the key at {name} is revoked (empty p=)"),
                )
                .fix(publish)
            } else {
                Finding::new(
                    id,
                    Status::Pass,
                    format!("retired selector {} is revoked (empty p=)", key.selector),
                )
            };
        }
        Err(e) => {
            return Finding::new(
                id,
                if key.active {
                    Status::Fail
                } else {
                    Status::Warn
                },
                format!("the DKIM record at {name} is malformed ({e}): \"{record}\""),
            )
            .fix(publish);
        }
        Ok(_) => {}
    }
    let same = match (public_key(record), public_key(&key.txt)) {
        (Some(published), Some(ours)) => published == ours,
        _ => false,
    };
    match (key.active, same) {
        (true, true) => Finding::new(
            id,
            Status::Pass,
            format!(
                "{name} publishes the key herald signs with ({} {} bits)",
                key.algorithm.as_str(),
                key.bits
            ),
        ),
        (true, false) => Finding::new(
            id,
            Status::Fail,
            format!(
                "{name} publishes a different public key than the one herald signs with (a stale \
                 key?): herald's signatures will fail verification"
            ),
        )
        .fix(format!("replace the record: {publish}")),
        (false, true) => Finding::new(
            id,
            Status::Warn,
            format!(
                "selector {} is published but does not sign (active = false)",
                key.selector
            ),
        )
        .fix(format!(
            "a new key: `herald dkim activate {domain} {}`; a retired one: once mail signed with it has been delivered (a few days), delete the TXT record at {name} and the [[dkim.keys]] entry",
            key.selector.to_ascii_lowercase()
        )),
        (false, false) => Finding::new(
            id,
            Status::Warn,
            format!(
                "selector {} (active = false) is published with a key that is not herald's",
                key.selector
            ),
        )
        .fix(format!("a new key: {publish}; a retired one: delete the TXT record at {name} unless another sender uses it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags() {
        let t = "v=DKIM1; k=ed25519; p=AAAA BBBB";
        assert_eq!(dkim_tag(t, "k").as_deref(), Some("ed25519"));
        assert_eq!(dkim_tag(t, "p").as_deref(), Some("AAAABBBB"));
        assert_eq!(dkim_tag(t, "x"), None);
        assert_eq!(public_key("p=AAAA"), Some(vec![0, 0, 0]));
    }
}
