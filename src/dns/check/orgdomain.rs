//! The organizational domain as DMARCbis finds it (RFC 9989 §4.10): a DNS Tree Walk over the
//! `_dmarc` records from the domain up to its top-level domain, instead of the Public Suffix
//! List of RFC 7489. Receivers that follow DMARCbis decide relaxed alignment and the fallback
//! policy record this way; where it differs from the PSL, `herald check` says so, since herald's
//! signer chooses keys by the PSL.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Dmarc, Psd};

use super::Ctx;
use super::lookup::{Answer, LookupFailure};
use crate::signing::align::{PsdTag, tree_walk_names, tree_walk_org};

/// One valid DMARC record the walk found.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// The name it is published for (without `_dmarc.`).
    pub(super) name: String,
    /// The record as published.
    pub(super) text: String,
    /// The record parsed.
    pub(super) dmarc: Dmarc,
}

/// What a tree walk from one domain found.
#[derive(Debug, Clone)]
pub(super) struct Walk {
    /// The valid records, longest name first.
    pub(super) found: Vec<Found>,
    /// The organizational domain they give.
    pub(super) org: String,
}

impl Walk {
    /// The record at `name`, if the walk found one there.
    pub(super) fn at(&self, name: &str) -> Option<&Found> {
        self.found.iter().find(|f| f.name == name)
    }
}

/// Walks from `domain` up; a name with no record, several records or a malformed one is passed
/// over as RFC 9989 says; a record with `psd=y` or `psd=n` ends the walk.
pub(super) async fn walk(ctx: &Ctx<'_>, domain: &str) -> Result<Walk, LookupFailure> {
    let mut found = Vec::new();
    for name in tree_walk_names(domain) {
        let records: Vec<String> = match ctx.dns.txt(&format!("_dmarc.{name}")).await? {
            Answer::Found(txts) => txts
                .into_iter()
                .filter(|t| {
                    let t = t.trim_start().as_bytes();
                    t.len() >= 8 && t[..8].eq_ignore_ascii_case(b"v=DMARC1")
                })
                .collect(),
            _ => continue,
        };
        let [text] = records.as_slice() else {
            continue;
        };
        let Ok(dmarc) = Dmarc::parse(text.as_bytes()) else {
            continue;
        };
        let stop = matches!(dmarc.psd, Psd::Yes | Psd::No);
        found.push(Found {
            name: name.to_string(),
            text: text.clone(),
            dmarc,
        });
        if stop {
            break;
        }
    }
    let tags: Vec<(&str, PsdTag)> = found
        .iter()
        .map(|f| {
            let tag = match f.dmarc.psd {
                Psd::Yes => PsdTag::Yes,
                Psd::No => PsdTag::No,
                Psd::Default => PsdTag::Unset,
            };
            (f.name.as_str(), tag)
        })
        .collect();
    let org = tree_walk_org(domain, &tags).to_string();
    Ok(Walk { found, org })
}

/// The `pct=` value of a record, if it has one (RFC 7489; dropped by RFC 9989).
pub(super) fn legacy_pct(record: &str) -> Option<String> {
    record.split(';').find_map(|tag| {
        let (k, v) = tag.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("pct")
            .then(|| v.trim().to_string())
    })
}
