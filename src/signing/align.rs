//! Choosing the signing domain: DMARC relaxed alignment (RFC 7489 §3.1.1).
//!
//! A message is signed only with a `d=` that DMARC receivers will find aligned with its
//! `From:` domain: the domain itself, or a parent of it down to its organizational domain
//! (the registrable domain under the Public Suffix List). The nearest configured one wins.
//!
//! DMARCbis (RFC 9989) finds the organizational domain by a DNS tree walk instead of the list;
//! the walk's pure parts are here ([`tree_walk_names`], [`tree_walk_org`]) and `herald check`
//! runs it, naming every domain where the two differ. Signing itself stays on the list: key
//! choice happens per message, synchronously, where a DNS walk has no place.
//!
//! Refusals, and why these codes:
//! - no aligned key: `550 5.7.1` (delivery not authorized): herald's policy forbids sending
//!   mail it cannot sign aligned.
//! - no `From:`, several `From:` headers, or a `From:` that does not hold exactly one address:
//!   `550 5.6.0` (RFC 3463 "other or undefined media error"): the message content itself is
//!   malformed for signing (RFC 5322 §3.6 allows one `From:`; RFC 7489 §6.6.1 lets receivers
//!   reject mail whose author cannot be determined) and no more specific code exists.

use mail_parser::{Address, HeaderName, HeaderValue, MessageParser};

use crate::reply::Reply;

/// The header fields herald signs when present, in the order listed in `h=`.
pub const SIGNED_HEADERS: [&str; 18] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    // Issue 24: the feedback loop headers herald adds must be covered (RFC 9477 §3.1).
    "Feedback-ID",
    "CFBL-Address",
    "CFBL-Feedback-ID",
];

/// What signing needs to know about a message's header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The `From:` address's domain, lower-case ASCII (IDNs as A-labels).
    pub from_domain: String,
    /// The `h=` list: each signed header present in the message, plus `From` once more so a
    /// second `From:` cannot be added after signing.
    pub headers: Vec<String>,
}

/// Reads the header section: exactly one `From:` header holding exactly one address, and the
/// names of the signed headers that are present.
pub fn inspect(message: &[u8]) -> Result<Inspected, Reply> {
    // Only `From:` is parsed; every other field is only named (its value skipped): the
    // default parser also took apart herald's own `Received:` and the `Date:`, `To:` and
    // `Message-ID:` fields, none of which this reads (1.6 % of the async threads' CPU).
    static FROM_ONLY: std::sync::LazyLock<MessageParser> = std::sync::LazyLock::new(|| {
        MessageParser::new()
            .header_address(HeaderName::From)
            .default_header_ignore()
    });
    let parsed = FROM_ONLY
        .parse_headers(message)
        .ok_or_else(|| media("the message has no header section"))?;
    let headers = parsed.headers();
    let froms: Vec<&HeaderValue> = headers
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .map(|h| &h.value)
        .collect();
    let value = match froms.as_slice() {
        [] => {
            return Err(media(
                "the message has no From: header; RFC 5322 requires one, and herald signs with \
                 the key of its domain",
            ));
        }
        [one] => *one,
        many => {
            return Err(media(format!(
                "the message has {} From: headers; RFC 5322 allows exactly one and receivers \
                 reject such mail",
                many.len()
            )));
        }
    };
    let addresses: Vec<&str> = match value {
        HeaderValue::Address(Address::List(list)) => {
            list.iter().filter_map(|a| a.address.as_deref()).collect()
        }
        HeaderValue::Address(Address::Group(groups)) => groups
            .iter()
            .flat_map(|g| g.addresses.iter())
            .filter_map(|a| a.address.as_deref())
            .collect(),
        _ => Vec::new(),
    };
    let address = match addresses.as_slice() {
        [] => {
            return Err(media(
                "the From: header holds no address; put the single author address there",
            ));
        }
        [one] => *one,
        many => {
            return Err(media(format!(
                "the From: header lists {} addresses; herald signs only mail with a single \
                 author (put the others in Reply-To or Cc)",
                many.len()
            )));
        }
    };
    let domain = address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .and_then(normalize_domain)
        .ok_or_else(|| {
            media(format!(
                "the From: address {address:?} has no valid domain; use user@example.com"
            ))
        })?;
    let mut names: Vec<String> = SIGNED_HEADERS
        .iter()
        .filter(|n| {
            headers
                .iter()
                .any(|h| h.name.as_str().eq_ignore_ascii_case(n))
        })
        .map(|n| n.to_string())
        .collect();
    names.push("From".into());
    Ok(Inspected {
        from_domain: domain,
        headers: names,
    })
}

fn media(text: impl Into<String>) -> Reply {
    Reply::new(550, "5.6.0", text)
}

/// Lower-case ASCII form of a domain (trailing dot removed, IDNs converted to A-labels), or
/// `None` when it is not a domain name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_lowercase();
    if d.is_empty() || d.starts_with('[') || d.starts_with('.') || d.contains("..") {
        return None;
    }
    if d.is_ascii() {
        let ok = d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        return ok.then_some(d);
    }
    let name = hickory_proto::rr::Name::from_utf8(&d).ok()?;
    let ascii = name.to_ascii();
    Some(ascii.trim_end_matches('.').to_lowercase())
}

