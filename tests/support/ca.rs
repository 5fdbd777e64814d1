//! A certificate authority made at test time (rcgen, aws-lc-rs), so that TLS in tests is real
//! TLS with real chains: herald trusts the root through `[tls] extra_roots`, test clients through
//! [`TestCa::client_config_trusting`]. Nothing here is ever written to the repository.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Whether an issued certificate is valid now or expired (for "bad certificate" tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Valid from 2020 to 2099.
    Current,
    /// Valid only during 2020: expired for any test run today.
    Expired,
}

/// A root CA whose key lives only in memory for the life of the test.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
    root_der: CertificateDer<'static>,
    root_pem: String,
}

/// The crypto provider every TLS config in the test support uses (explicit, not a process
/// default, so tests never depend on which provider another crate installed first).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    /// Generates a fresh root CA ("Herald Test Root CA").
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Herald Test Root CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "herald tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let cert = params.self_signed(&key).expect("self-sign CA");
        let root_pem = cert.pem();
        let root_der = cert.der().clone();
        TestCa {
            cert,
            key,
            root_der,
            root_pem,
        }
    }

    /// The root certificate in PEM.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The root certificate in DER (for `reqwest::Certificate::from_der` or a root store).
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    /// Writes the root PEM to `path`, for herald's `[tls] extra_roots`.
    pub fn write_root(&self, path: &Path) {
        std::fs::write(path, self.root_pem.as_bytes()).expect("write test CA root");
    }

    /// Issues a server certificate for `names` (DNS names, wildcards like `*.example.test`, or
    /// IP addresses). Returns (certificate chain PEM: leaf then nothing else, since the root is
    /// the issuer; PKCS#8 private key PEM).
    pub fn issue(&self, names: &[&str], validity: Validity) -> (String, String) {
        let (cert, key) = self.issue_der(names, validity);
        let pem = pem_block("CERTIFICATE", &cert);
        let key_pem = pem_block("PRIVATE KEY", key.secret_pkcs8_der());
        (pem, key_pem)
    }

    /// Issues a certificate for `names` and writes it (PEM chain) and its key (PEM, mode 0600)
    /// to the given paths, e.g. for herald's own `[tls] cert` / `key`.
    pub fn write_issued(&self, names: &[&str], validity: Validity, cert: &Path, key: &Path) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let (chain, key_pem) = self.issue(names, validity);
        std::fs::write(cert, chain).expect("write certificate");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(key)
            .expect("create key file");
        f.write_all(key_pem.as_bytes()).expect("write key");
    }

    /// Like [`TestCa::issue`] but in DER, ready for rustls.
    pub fn issue_der(
        &self,
        names: &[&str],
        validity: Validity,
    ) -> (CertificateDer<'static>, PrivatePkcs8KeyDer<'static>) {
        let key = KeyPair::generate().expect("generate leaf key");
        let params = leaf_params(names, validity);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
        (cert.der().clone(), key_der)
    }

    /// A rustls server config presenting a certificate for `names` issued by this CA.
    pub fn server_config(&self, names: &[&str], validity: Validity) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue_der(names, validity);
        server_config_from(vec![cert], PrivateKeyDer::Pkcs8(key))
    }

    /// A server config presenting a leaf for `names` followed by this CA's root, as a DANE-TA(2)
    /// server must (the trust anchor travels in the chain, RFC 7672 §3.1.2).
    pub fn server_config_with_root(
        &self,
        names: &[&str],
        validity: Validity,
    ) -> Arc<rustls::ServerConfig> {
        let (cert, key) = self.issue_der(names, validity);
        server_config_from(vec![cert, self.root_der.clone()], PrivateKeyDer::Pkcs8(key))
    }

    /// A rustls client config trusting only this CA's root (for test clients).
    pub fn client_config_trusting(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root_der.clone()).expect("add test root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A server config with a self-signed certificate for `names` (trusted by nobody: for
/// "untrusted certificate" tests).
pub fn self_signed_server_config(names: &[&str]) -> Arc<rustls::ServerConfig> {
    let key = KeyPair::generate().expect("generate key");
    let params = leaf_params(names, Validity::Current);
    let cert = params.self_signed(&key).expect("self-sign");
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    server_config_from(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key_der))
}

/// A self-signed certificate for `names` with the given validity, and a server config
/// presenting it: the certificate a DANE-EE(3) server may use (no CA, any name, any dates).
pub fn self_signed_der(
    names: &[&str],
    validity: Validity,
) -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let key = KeyPair::generate().expect("generate key");
    let params = leaf_params(names, validity);
    let cert = params.self_signed(&key).expect("self-sign");
    let key_der = PrivatePkcs8KeyDer::from(key.serialize_der());
    let der = cert.der().clone();
    (
        der.clone(),
        server_config_from(vec![der], PrivateKeyDer::Pkcs8(key_der)),
    )
}

fn leaf_params(names: &[&str], validity: Validity) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf names are valid SANs");
    let cn = names
        .first()
        .cloned()
        .unwrap_or_else(|| "herald test".into());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    match validity {
        Validity::Current => {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2099, 1, 1);
        }
        Validity::Expired => {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
    }
    params
}

fn server_config_from(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate and key match");
    Arc::new(config)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
