//! Ways a resolver misbehaves (issue 28), switched on per test through [`super::DnsServer`]:
//! silence for some questions (the client times out), DNSSEC records stripped from every
//! answer, SERVFAIL on every other question about a name, every UDP answer truncated (TC=1,
//! so the client asks again over TCP), and answers whose records are for another name.

use std::collections::{HashMap, HashSet};

use hickory_proto::op::Message;
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// What the server does wrong; nothing by default.
#[derive(Default)]
pub(super) struct Misbehaviour {
    /// Questions never answered: (name, type), the type `None` for every type.
    silent: Vec<(String, Option<RecordType>)>,
    /// Questions of these types never answered, whatever the name.
    silent_types: HashSet<RecordType>,
    /// RRSIG, NSEC, NSEC3, DNSKEY and DS removed from every answer.
    pub(super) strip_dnssec: bool,
    /// Names answered SERVFAIL on every other question (count of questions so far).
    flaky: HashMap<String, u64>,
    /// Every UDP answer truncated.
    pub(super) truncate_udp: bool,
    /// Names answered with an A record for another name (owner, address): a decoy.
    wrong_name: HashMap<String, (Name, Ipv4Addr)>,
}

impl Misbehaviour {
    pub(super) fn silence(&mut self, name: String, rtype: Option<RecordType>) {
        self.silent.push((name, rtype));
    }

    pub(super) fn silence_type(&mut self, rtype: RecordType) {
        self.silent_types.insert(rtype);
    }

    pub(super) fn make_flaky(&mut self, name: String) {
        self.flaky.insert(name, 0);
    }

    pub(super) fn answer_for_wrong_name(&mut self, name: String, owner: Name, ip: Ipv4Addr) {
        self.wrong_name.insert(name, (owner, ip));
    }

    /// Whether the question goes unanswered.
    pub(super) fn is_silent(&self, key: &str, rtype: RecordType) -> bool {
        self.silent_types.contains(&rtype)
            || self
                .silent
                .iter()
                .any(|(n, t)| n == key && t.is_none_or(|t| t == rtype))
    }

    /// Whether this question about `key` gets SERVFAIL (every other one does).
    pub(super) fn flaky_now(&mut self, key: &str) -> bool {
        match self.flaky.get_mut(key) {
            Some(n) => {
                *n += 1;
                *n % 2 == 1
            }
            None => false,
        }
    }

    /// Applies the changes to a finished answer about `key`.
    pub(super) fn spoil(&self, key: &str, response: &mut Message) {
        if self.strip_dnssec {
            for section in [
                &mut response.answers,
                &mut response.authorities,
                &mut response.additionals,
            ] {
                section.retain(|r| !r.record_type().is_dnssec());
            }
        }
        if let Some((owner, ip)) = self.wrong_name.get(key) {
            response.answers = vec![Record::from_rdata(owner.clone(), 0, RData::A(A(*ip)))];
        }
    }
}
