//! The certificate in force on the public listener, and its files in `[web] dir`.
//!
//! [`CertResolver`] is the rustls `ResolvesServerCert` of the listener: a renewal replaces the
//! certificate it holds, so the next handshake uses the new one without a restart. It also
//! answers ACME TLS-ALPN-01 validation handshakes (RFC 8737: ALPN `acme-tls/1`) with the
//! challenge certificate of the name asked for, and with nothing else.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A certificate chain and its key, as issued, with what herald needs to know about it.
#[derive(Clone)]
pub(crate) struct Issued {
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The names on the leaf (subjectAltName dNSName entries).
    pub names: Vec<String>,
    /// notBefore and notAfter of the leaf, unix seconds.
    pub not_before: i64,
    /// notAfter of the leaf, unix seconds.
    pub not_after: i64,
    /// The signing key rustls uses.
    pub certified: Arc<CertifiedKey>,
}

/// Why a certificate and key cannot be put in force (the old one stays; the words go to the
/// log and `herald check`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// The chain is not PEM.
    #[error("bad certificate PEM: {0}")]
    CertPem(String),
    /// The chain holds no certificate.
    #[error("no certificate in the chain")]
    EmptyChain,
    /// The leaf certificate does not parse as X.509.
    #[error("the certificate does not parse: {0}")]
    Unparsable(String),
    /// The key is not PEM.
    #[error("bad private key PEM: {0}")]
    KeyPem(String),
    /// rustls cannot sign with the key.
    #[error("unusable private key: {0}")]
    UnusableKey(String),
    /// A stored file cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Issued {
    /// Reads a chain and key from PEM text; `Err` says what is wrong with them.
    pub(crate) fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Issued, CertError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::CertPem(e.to_string()))?;
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let (names, not_before, not_after) = leaf_facts(leaf)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| CertError::KeyPem(e.to_string()))?;
        let signing = crate::trust::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::UnusableKey(e.to_string()))?;
        Ok(Issued {
            chain_pem: chain_pem.to_string(),
            key_pem: key_pem.to_string(),
            names,
            not_before,
            not_after,
            certified: Arc::new(CertifiedKey::new(chain, signing)),
        })
    }

    /// True when every name in `wanted` is on the certificate.
    pub(crate) fn covers(&self, wanted: &[String]) -> bool {
        wanted
            .iter()
            .all(|w| self.names.iter().any(|n| n.eq_ignore_ascii_case(w)))
    }

    /// When to renew: `renew_before` ahead of notAfter, or once two thirds of the lifetime
    /// are gone, whichever comes first (short-lived certificates renew in proportion).
    pub(crate) fn renew_at(&self, renew_before: std::time::Duration) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        let by_margin = self.not_after - renew_before.as_secs() as i64;
        let by_share = self.not_before + lifetime * 2 / 3;
        by_margin.min(by_share)
    }
}

/// The leaf's dNSName entries, notBefore and notAfter.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), CertError> {
    use x509_cert::der::Decode;
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertError::Unparsable(e.to_string()))?;
    let validity = &cert.tbs_certificate.validity;
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let mut names = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == SubjectAltName::OID
            && let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes())
        {
            for name in san.0 {
                if let GeneralName::DnsName(d) = name {
                    names.push(d.as_str().to_ascii_lowercase());
                }
            }
        }
    }
    Ok((names, secs(&validity.not_before), secs(&validity.not_after)))
}

/// The listener's certificate source: the issued certificate, and challenge certificates
/// while an order is being validated.
#[derive(Default)]
pub(crate) struct CertResolver {
    current: RwLock<Option<Issued>>,
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    /// Puts `issued` in force for every handshake from now on.
    pub(crate) fn install(&self, issued: Issued) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(issued);
    }

    /// The certificate in force, if any.
    pub(crate) fn current(&self) -> Option<Issued> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with `key` until [`CertResolver::clear_challenge`].
    pub(crate) fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), key);
    }

    /// Stops answering the challenge for `name`.
    pub(crate) fn clear_challenge(&self, name: &str) {
        self.challenges
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|i| i.certified.clone())
    }
}

/// Where the certificate and key live in `[web] dir`.
pub(crate) struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    /// The files under `dir`.
    pub(crate) fn new(dir: &Path) -> CertFiles {
        CertFiles {
            dir: dir.to_path_buf(),
        }
    }

    fn chain(&self) -> PathBuf {
        self.dir.join("certificate.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("certificate.key")
    }

    /// The stored certificate; `Ok(None)` when there is none yet.
    pub(crate) fn load(&self) -> Result<Option<Issued>, CertError> {
        let unreadable = |path: PathBuf| {
            move |source| CertError::Unreadable {
                path: path.display().to_string(),
                source,
            }
        };
        let chain = match fs::read_to_string(self.chain()) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(self.chain())(e)),
        };
        let key = fs::read_to_string(self.key()).map_err(unreadable(self.key()))?;
        Issued::from_pem(&chain, &key).map(Some)
    }

    /// Stores a certificate: the key first (mode 0600), each file replaced whole.
    pub(crate) fn store(&self, issued: &Issued) -> std::io::Result<()> {
        write_private(&self.dir, &self.key(), issued.key_pem.as_bytes())?;
        write_private(&self.dir, &self.chain(), issued.chain_pem.as_bytes())
    }
}

/// Replaces `path` with `bytes` in a file created with mode 0600 (never readable by others,
/// not even for an instant), fsynced, renamed into place, directory fsynced.
pub(crate) fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        crate::fsutil::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
