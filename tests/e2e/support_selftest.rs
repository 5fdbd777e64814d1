//! Self-tests of the fake internet (`tests/support`): each server driven by a real, independent
//! client (hickory-resolver and `dig` for DNS, mail-send and raw sockets for SMTP, reqwest for
//! HTTPS), so other tests can trust what these servers say.

mod dns;
mod https;
mod smtp;

use std::time::Duration;

use crate::support::ca::{self, TestCa, Validity};

/// Upper bound for any wait in these tests (never reached when things work).
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn ca_issues_pem_that_rustls_loads() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root.pem");
    ca.write_root(&root);
    let roots = rustls_pemfile::certs(&mut std::fs::read(&root).expect("read").as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("root PEM parses");
    assert_eq!(roots.len(), 1);
    let (chain, key) = ca.issue(&["mx.dest.test", "127.0.0.1"], Validity::Current);
    let certs = rustls_pemfile::certs(&mut chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain parses");
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .expect("key parses")
        .expect("one key");
    rustls::ServerConfig::builder_with_provider(ca::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("issued chain and key match");
}