/// The domains a key may have to sign aligned with `from_domain`, nearest first: the domain
/// itself, then each parent down to its organizational domain. A domain the Public Suffix List
/// knows nothing about under a listed suffix still has one (the PSL's `*` default rule).
pub fn candidates(from_domain: &str) -> Vec<&str> {
    let org = psl::domain_str(from_domain).unwrap_or(from_domain);
    let mut out = Vec::new();
    let mut current = from_domain;
    loop {
        out.push(current);
        if current == org || current.len() <= org.len() {
            break;
        }
        match current.split_once('.') {
            Some((_, parent)) if parent.len() >= org.len() => current = parent,
            _ => break,
        }
    }
    out
}

/// The organizational domain of `domain` (the domain itself when the PSL gives none).
pub fn organizational_domain(domain: &str) -> &str {
    psl::domain_str(domain).unwrap_or(domain)
}

/// The names a DMARCbis DNS Tree Walk (RFC 9989 §4.10) asks `_dmarc.<name>` for, longest
/// first: `domain` itself, then (for 8 labels or more) its last 7 labels, then one label less
/// at a time down to the top-level domain: at most 8 queries whatever the name.
pub fn tree_walk_names(domain: &str) -> Vec<&str> {
    let total = domain.split('.').count();
    let mut out = vec![domain];
    let mut count = if total >= 8 { 7 } else { total - 1 };
    while count >= 1 {
        out.push(last_labels(domain, count));
        count -= 1;
    }
    out
}

/// The suffix of `domain` made of its last `n` labels (the whole name when it has fewer).
fn last_labels(domain: &str, n: usize) -> &str {
    let dots: Vec<usize> = domain.match_indices('.').map(|(i, _)| i).collect();
    match dots.len().checked_sub(n) {
        Some(i) => dots.get(i).map(|&d| &domain[d + 1..]).unwrap_or(domain),
        None => domain,
    }
}

/// A DMARC record's `psd=` tag, as the tree walk reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsdTag {
    /// `psd=y`: the name is a public suffix domain; the walk stops there.
    Yes,
    /// `psd=n`: the name is an organizational domain; the walk stops there.
    No,
    /// No `psd=` tag (or `psd=u`).
    Unset,
}

/// The organizational domain of `start` from the records a tree walk found, longest name first
/// (RFC 9989 §4.10.2): the first `psd=n` name; else one label below the first `psd=y` name other
/// than `start`; else the found name with the fewest labels; `start` itself when none was found.
pub fn tree_walk_org<'a>(start: &'a str, found: &[(&'a str, PsdTag)]) -> &'a str {
    for (name, psd) in found {
        match psd {
            PsdTag::No => return name,
            PsdTag::Yes if *name != start => {
                return last_labels(start, name.split('.').count() + 1);
            }
            _ => {}
        }
    }
    found.last().map(|(name, _)| *name).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_walk_asks_at_most_eight_names_and_picks_the_organizational_domain() {
        assert_eq!(
            tree_walk_names("a.b.example.com"),
            ["a.b.example.com", "b.example.com", "example.com", "com"]
        );
        let long = "1.2.3.4.5.6.7.8.9.example.com";
        let names = tree_walk_names(long);
        assert_eq!(names.len(), 8);
        assert_eq!(names[1], "5.6.7.8.9.example.com", "seven labels");
        assert_eq!(tree_walk_names("com"), ["com"]);

        use PsdTag::*;
        // The record with the fewest labels wins, unless psd= says otherwise.
        let start = "mail.news.example.com";
        assert_eq!(
            tree_walk_org(
                start,
                &[("news.example.com", Unset), ("example.com", Unset)]
            ),
            "example.com"
        );
        assert_eq!(
            tree_walk_org(start, &[("news.example.com", No), ("example.com", Unset)]),
            "news.example.com"
        );
        assert_eq!(tree_walk_org(start, &[("com", Yes)]), "example.com");
        assert_eq!(tree_walk_org(start, &[]), start, "no record: itself");
        // A subdomain whose parent publishes nothing is its own organizational domain.
        assert_eq!(
            tree_walk_org("news.example.com", &[("news.example.com", Unset)]),
            "news.example.com"
        );
    }

    #[test]
    fn candidates_stop_at_the_organizational_domain() {
        assert_eq!(
            candidates("a.eu.example.co.uk"),
            ["a.eu.example.co.uk", "eu.example.co.uk", "example.co.uk"]
        );
        assert_eq!(candidates("example.com"), ["example.com"]);
        assert_eq!(
            candidates("mail.example.test"),
            ["mail.example.test", "example.test"]
        );
        assert_eq!(candidates("co.uk"), ["co.uk"]);
    }

    #[test]
    fn one_from_address_is_required() {
        let ok = inspect(b"From: A <a@Mail.Example.COM>\r\nTo: b@x.org\r\nSubject: hi\r\n\r\nbody")
            .expect("one From");
        assert_eq!(ok.from_domain, "mail.example.com");
        assert_eq!(ok.headers, ["From", "To", "Subject", "From"]);
        let two = inspect(b"From: a@x.org\r\nFrom: b@x.org\r\n\r\n").err();
        assert_eq!(two.map(|r| r.status), Some("5.6.0"));
        let many = inspect(b"From: a@x.org, b@x.org\r\n\r\n").err();
        assert_eq!(many.map(|r| r.status), Some("5.6.0"));
        let none = inspect(b"To: a@x.org\r\n\r\n").err();
        assert_eq!(none.map(|r| r.status), Some("5.6.0"));
        let group = inspect(b"From: undisclosed:;\r\n\r\n").err();
        assert_eq!(group.map(|r| r.status), Some("5.6.0"));
    }

    #[test]
    fn idn_from_domains_become_a_labels() {
        assert_eq!(
            normalize_domain("Bücher.Example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(normalize_domain("[192.0.2.1]"), None);
    }
}
