//! Walks an SPF record and everything it includes or redirects to, counting what RFC 7208
//! limits: DNS-querying terms (at most 10), void look-ups (at most 2) and the MX names of an
//! `mx` mechanism (at most 10, §4.6.4). Domain-specs with macros (§7) are expanded as a
//! receiver would for mail from herald (`%{i}` herald's first address, `%{s}`
//! `postmaster@<domain>`, `%{h}` herald's host name) and followed.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_resolver::proto::rr::RecordType;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Spf, Variables};

use super::Ctx;
use super::lookup::{Answer, LookupFailure};
use super::spf::is_spf;
use crate::dns::records::normalize_name;

/// Records expanded at most while walking includes (guards against loops and huge trees).
const MAX_EXPANSIONS: u32 = 60;
/// RFC 7208 §4.6.4: MX names one `mx` mechanism may look up.
const MAX_MX_NAMES: usize = 10;

/// A domain-spec without macros, resolved against the current domain.
pub(super) fn literal(m: &Macro, current: &str) -> Option<String> {
    match m {
        Macro::None => Some(current.to_string()),
        Macro::Literal(b) => Some(normalize_name(&String::from_utf8_lossy(b))),
        Macro::List(parts) => {
            let mut s = String::new();
            for p in parts.iter() {
                match p {
                    Macro::Literal(b) => s.push_str(&String::from_utf8_lossy(b)),
                    _ => return None,
                }
            }
            Some(normalize_name(&s))
        }
        Macro::Variable { .. } => None,
    }
}

/// The walk of an SPF record and everything it includes or redirects to.
pub(super) struct Walk<'c> {
    ctx: &'c Ctx<'c>,
    pub(super) lookups: u32,
    pub(super) per_record: Vec<(String, u32)>,
    pub(super) void: Vec<String>,
    pub(super) broken: Vec<String>,
    pub(super) herald_via: Option<Vec<String>>,
    pub(super) network: Option<LookupFailure>,
    pub(super) cache: HashMap<String, Option<Arc<Spf>>>,
    pub(super) macros: bool,
    pub(super) ptr: bool,
    /// `mx` mechanisms naming more MX hosts than RFC 7208 §4.6.4 allows.
    pub(super) mx_over: Vec<String>,
    vars: Variables<'static>,
}

