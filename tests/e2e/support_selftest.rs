//! Self-tests of the fake internet (`tests/support`): each server driven by a real, independent
//! client (hickory-resolver and `dig` for DNS, mail-send and raw sockets for SMTP, reqwest for
//! HTTPS), so other tests can trust what these servers say.

mod dns;
mod https;
mod smtp;

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::support::ca::{self, TestCa, Validity};

/// Upper bound for any wait in these tests (never reached when things work).
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn ca_issues_pem_that_rustls_loads() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.pem");
    ca.write_root(&root);
    let roots = CertificateDer::pem_slice_iter(&std::fs::read(&root).expect("read"))
        .collect::<Result<Vec<_>, _>>()
        .expect("root PEM parses");
    assert_eq!(roots.len(), 1);
    let (chain, key) = ca.issue(&["mx.dest.test", "127.0.0.1"], Validity::Current);
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain parses");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key parses: one key");
    rustls::ServerConfig::builder_with_provider(ca::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("issued chain and key match");
}

#[test]
fn ca_writes_issued_key_0600() {
    use std::os::unix::fs::PermissionsExt;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    ca.write_issued(&["herald.example.test"], Validity::Current, &cert, &key);
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&cert).expect("cert");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
}

#[test]
fn set_creates_tables_and_replaces_values() {
    let mut cfg = toml::Table::new();
    crate::support::set(&mut cfg, "delivery.port", 2525);
    crate::support::set(&mut cfg, "dns.servers", vec!["127.1.2.3:53".to_string()]);
    crate::support::set(&mut cfg, "delivery.port", 2526);
    assert_eq!(cfg["delivery"]["port"].as_integer(), Some(2526));
    assert_eq!(cfg["dns"]["servers"][0].as_str(), Some("127.1.2.3:53"));
}

#[test]
fn point_at_sets_dns_and_extra_roots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = crate::support::herald::base_config(dir.path());
    let dns = crate::support::dns::DnsServer::start();
    let ca = TestCa::new();
    crate::support::herald::point_at(&mut cfg, dir.path(), &dns, &ca);
    assert_eq!(
        cfg["dns"]["servers"][0].as_str(),
        Some(dns.addr.to_string().as_str())
    );
    let root = cfg["tls"]["extra_roots"][0].as_str().expect("root path");
    assert_eq!(std::fs::read_to_string(root).expect("root"), ca.root_pem());
    assert!(cfg["tls"]["allow_dev_certs"].as_bool().expect("kept"));
}
