//! TLS trust and crypto set-up shared by every TLS user in herald (inbound listener, outbound
//! SMTP, MTA-STS policy fetch, TLS-RPT uploads): one crypto provider, one trust store, one
//! PEM reader.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// The crypto provider every rustls configuration in herald is built with (aws-lc-rs, the
/// backend mail-auth signs with too).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs [`provider`] as the process-wide rustls default (reqwest needs one); a no-op when
/// one is already installed.
pub(crate) fn install_default_provider() {
    let _ = CryptoProvider::install_default(rustls::crypto::aws_lc_rs::default_provider());
}

/// The trust roots for outbound TLS: the web PKI (webpki-roots) plus `[tls] extra_roots`.
pub(crate) fn root_store(tls: &TlsConfig) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in &tls.extra_roots {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("tls.extra_roots: cannot read {}: {e}", path.display()))?;
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                anyhow::anyhow!("tls.extra_roots: {} is not valid PEM: {e}", path.display())
            })?;
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(
                    "tls.extra_roots: {} holds an unusable CA: {e}",
                    path.display()
                )
            })?;
            found += 1;
        }
        if found == 0 {
            anyhow::bail!(
                "tls.extra_roots: {} contains no PEM certificate",
                path.display()
            );
        }
    }
    Ok(roots)
}

/// Why a PEM file gives no certificate or key, naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{path}: bad PEM: {why}")]
    BadPem {
        /// The file.
        path: String,
        /// The parser's complaint.
        why: String,
    },
    /// The file holds no block of the kind wanted.
    #[error("{path} holds no {block} block")]
    Missing {
        /// The file.
        path: String,
        /// `CERTIFICATE` or `PRIVATE KEY`.
        block: &'static str,
    },
}

fn read_pem(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Unreadable {
        path: path.display().to_string(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order; an error a person can act on when the
/// file cannot be read, is not PEM, or holds none.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::BadPem {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            path: path.display().to_string(),
            block: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::Missing {
            path: path.display().to_string(),
            block: "PRIVATE KEY",
        },
        other => PemError::BadPem {
            path: path.display().to_string(),
            why: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a pem").expect("write");
        let tls = TlsConfig {
            extra_roots: vec![path.clone()],
            ..TlsConfig::default()
        };
        let err = root_store(&tls).expect_err("no certificate").to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        assert!(
            load_certs(&path)
                .expect_err("none")
                .to_string()
                .contains("no CERTIFICATE")
        );
        assert!(
            load_key(&path)
                .expect_err("none")
                .to_string()
                .contains("no PRIVATE KEY")
        );
    }

    #[test]
    fn a_generated_pair_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = rcgen::generate_simple_self_signed(vec!["herald.test".into()]).expect("pair");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, pair.cert.pem()).expect("cert");
        std::fs::write(&key, pair.key_pair.serialize_pem()).expect("key");
        assert_eq!(load_certs(&cert).expect("certs").len(), 1);
        assert!(load_key(&key).is_ok());
    }
}
