//! BIMI in `herald check` and `herald dns`: the record herald prints for `[bimi]`, the logo
//! fetched over HTTPS (test CA) and checked against SVG Tiny PS, and a VMC whose logotype hash
//! must match the logo.

use std::net::IpAddr;

use rcgen::{CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::Value;

use super::{DOMAIN, World, message, status};
use crate::support::ca::{TestCa, Validity};
use crate::support::https::{HttpsServer, Response};

const HOST: &str = "bimi.example.test";

const LOGO: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.2" baseProfile="tiny-ps" viewBox="0 0 64 64">
<title>Example</title>
<rect x="8" y="8" width="48" height="48" fill="#0a6"/>
</svg>"##;

fn svg(body: &str) -> Response {
    Response {
        status: 200,
        content_type: "image/svg+xml".into(),
        body: body.as_bytes().to_vec(),
        location: None,
    }
}

/// A self-signed "VMC": the BIMI key usage and a logotype extension carrying `logo`'s SHA-256.
fn vmc(logo: &str) -> Response {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec![]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![
        1, 3, 6, 1, 5, 5, 7, 3, 31,
    ])];
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, logo.as_bytes());
    let mut content = vec![0x04, 0x20];
    content.extend_from_slice(hash.as_ref());
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 12],
            content,
        ));
    let pem = params.self_signed(&key).expect("self-signed").pem();
    Response {
        status: 200,
        content_type: "application/pem-certificate-chain".into(),
        body: pem.into_bytes(),
        location: None,
    }
}

#[test]
fn bimi_record_logo_and_certificate_are_checked_once_dmarc_is_enforced() {
    let w = World::new(&[("e1", "ed25519", true)]);
    let ca = TestCa::new();
    let root = w.dir.path().join("ca.pem");
    ca.write_root(&root);
    let listener = crate::support::listener();
    let addr = listener.local_addr().unwrap();
    let https = HttpsServer::start(
        listener,
        ca.server_config(&[HOST], Validity::Current),
        vec![("/logo.svg", svg(LOGO)), ("/vmc.pem", vmc(LOGO))],
    );
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("v4 loopback")
    };
    w.dns.add_a(HOST, ip);
    let logo_url = format!("https://{HOST}:{}/logo.svg", addr.port());
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!(
        "\n[tls]\nextra_roots = [\"{}\"]\n\n[bimi.\"{DOMAIN}\"]\nlogo = \"{logo_url}\"\n",
        root.display()
    ));
    std::fs::write(&w.config, text).unwrap();

    // `herald dns` prints the record; the operator publishes it with the rest.
    let records = w.publish_all();
    let bimi = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "bimi")
        .unwrap_or_else(|| panic!("no BIMI record in {records:#}"));
    assert_eq!(bimi["name"], format!("default._bimi.{DOMAIN}"));
    assert_eq!(bimi["value"], format!("v=BIMI1; l={logo_url}; a="));

    let check = || -> (i32, Value) { w.check() };
    let (code, report) = check();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(status(&report, "bimi.record"), "pass");
    assert_eq!(status(&report, "bimi.logo"), "pass", "{report:#}");
    assert_eq!(status(&report, "bimi.certificate"), "info");

    // A script, or an image from elsewhere, fails the logo.
    https.set_response(
        "/logo.svg",
        svg(&LOGO.replace("<title>", "<script>alert(1)</script><title>")),
    );
    let (code, report) = check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "bimi.logo"), "fail");
    assert!(message(&report, "bimi.logo").contains("<script>"));
    https.set_response(
        "/logo.svg",
        svg(&LOGO.replace(
            "<rect",
            "<image href=\"https://cdn.example.net/logo.png\" width=\"8\" height=\"8\"/><rect",
        )),
    );
    let (_, report) = check();
    assert_eq!(status(&report, "bimi.logo"), "fail");
    assert!(message(&report, "bimi.logo").contains("refers outside"));

    // A VMC for this logo passes; for another logo it fails.
    https.set_response("/logo.svg", svg(LOGO));
    let vmc_url = format!("https://{HOST}:{}/vmc.pem", addr.port());
    w.dns.set_txt(
        &format!("default._bimi.{DOMAIN}"),
        &format!("v=BIMI1; l={logo_url}; a={vmc_url}"),
    );
    let (_, report) = check();
    assert_eq!(status(&report, "bimi.certificate"), "pass", "{report:#}");
    assert_eq!(
        status(&report, "bimi.record"),
        "warn",
        "differs from [bimi]"
    );
    https.set_response("/vmc.pem", vmc(&LOGO.replace("#0a6", "#f00")));
    let (_, report) = check();
    assert_eq!(status(&report, "bimi.certificate"), "fail");
    assert!(message(&report, "bimi.certificate").contains("does not match"));

    // Before DMARC is enforced, BIMI is only mentioned.
    w.dns.set_txt(
        &format!("_dmarc.{DOMAIN}"),
        "v=DMARC1; p=none; rua=mailto:dmarc@example.test",
    );
    let (_, report) = check();
    assert_eq!(status(&report, "bimi.dmarc"), "info");
    assert!(message(&report, "bimi.dmarc").contains("p=none"));
}
