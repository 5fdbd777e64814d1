//! Producing the `DKIM-Signature:` headers with mail-auth: relaxed/relaxed, SHA-256, the signed
//! header list from [`super::align`], no `l=`; one signature per active key of the domain.

use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, DkimKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use crate::config::DkimAlgorithm;
use crate::reply::Reply;

/// A key shared between the loaded configuration and the signing threads.
pub(crate) struct SharedKey(pub(crate) Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// One active key, as signing needs it.
pub(crate) struct ActiveKey {
    pub(crate) domain: String,
    pub(crate) selector: String,
    pub(crate) algorithm: DkimAlgorithm,
    pub(crate) key: Arc<DkimKey>,
}

/// Signs the message made of `parts` (in order; e.g. herald's headers, then the client's
/// message mapped from disk) with every key in `keys` (all of one domain) over `headers`, and
/// returns the `DKIM-Signature:` fields to put in front of it.
pub(crate) fn sign_with(
    keys: &[Arc<ActiveKey>],
    headers: &[String],
    parts: &[&[u8]],
) -> Result<Vec<u8>, Reply> {
    let mut out = Vec::with_capacity(600 * keys.len());
    for k in keys {
        let signature = DkimSigner::from_key(SharedKey(k.key.clone()))
            .domain(k.domain.as_str())
            .selector(k.selector.as_str())
            .headers(headers.iter().map(String::as_str))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign_chained(parts.iter().copied())
            .map_err(|e| {
                tracing::error!(
                    domain = %k.domain,
                    selector = %k.selector,
                    algorithm = k.algorithm.as_str(),
                    "DKIM signing failed: {e}"
                );
                Reply::new(
                    451,
                    "4.3.0",
                    "DKIM signing failed on our side; please try again later",
                )
            })?;
        signature.write_header(&mut out);
        crate::metrics::dkim_signature(&k.domain, k.algorithm.as_str());
    }
    Ok(out)
}
