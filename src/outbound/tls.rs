//! Outbound TLS: our own rustls connectors, so certificate checking stays in herald's hands.
//!
//! Two connectors share one trust store ([`crate::trust::root_store`]: webpki roots plus
//! `[tls] extra_roots`):
//! - *strict* runs the WebPKI verifier and fails the handshake on any problem (MTA-STS enforce,
//!   `require_tls`, the smart host);
//! - *opportunistic* encrypts whatever certificate is presented; after the handshake the same
//!   WebPKI verifier is run on the presented chain so the result is recorded and logged;
//! - *DANE* ([`OutboundTls::for_dane`]): per MX host, the chain must match its TLSA records
//!   ([`super::dane::DaneVerifier`]) instead of the WebPKI roots.

use std::sync::Arc;

use mail_auth::report::tlsrpt::ResultType;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::dane::{DaneTarget, DaneVerifier, TlsaMismatch};
use crate::config::TlsConfig;

/// The connectors and verifier used for every outbound TLS session.
#[derive(Clone)]
pub(crate) struct OutboundTls {
    /// Fails the handshake unless the certificate verifies and matches the host name.
    pub strict: TlsConnector,
    /// Accepts any certificate; verification is recorded with [`OutboundTls::verify`].
    pub opportunistic: TlsConnector,
    verifier: Arc<WebPkiServerVerifier>,
    /// Set on the copy made for a DANE-protected host: [`OutboundTls::verify`] runs it.
    dane: Option<Arc<DaneVerifier>>,
}

impl OutboundTls {
    /// Builds the connectors from the webpki roots and `[tls] extra_roots`.
    pub(crate) fn new(cfg: &TlsConfig) -> anyhow::Result<OutboundTls> {
        let provider = crate::trust::provider();
        let roots = crate::trust::root_store(cfg)?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| anyhow::anyhow!("cannot build the certificate verifier: {e}"))?;
        let strict = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
            .with_webpki_verifier(verifier.clone())
            .with_no_client_auth();
        let opportunistic = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                inner: verifier.clone(),
            }))
            .with_no_client_auth();
        Ok(OutboundTls {
            strict: TlsConnector::from(Arc::new(strict)),
            opportunistic: TlsConnector::from(Arc::new(opportunistic)),
            verifier,
            dane: None,
        })
    }

    /// A copy whose strict connector (and [`OutboundTls::verify`]) checks the chain against
    /// the TLSA records of `target` instead of the WebPKI roots.
    pub(crate) fn for_dane(&self, target: Arc<DaneTarget>) -> anyhow::Result<OutboundTls> {
        let provider = crate::trust::provider();
        let verifier = Arc::new(DaneVerifier::new(target, provider.clone()));
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(OutboundTls {
            strict: TlsConnector::from(Arc::new(config)),
            opportunistic: self.opportunistic.clone(),
            verifier: self.verifier.clone(),
            dane: Some(verifier),
        })
    }

    /// The name to send in SNI when connecting to MX host `host`: for a DANE-protected host,
    /// its TLSA base domain (RFC 7672 §8.1: the end of a secure CNAME chain, whose server
    /// may hold a certificate for that name only); otherwise `host` itself.
    pub(crate) fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        match &self.dane {
            Some(dane) => dane.target().base.as_str(),
            None => host.trim_end_matches('.'),
        }
    }

    /// Runs the real WebPKI verification on a presented chain for `host`.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        host: &str,
    ) -> Result<(), rustls::Error> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        let name = ServerName::try_from(host.trim_end_matches('.').to_string())
            .map_err(|_| rustls::Error::General(format!("{host:?} is not a valid TLS name")))?;
        if let Some(dane) = &self.dane {
            return dane
                .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
                .map(|_| ());
        }
        self.verifier
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
    }
}

/// The opportunistic verifier: the handshake signatures are still checked for real, but any
/// certificate chain is accepted so that mail is at least encrypted.
#[derive(Debug)]
struct AcceptAnyCertificate {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS-RPT result type (RFC 8460 §4.3) for a TLS failure.
pub(crate) fn result_type(error: &rustls::Error) -> ResultType {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                ResultType::CertificateHostMismatch
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                ResultType::CertificateExpired
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                ResultType::CertificateNotTrusted
            }
            CertificateError::Other(other) if other.0.downcast_ref::<TlsaMismatch>().is_some() => {
                ResultType::TlsaInvalid
            }
            _ => ResultType::ValidationFailure,
        },
        rustls::Error::NoCertificatesPresented => ResultType::CertificateNotTrusted,
        _ => ResultType::ValidationFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_map_to_tlsrpt_result_types() {
        let cert = |e| rustls::Error::InvalidCertificate(e);
        assert_eq!(
            result_type(&cert(CertificateError::NotValidForName)),
            ResultType::CertificateHostMismatch
        );
        assert_eq!(
            result_type(&cert(CertificateError::Expired)),
            ResultType::CertificateExpired
        );
        assert_eq!(
            result_type(&cert(CertificateError::UnknownIssuer)),
            ResultType::CertificateNotTrusted
        );
        assert_eq!(
            result_type(&cert(CertificateError::Revoked)),
            ResultType::ValidationFailure
        );
        assert_eq!(
            result_type(&rustls::Error::HandshakeNotComplete),
            ResultType::ValidationFailure
        );
    }
}
