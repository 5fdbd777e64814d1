//! DKIM signing with keys aligned to the `From:` domain, and key management.
//!
//! Interface used by the rest of herald (keep it stable):
//! - [`Signer::load`] reads and checks every configured key at start-up; errors name the file.
//! - [`Signer::sign`] refuses a message without exactly one `From:` address or with no aligned
//!   key (an SMTP [`Reply`]), otherwise signs it off the async reactor and returns the bytes to
//!   spool (signatures prepended).
//! - [`Signer::published_keys`] lists every key's public half for `herald dns` and `herald check`.
//!
//! STUB: signs nothing yet; the DKIM work replaces the body of this module.

use crate::config::{Config, DkimAlgorithm};
use crate::reply::Reply;

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

/// Signs accepted messages with aligned keys.
pub struct Signer {}

impl Signer {
    /// Loads every configured key, refusing bad files by name.
    pub fn load(_cfg: &Config) -> anyhow::Result<Signer> {
        Ok(Signer {})
    }

    /// Signs `message`, or refuses it with an SMTP reply.
    pub async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, Reply> {
        Ok(message)
    }

    /// Every configured key's public half.
    pub fn published_keys(&self) -> Vec<PublishedKey> {
        Vec::new()
    }
}
