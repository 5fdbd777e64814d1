//! The rustls verifier for a DANE-protected MX host (RFC 7672 §3.1): the chain must match one
//! of the host's usable TLSA records. DANE-EE(3) binds the end-entity certificate or key (no
//! name, no expiry); DANE-TA(2) makes the matching certificate of the chain the only trust
//! anchor and checks the chain to it, its dates and the name (§3.2).

use std::sync::Arc;

use aws_lc_rs::digest;
use hickory_resolver::proto::rr::rdata::TLSA;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::DaneTarget;

/// Whether `cert` matches the selector and matching type of `record`.
fn matches(record: &TLSA, cert: &CertificateDer<'_>) -> bool {
    let selected: Vec<u8> = match record.selector {
        Selector::Full => cert.as_ref().to_vec(),
        Selector::Spki => match webpki::EndEntityCert::try_from(cert) {
            Ok(parsed) => parsed.subject_public_key_info().as_ref().to_vec(),
            Err(_) => return false,
        },
        _ => return false,
    };
    match record.matching {
        Matching::Raw => selected == record.cert_data,
        Matching::Sha256 => {
            digest::digest(&digest::SHA256, &selected).as_ref() == record.cert_data.as_slice()
        }
        Matching::Sha512 => {
            digest::digest(&digest::SHA512, &selected).as_ref() == record.cert_data.as_slice()
        }
        _ => false,
    }
}

/// A chain that matches no TLSA record (reported as `tlsa-invalid`).
#[derive(Debug)]
pub(crate) struct TlsaMismatch(pub String);

impl std::fmt::Display for TlsaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsaMismatch {}

/// The rustls verifier for a DANE-protected host.
#[derive(Debug)]
pub(crate) struct DaneVerifier {
    target: Arc<DaneTarget>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    /// The host this verifier checks (its TLSA base domain, MX host and recipient domain).
    pub(crate) fn target(&self) -> &DaneTarget {
        &self.target
    }

    /// A verifier for `target`'s records.
    pub(crate) fn new(target: Arc<DaneTarget>, provider: Arc<CryptoProvider>) -> DaneVerifier {
        DaneVerifier { target, provider }
    }

    fn mismatch(&self, why: String) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            TlsaMismatch(why),
        ))))
    }

    /// Checks a chain under DANE-TA(2): `anchor` (a certificate of the chain that matched a
    /// record) is the only trust anchor; WebPKI path rules, expiry and the name apply.
    fn verify_ta(
        &self,
        anchor: &CertificateDer<'_>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|e| self.mismatch(format!("the DANE-TA certificate is unusable: {e}")))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("DANE-TA verifier: {e}")))?;
        let mut last = None;
        for name in self.target.reference_names() {
            let Ok(server_name) = ServerName::try_from(name) else {
                continue;
            };
            match verifier.verify_server_cert(end_entity, intermediates, &server_name, &[], now) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let name_only = matches!(
                        e,
                        rustls::Error::InvalidCertificate(
                            CertificateError::NotValidForName
                                | CertificateError::NotValidForNameContext { .. }
                        )
                    );
                    if !name_only {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.target.records.is_empty() {
            // Only unusable records: encryption is mandatory, authentication impossible.
            return Ok(ServerCertVerified::assertion());
        }
        let ee = self
            .target
            .records
            .iter()
            .filter(|r| r.cert_usage == CertUsage::DaneEe);
        if ee.clone().any(|r| matches(r, end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        let mut ta_error = None;
        for record in self
            .target
            .records
            .iter()
            .filter(|r| r.cert_usage == CertUsage::DaneTa)
        {
            for anchor in intermediates.iter().filter(|c| matches(record, c)) {
                match self.verify_ta(anchor, end_entity, intermediates, now) {
                    Ok(()) => return Ok(ServerCertVerified::assertion()),
                    Err(e) => ta_error = Some(e),
                }
            }
        }
        if let Some(e) = ta_error {
            return Err(e);
        }
        Err(self.mismatch(format!(
            "no TLSA record of {} matches the certificate chain presented",
            self.target.host
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TLSA {
        TLSA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data,
        )
    }

    #[test]
    fn full_certificate_and_digest_matching() {
        let cert = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        let sha256 = digest::digest(&digest::SHA256, cert.as_ref())
            .as_ref()
            .to_vec();
        let sha512 = digest::digest(&digest::SHA512, cert.as_ref())
            .as_ref()
            .to_vec();
        assert!(matches(&tlsa(3, 0, 0, cert.as_ref().to_vec()), &cert));
        assert!(matches(&tlsa(3, 0, 1, sha256.clone()), &cert));
        assert!(matches(&tlsa(3, 0, 2, sha512), &cert));
        let mut wrong = sha256;
        wrong[0] ^= 1;
        assert!(!matches(&tlsa(3, 0, 1, wrong), &cert));
    }

    #[test]
    fn spki_selector_matches_a_ca_certificate_key() {
        // DANE-TA(2) 1 1: the SHA-256 of the CA's SubjectPublicKeyInfo, as `openssl x509
        // -pubkey | openssl pkey -pubin -outform DER | sha256sum` computes it.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let spki = digest::digest(&digest::SHA256, &key.public_key_der())
            .as_ref()
            .to_vec();
        assert!(matches(&tlsa(2, 1, 1, spki.clone()), ca.der()));
        let other = rcgen::KeyPair::generate().unwrap();
        let other_spki = digest::digest(&digest::SHA256, &other.public_key_der())
            .as_ref()
            .to_vec();
        assert!(!matches(&tlsa(2, 1, 1, other_spki), ca.der()));
    }
}
