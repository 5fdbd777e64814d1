//! Online DNSSEC signing for the test DNS server: one zone at the root signed with a key made
//! at test time, RRSIGs on every answer, NSEC "black lies" for missing names and types, signed
//! proofs that unsigned child zones have no DS, and deliberately corrupted signatures.

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, NSEC, RRSIG};
use hickory_proto::dnssec::{Algorithm, DnssecSigner, SigningKey};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};

use super::soa_for;

/// The signing state of a DNSSEC-enabled server.
pub(super) struct Dnssec {
    pub(super) signer: DnssecSigner,
    pub(super) dnskey: DNSKEY,
    /// Names whose signatures are served corrupted (bogus).
    pub(super) corrupt: std::collections::HashSet<String>,
    /// Apexes of unsigned child zones (insecure delegations from the signed root).
    pub(super) unsigned: Vec<String>,
}

impl Dnssec {
    /// A fresh key and its trust-anchor line (`. 3600 IN DNSKEY 257 3 13 …`).
    pub(super) fn generate() -> (Dnssec, String) {
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256).expect("key");
        let key =
            EcdsaSigningKey::from_pkcs8(&pkcs8, Algorithm::ECDSAP256SHA256).expect("signing key");
        let public = key.to_public_key().expect("public key");
        let dnskey = DNSKEY::new(true, true, false, public);
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            Name::root(),
            std::time::Duration::from_secs(7 * 86400),
        );
        let anchor = format!(". 3600 IN DNSKEY {dnskey}\n");
        let dnssec = Dnssec {
            signer,
            dnskey,
            corrupt: Default::default(),
            unsigned: Vec::new(),
        };
        (dnssec, anchor)
    }

    /// The unsigned zone `k` is in, if any.
    pub(super) fn unsigned_zone_of(&self, k: &str) -> Option<&str> {
        self.unsigned
            .iter()
            .find(|z| k == z.as_str() || k.ends_with(&format!(".{z}")))
            .map(String::as_str)
    }
}

/// Adds RRSIGs (and, for a negative answer, a signed root SOA and an NSEC at the asked name)
/// to `response`: the whole namespace is one zone signed at the root.
pub(super) fn sign_response(
    d: &Dnssec,
    response: &mut Message,
    qname: &Name,
    qtype: RecordType,
    k: &str,
    present: &[RecordType],
    ttl: u32,
) {
    if qname.is_root() && qtype == RecordType::DNSKEY {
        response.metadata.response_code = ResponseCode::NoError;
        response.authorities.clear();
        response.add_answer(Record::from_rdata(
            Name::root(),
            ttl,
            RData::DNSSEC(DNSSECRData::DNSKEY(d.dnskey.clone())),
        ));
    }
    let corrupt = d.corrupt.contains(k);
    let answers = response.answers.clone();
    if answers.is_empty() {
        // NODATA (or a missing name): a signed NSEC at the name listing what does exist there.
        response.metadata.response_code = ResponseCode::NoError;
        response.authorities.clear();
        let soa = soa_for(&Name::root(), ttl);
        // Any name after the owner in canonical order will do for a direct-match denial.
        let next = Name::from_ascii("a")
            .and_then(|n| n.append_domain(qname))
            .expect("next name");
        let nsec = Record::from_rdata(
            qname.clone(),
            ttl,
            RData::DNSSEC(DNSSECRData::NSEC(NSEC::new_cover_self(
                next,
                present.iter().copied(),
            ))),
        );
        for record in [soa, nsec] {
            let sig = rrsig(d, std::slice::from_ref(&record), corrupt);
            response.add_authority(record);
            response.add_authority(sig);
        }
        return;
    }
    let mut rrsets: Vec<(Name, RecordType)> = Vec::new();
    for r in &answers {
        let id = (r.name.clone(), r.record_type());
        if !rrsets.contains(&id) {
            rrsets.push(id);
        }
    }
    for (owner, t) in rrsets {
        let set: Vec<Record> = answers
            .iter()
            .filter(|r| r.record_type() == t && r.name == owner)
            .cloned()
            .collect();
        response.add_answer(rrsig(d, &set, corrupt));
    }
}

/// The RRSIG over one RRset (all of `records` share name and type).
fn rrsig(d: &Dnssec, records: &[Record], corrupt: bool) -> Record {
    let first = &records[0];
    let mut set = RecordSet::new(first.name.clone(), first.record_type(), first.ttl);
    for r in records {
        set.insert(r.clone(), 0);
    }
    let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let sig = RRSIG::from_rrset(&set, DNSClass::IN, inception, &d.signer).expect("sign rrset");
    let sig = if corrupt {
        let mut bytes = sig.sig().to_vec();
        bytes[0] ^= 0xff;
        RRSIG::from_sig(sig.input().clone(), bytes)
    } else {
        sig
    };
    Record::from_rdata(
        first.name.clone(),
        first.ttl,
        RData::DNSSEC(DNSSECRData::RRSIG(sig)),
    )
}
