//! The HTTPS server against reqwest trusting the test CA.

use std::net::SocketAddr;

use super::WAIT;
use crate::support::ca::{TestCa, Validity};
use crate::support::https::{HttpsServer, Response, header};

fn https_client(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::Client {
    // reqwest is built without a provider: install aws-lc-rs as herald does (idempotent).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.root_pem().as_bytes()).expect("root PEM"),
        )
        .tls_built_in_root_certs(false)
        .resolve(host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(WAIT)
        .build()
        .expect("reqwest client")
}

#[tokio::test]
async fn https_serves_policies_and_records_posts() {
    let ca = TestCa::new();
    let host = "mta-sts.example.test";
    let listener = crate::support::listener();
    let policy = "/.well-known/mta-sts.txt";
    let server = HttpsServer::start(
        listener,
        ca.server_config(&[host], Validity::Current),
        vec![(
            policy,
            Response::mta_sts_policy("enforce", &["mx.example.test"], 86400),
        )],
    );
    let client = https_client(&ca, host, server.addr());
    let url = format!("https://{host}:{}{policy}", server.addr().port());
    let got = client.get(&url).send().await.expect("GET policy");
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "text/plain");
    assert_eq!(
        got.text().await.expect("body"),
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
    );
    assert_eq!(server.hits(policy), 1);

    let missing = format!("https://{host}:{}/nothing", server.addr().port());
    assert_eq!(
        client.get(&missing).send().await.expect("GET").status(),
        404
    );

    server.set_response(policy, Response::redirect("https://elsewhere.test/p"));
    let got = client.get(&url).send().await.expect("GET redirect");
    assert_eq!(got.status(), 302);
    assert_eq!(got.headers()["location"], "https://elsewhere.test/p");

    server.set_down(true);
    assert!(client.get(&url).send().await.is_err(), "server is down");
    server.set_down(false);
    assert_eq!(server.hits(policy), 2, "a refused connection is not a hit");

    let report = vec![0x1f, 0x8b, 1, 2, 3];
    let post = format!("https://{host}:{}/tlsrpt", server.addr().port());
    let got = client
        .post(&post)
        .header("content-type", "application/tlsrpt+gzip")
        .body(report.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        got.status(),
        404,
        "no route set: the POST is still recorded"
    );
    let posts = server.wait_for_posts(1, WAIT);
    assert_eq!(posts[0].0, "/tlsrpt");
    assert_eq!(
        header(&posts[0].1, "Content-Type"),
        Some("application/tlsrpt+gzip")
    );
    assert_eq!(posts[0].2, report);
}

#[tokio::test]
async fn https_expired_certificate_is_refused() {
    let ca = TestCa::new();
    let host = "mta-sts.expired.test";
    let listener = crate::support::listener();
    let server = HttpsServer::start(
        listener,
        ca.server_config(&[host], Validity::Expired),
        vec![("/", Response::text("x"))],
    );
    let client = https_client(&ca, host, server.addr());
    let err = client
        .get(format!("https://{host}:{}/", server.addr().port()))
        .send()
        .await
        .expect_err("expired certificate");
    assert!(
        format!("{err:?}").to_lowercase().contains("expired"),
        "{err:?}"
    );
    assert_eq!(server.hits("/"), 0);
}
