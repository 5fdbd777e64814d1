//! DKIM signing with keys aligned to the `From:` domain, and key management.
//!
//! Interface used by the rest of herald (keep it stable):
//! - [`Signer::load`] reads and checks every configured key at start-up; errors name the file
//!   and carry a [`ConfigError`] (exit status 2).
//! - [`Signer::sign`] refuses a message without exactly one `From:` address or with no aligned
//!   key (an SMTP [`Reply`]), otherwise signs it off the async reactor and returns the bytes to
//!   spool (signatures prepended).
//! - [`Signer::published_keys`] lists every key's public half for `herald dns` and `herald check`.
//!
//! Inside: [`keys`] (files: load, check, generate), [`align`] (which domain signs), `sign`
//! (mail-auth signatures).

pub mod align;
pub mod keys;
mod sign;
mod threads;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::config::{Config, ConfigError, DkimAlgorithm, DkimKeyConfig};
use crate::reply::Reply;
use sign::ActiveKey;
use threads::SigningThreads;

/// A configured key's public half, as it must appear in DNS.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    /// Signing domain (`d=`).
    pub domain: String,
    /// Selector (`s=`).
    pub selector: String,
    /// Algorithm.
    pub algorithm: DkimAlgorithm,
    /// Key size in bits (2048/4096 for RSA, 256 for Ed25519).
    pub bits: u32,
    /// The TXT record value, e.g. `v=DKIM1; k=rsa; p=MIIB…`.
    pub txt: String,
    /// Whether the key signs now (inactive keys stay published while retiring).
    pub active: bool,
}

impl PublishedKey {
    /// The DNS name the record lives at: `<selector>._domainkey.<domain>`.
    pub fn record_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

/// Signs accepted messages with aligned keys.
pub struct Signer {
    published: Vec<PublishedKey>,
    /// Active keys by signing domain, RSA first (the signature older verifiers look at).
    domains: Arc<BTreeMap<String, Vec<Arc<ActiveKey>>>>,
    /// Where signing runs: one thread per core, so slow RSA never occupies more than the
    /// machine has while the async reactor keeps serving sessions.
    threads: SigningThreads,
    /// Every active key is cheap to sign with (see [`Signer::signs_inline`]).
    all_cheap: bool,
}

/// The largest message signed inline (see [`Signer::signs_inline`]): hashing 64 KB takes
/// about 0.1 ms.
const INLINE_MAX_BYTES: usize = 64 * 1024;

impl Signer {
    /// Loads every configured key, refusing bad files by name.
    pub fn load(cfg: &Config) -> anyhow::Result<Signer> {
        let mut published = Vec::new();
        let mut domains: BTreeMap<String, Vec<Arc<ActiveKey>>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (i, k) in cfg.dkim.keys.iter().enumerate() {
            let field_err = |field: &str, problem: String| ConfigError {
                file: k.file.display().to_string(),
                key: format!("dkim.keys[{i}].{field}"),
                problem,
            };
            let domain = align::normalize_domain(&k.domain)
                .ok_or_else(|| field_err("domain", format!("{:?} is not a domain", k.domain)))?;
            let selector = k.selector.to_ascii_lowercase();
            if !seen.insert((domain.clone(), selector.clone())) {
                return Err(field_err(
                    "selector",
                    format!(
                        "selector {selector:?} of {domain} is configured twice; each key needs \
                         its own selector"
                    ),
                )
                .into());
            }
            let parsed = load_or_generate(k, &domain, cfg.dkim.allow_dev_keys)
                .map_err(|problem| field_err("file", problem.to_string()))?;
            published.push(PublishedKey {
                domain: domain.clone(),
                selector: selector.clone(),
                algorithm: parsed.algorithm,
                bits: parsed.bits,
                txt: parsed.txt(),
                active: k.active,
            });
            if k.active {
                domains
                    .entry(domain.clone())
                    .or_default()
                    .push(Arc::new(ActiveKey {
                        domain,
                        selector,
                        algorithm: parsed.algorithm,
                        key: Arc::new(parsed.key),
                    }));
            } else {
                // A domain with keys that do not sign yet: an empty entry, so its mail is
                // refused with "activate" rather than "generate".
                domains.entry(domain).or_default();
            }
        }
        for keys in domains.values_mut() {
            keys.sort_by_key(|k| k.algorithm != DkimAlgorithm::Rsa);
        }
        if domains.values().all(Vec::is_empty) {
            tracing::warn!(
                "no active DKIM key is configured: every message will be refused with 550 5.7.1 \
                 until one is added ([[dkim.keys]], see `herald dkim generate`)"
            );
        }
        for (domain, keys) in domains.iter().filter(|(_, keys)| !keys.is_empty()) {
            let list: Vec<String> = keys
                .iter()
                .map(|k| format!("{} ({})", k.selector, k.algorithm.as_str()))
                .collect();
            tracing::info!(
                "DKIM signs for {domain} and its subdomains with {}",
                list.join(", ")
            );
        }
        let threads = SigningThreads::get()
            .map_err(|e| anyhow::anyhow!("cannot start the DKIM signing threads: {e}"))?;
        let all_cheap = domains
            .values()
            .flatten()
            .all(|k| k.algorithm == DkimAlgorithm::Ed25519);
        Ok(Signer {
            all_cheap,
            published,
            domains: Arc::new(domains),
            threads,
        })
    }

    /// Signs `message`, or refuses it with an SMTP reply.
    pub async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, Reply> {
        self.off_reactor(move |domains| {
            let mut out = sign_now(domains, &message, &[&message])?;
            out.extend_from_slice(&message);
            Ok(out)
        })
        .await
    }