impl<'c> Walk<'c> {
    pub(super) fn new(ctx: &'c Ctx<'c>) -> Walk<'c> {
        Walk {
            ctx,
            lookups: 0,
            per_record: Vec::new(),
            void: Vec::new(),
            broken: Vec::new(),
            herald_via: None,
            network: None,
            cache: HashMap::new(),
            macros: false,
            ptr: false,
            mx_over: Vec::new(),
            vars: receiver_variables(ctx),
        }
    }

    /// The domain-spec as a name: literal, or with its macros expanded (§7).
    fn expand(&mut self, m: &Macro, current: &str) -> Option<String> {
        if let Some(l) = literal(m, current) {
            return Some(l);
        }
        self.macros = true;
        let vars = &self.vars;
        let expanded = normalize_name(&m.eval(vars, current, true));
        (!expanded.is_empty()).then_some(expanded)
    }

    pub(super) async fn run(&mut self, root: &str, record: Arc<Spf>) {
        self.cache.insert(root.to_string(), Some(record.clone()));
        let mut stack = vec![(root.to_string(), record, vec![root.to_string()])];
        let mut expansions = 0;
        while let Some((domain, spf, chain)) = stack.pop() {
            expansions += 1;
            if expansions > MAX_EXPANSIONS {
                self.broken.push(format!(
                    "more than {MAX_EXPANSIONS} SPF records are reached through includes; stopped counting"
                ));
                return;
            }
            let mut local = 0;
            let mut targets = Vec::new();
            let mut has_all = false;
            for d in spf.directives.iter() {
                match &d.mechanism {
                    Mechanism::All => {
                        has_all = true;
                        break;
                    }
                    Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => {}
                    Mechanism::Include { macro_string } => {
                        local += 1;
                        if let Some(t) = self.expand(macro_string, &domain) {
                            targets.push(("include", t));
                        }
                    }
                    Mechanism::A { macro_string, .. } => {
                        local += 1;
                        self.void_check("a", macro_string, &domain, RecordType::A)
                            .await;
                    }
                    Mechanism::Mx { macro_string, .. } => {
                        local += 1;
                        self.void_check("mx", macro_string, &domain, RecordType::MX)
                            .await;
                    }
                    Mechanism::Exists { macro_string } => {
                        local += 1;
                        self.void_check("exists", macro_string, &domain, RecordType::A)
                            .await;
                    }
                    Mechanism::Ptr { .. } => {
                        local += 1;
                        self.ptr = true;
                    }
                }
                if self.network.is_some() {
                    return;
                }
            }
            if !has_all && let Some(m) = &spf.redirect {
                local += 1;
                if let Some(t) = self.expand(m, &domain) {
                    targets.push(("redirect", t));
                }
            }
            self.lookups += local;
            self.per_record.push((domain.clone(), local));
            for (kind, target) in targets {
                let mut path = chain.clone();
                path.push(target.clone());
                if kind == "include" && target == self.ctx.include && self.herald_via.is_none() {
                    self.herald_via = Some(path[1..].to_vec());
                }
                if chain.contains(&target) {
                    self.broken.push(format!(
                        "{kind}:{target} loops back to a record already being evaluated"
                    ));
                    continue;
                }
                match self.fetch(&target).await {
                    Ok(Some(next)) => stack.push((target, next, path)),
                    Ok(None) => {}
                    Err(e) => {
                        self.network = Some(e);
                        return;
                    }
                }
            }
        }
    }

    /// The single parsed SPF record at `name`, cached; problems are recorded as broken/void.
    async fn fetch(&mut self, name: &str) -> Result<Option<Arc<Spf>>, LookupFailure> {
        if let Some(hit) = self.cache.get(name) {
            return Ok(hit.clone());
        }
        let found = match self.ctx.dns.txt(name).await? {
            Answer::NxDomain | Answer::NoData => {
                self.void.push(format!("include/redirect {name}"));
                self.broken.push(format!(
                    "{name} has no SPF record (it is included or redirected to)"
                ));
                None
            }
            Answer::Found(txts) => {
                let spf: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
                match spf.as_slice() {
                    [] => {
                        self.broken
                            .push(format!("{name} has TXT records but none is an SPF record"));
                        None
                    }
                    [one] => match Spf::parse(one.as_bytes()) {
                        Ok(p) => Some(Arc::new(p)),
                        Err(e) => {
                            self.broken
                                .push(format!("the SPF record of {name} is malformed ({e})"));
                            None
                        }
                    },
                    _ => {
                        self.broken
                            .push(format!("{name} has {} SPF records", spf.len()));
                        None
                    }
                }
            }
        };
        self.cache.insert(name.to_string(), found.clone());
        Ok(found)
    }

    async fn void_check(&mut self, kind: &str, m: &Macro, domain: &str, rtype: RecordType) {
        let Some(target) = self.expand(m, domain) else {
            return;
        };
        let answer = if rtype == RecordType::A && kind == "a" {
            self.ctx.dns.has_address(&target).await
        } else {
            self.ctx.dns.count(&target, rtype).await
        };
        match answer {
            Ok(a) if a.is_void() => self.void.push(format!("{kind}:{target}")),
            Ok(Answer::Found(n)) if kind == "mx" && n > MAX_MX_NAMES => {
                self.mx_over.push(format!("mx:{target} has {n} MX names"))
            }
            Ok(_) => {}
            Err(e) => self.network = Some(e),
        }
    }
}

/// The macro variables a receiver would use for mail from herald for the checked domain.
fn receiver_variables(ctx: &Ctx<'_>) -> Variables<'static> {
    let mut vars = Variables::new();
    let ip = ctx
        .addresses
        .first()
        .map(|n| n.addr())
        .unwrap_or(std::net::IpAddr::from([192, 0, 2, 1]));
    vars.set_ip(&ip);
    vars.set_sender(format!("postmaster@{}", ctx.domain).into_bytes());
    vars.set_helo_domain(ctx.cfg.server.hostname.clone().into_bytes());
    vars.set_host_domain(ctx.cfg.server.hostname.clone().into_bytes());
    vars.set_domain(ctx.domain.clone().into_bytes());
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_domain_specs() {
        let spf = Spf::parse(
            b"v=spf1 a mx:mail.example.com include:_spf.Example.net exists:%{i}.x.example -all",
        )
        .unwrap();
        let ms: Vec<Option<String>> = spf
            .directives
            .iter()
            .filter_map(|d| match &d.mechanism {
                Mechanism::A { macro_string, .. }
                | Mechanism::Mx { macro_string, .. }
                | Mechanism::Include { macro_string }
                | Mechanism::Exists { macro_string } => Some(literal(macro_string, "example.com")),
                _ => None,
            })
            .collect();
        assert_eq!(
            ms,
            [
                Some("example.com".into()),
                Some("mail.example.com".into()),
                Some("_spf.example.net".into()),
                None
            ]
        );
    }
}