    /// Signs a message that is not in memory as one piece: `head` (herald's own header fields)
    /// followed by `body` (the client's message, e.g. mapped from its spool file), whose header
    /// section `client_headers` is passed separately (bounded by the caller). Returns the
    /// `DKIM-Signature:` fields to put in front of `head`, or refuses with an SMTP reply.
    /// Small messages signed only with Ed25519 keys are signed on the calling thread; the rest
    /// on a signing thread (module `threads`), at most one per core.
    pub async fn sign_parts<B>(
        &self,
        head: Vec<u8>,
        client_headers: Vec<u8>,
        body: B,
    ) -> Result<(Vec<u8>, Vec<u8>), Reply>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        let inline = self.signs_inline(body.as_ref().len());
        let job = move |domains: &BTreeMap<String, Vec<Arc<ActiveKey>>>| {
            let mut header_section = Vec::with_capacity(head.len() + client_headers.len());
            header_section.extend_from_slice(&head);
            header_section.extend_from_slice(&client_headers);
            let signatures = sign_now(domains, &header_section, &[&head, body.as_ref()])?;
            Ok((signatures, head))
        };
        if inline {
            return job(&self.domains);
        }
        self.off_reactor(job).await
    }

    /// Whether a message of `len` bytes is signed on the calling thread: when it is small and
    /// every active key is cheap (Ed25519, tens of microseconds), a hop to a signing thread
    /// and back (two thread wake-ups) would cost more than the signature itself.
    fn signs_inline(&self, len: usize) -> bool {
        len <= INLINE_MAX_BYTES && self.all_cheap
    }

    /// Runs signing `job` on a signing thread, at most one per core at a time (signing is
    /// CPU-bound and must not stall the reactor); a failed job becomes a 451 reply.
    async fn off_reactor<T, F>(&self, job: F) -> Result<T, Reply>
    where
        T: Send + 'static,
        F: FnOnce(&BTreeMap<String, Vec<Arc<ActiveKey>>>) -> Result<T, Reply> + Send + 'static,
    {
        let domains = self.domains.clone();
        self.threads
            .run(move || job(&domains))
            .await
            .unwrap_or_else(|| {
                Err(Reply::new(
                    451,
                    "4.3.0",
                    "DKIM signing failed on our side; please try again later",
                ))
            })
    }

    /// Signs on the calling thread (for benchmarks and callers already off the reactor).
    pub fn sign_blocking(&self, message: &[u8]) -> Result<Vec<u8>, Reply> {
        let mut out = sign_now(&self.domains, message, &[message])?;
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The domain whose active keys would sign mail from `from_domain`, if any.
    pub fn aligned_domain(&self, from_domain: &str) -> Option<String> {
        let from = align::normalize_domain(from_domain)?;
        align::candidates(&from)
            .into_iter()
            .find(|d| self.domains.get(*d).is_some_and(|keys| !keys.is_empty()))
            .map(str::to_string)
    }

    /// Every configured key's public half.
    pub fn published_keys(&self) -> Vec<PublishedKey> {
        let mut keys = self.published.clone();
        keys.sort_by(|a, b| (&a.domain, &a.selector).cmp(&(&b.domain, &b.selector)));
        keys
    }
}

/// The signatures for the message made of `parts`, whose header section is `headers`.
fn sign_now(
    domains: &BTreeMap<String, Vec<Arc<ActiveKey>>>,
    headers: &[u8],
    parts: &[&[u8]],
) -> Result<Vec<u8>, Reply> {
    let inspected = align::inspect(headers)?;
    let from = inspected.from_domain.as_str();
    let candidates = align::candidates(from);
    let keys = candidates
        .iter()
        .find_map(|d| domains.get(*d).filter(|keys| !keys.is_empty()))
        .ok_or_else(|| {
            let org = align::organizational_domain(from);
            if let Some(waiting) = candidates.iter().find(|d| domains.contains_key(**d)) {
                return Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "the DKIM key for {waiting} is not active yet, so herald cannot sign \
                         mail from {from}; once DNS serves it (`herald check {waiting}`), run \
                         `herald dkim activate {waiting} SELECTOR` (`herald dkim list` shows \
                         the selector)"
                    ),
                );
            }
            Reply::new(
                550,
                "5.7.1",
                format!(
                    "no DKIM key aligned with From: domain {from}; herald signs only with an \
                     active key for {from} or a parent domain up to {org} (see `herald dkim \
                     generate --domain {org}`)"
                ),
            )
        })?;
    sign::sign_with(keys, &inspected.headers, parts)
}

/// Reads a configured key file; with `allow_dev_keys`, a missing one is generated first.
fn load_or_generate(
    k: &DkimKeyConfig,
    domain: &str,
    allow_dev_keys: bool,
) -> Result<keys::ParsedKey, keys::KeyError> {
    let missing = matches!(
        std::fs::symlink_metadata(&k.file),
        Err(ref e) if e.kind() == std::io::ErrorKind::NotFound
    );
    if missing && allow_dev_keys {
        let generated = keys::generate(k.algorithm, keys::MIN_RSA_BITS)?;
        keys::write_private_key(&k.file, &generated.pem).map_err(keys::KeyError::WriteDevKey)?;
        let record = keys::zone_txt_record(
            &format!("{}._domainkey.{domain}", k.selector.to_ascii_lowercase()),
            &generated.parsed.txt(),
        );
        tracing::warn!(
            "DEVELOPMENT DKIM KEY GENERATED at {} ({} for {domain}, selector {}) because \
             dkim.allow_dev_keys = true. Never rely on this in production; receivers verify it \
             only once you publish: {record}",
            k.file.display(),
            keys::display_algorithm(k.algorithm),
            k.selector,
        );
    }
    keys::load_file(&k.file, k.algorithm)
}
