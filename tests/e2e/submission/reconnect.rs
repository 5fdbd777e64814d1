//! Apps that open a connection per message: the second login with the same password is
//! answered from the AUTH cache (no argon2, seen through herald's debug log, not timing), a
//! wrong password still fails, and a reconnecting TLS client resumes its session on 587 and
//! 465 (TLS 1.3 tickets; TLS 1.2 tickets and session IDs).

use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use rustls::client::{Resumption, Tls12Resumption};

use super::client::Client;
use super::{BODY, Rig, rig, rig_and_ca, set};
use crate::support::ca::provider;
use crate::support::herald::{DEMO_PASSWORD, Herald};

const ARGON2: &str = "AUTH argon2id verification";
const CACHE_HIT: &str = "matched the AUTH cache";

fn argon2_runs(h: &Herald) -> usize {
    h.log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains(ARGON2))
        .count()
}

/// A fresh connection from a fresh IP through STARTTLS, EHLO'd, ready for AUTH.
async fn starttls(rig: &Rig, tls: Arc<rustls::ClientConfig>) -> Client {
    let mut c = Client::plain(rig.addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    c.expect("EHLO app.test", 250).await;
    c.starttls(tls).await;
    c.expect("EHLO app.test", 250).await;
    c
}

#[tokio::test]
async fn a_second_login_skips_argon2_and_a_wrong_password_still_fails() {
    let mut rig = rig(|_| {});
    let mut c = starttls(&rig, rig.tls.clone()).await;
    c.auth_plain("demo", DEMO_PASSWORD, 235).await;
    rig.herald.wait_for_log(ARGON2, Duration::from_secs(10));
    c.expect("QUIT", 221).await;

    // Reconnect and log in again, as an app sending its next message does.
    let mut c = starttls(&rig, rig.tls.clone()).await;
    c.auth_plain("demo", DEMO_PASSWORD, 235).await;
    rig.herald.wait_for_log(CACHE_HIT, Duration::from_secs(10));
    // Every log line of that login was written before its 235.
    assert_eq!(argon2_runs(&rig.herald), 1, "the second login ran argon2");
    let r = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(r.code, 250, "{r:?}");

    // A wrong password after the cached success is checked with argon2 and refused.
    let mut w = starttls(&rig, rig.tls.clone()).await;
    let r = w.auth_plain("demo", "not-the-password", 535).await;
    assert!(r.text.starts_with("5.7.8"), "{r:?}");
    assert_eq!(argon2_runs(&rig.herald), 2);
    // A prefix or extension of the right password is just as wrong.
    let mut w = starttls(&rig, rig.tls.clone()).await;
    w.auth_plain("demo", &format!("{DEMO_PASSWORD}x"), 535)
        .await;
    assert_eq!(argon2_runs(&rig.herald), 3);
    // The cached success itself is still there.
    let mut c = starttls(&rig, rig.tls.clone()).await;
    c.auth_plain("demo", DEMO_PASSWORD, 235).await;
    assert_eq!(argon2_runs(&rig.herald), 3);
}

#[tokio::test]
async fn with_auth_cache_ttl_zero_every_login_runs_argon2() {
    let mut rig = rig(|cfg| set(cfg, "smtp", "auth_cache_ttl", "0s"));
    for n in 1..=2 {
        let mut c = starttls(&rig, rig.tls.clone()).await;
        c.auth_plain("demo", DEMO_PASSWORD, 235).await;
        rig.herald.wait_for_log(ARGON2, Duration::from_secs(10));
        assert_eq!(argon2_runs(&rig.herald), n);
    }
    assert!(
        !rig.herald
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(CACHE_HIT))
    );
}

#[tokio::test]
async fn a_reconnecting_tls13_client_resumes_on_587_and_465() {
    let rig = rig(|_| {});
    // One client config for every connection: its session store carries the tickets over.
    let tls = rig.tls.clone();
    let mut first = starttls(&rig, tls.clone()).await;
    assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full));
    first.expect("QUIT", 221).await;
    let mut again = starttls(&rig, tls.clone()).await;
    assert_eq!(again.handshake_kind(), Some(HandshakeKind::Resumed));
    again.auth_plain("demo", DEMO_PASSWORD, 235).await;
    let r = again
        .submit("app@example.test", &["r@example.org"], BODY)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    again.expect("QUIT", 221).await;
    let mut implicit = Client::tls_from(
        crate::support::free_ip(),
        rig.addr("submissions"),
        tls.clone(),
    )
    .await;
    assert_eq!(implicit.reply().await.code, 220);
    assert_eq!(implicit.handshake_kind(), Some(HandshakeKind::Resumed));
    implicit.expect("EHLO app.test", 250).await;

    // A client without a session store gets a full handshake every time.
    let mut fresh = (*tls).clone();
    fresh.resumption = Resumption::disabled();
    let c = starttls(&rig, Arc::new(fresh)).await;
    assert_eq!(c.handshake_kind(), Some(HandshakeKind::Full));
}

#[tokio::test]
async fn a_reconnecting_tls12_client_resumes_by_ticket_and_by_session_id() {
    let (rig, ca) = rig_and_ca(|_| {});
    for how in [
        Tls12Resumption::SessionIdOrTickets,
        Tls12Resumption::SessionIdOnly,
    ] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.root_der()).expect("root");
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.resumption = Resumption::in_memory_sessions(16).tls12_resumption(how);
        let tls = Arc::new(cfg);
        let mut first = starttls(&rig, tls.clone()).await;
        assert_eq!(first.handshake_kind(), Some(HandshakeKind::Full), "{how:?}");
        first.expect("QUIT", 221).await;
        let mut again = starttls(&rig, tls.clone()).await;
        assert_eq!(
            again.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{how:?}"
        );
        again.auth_plain("demo", DEMO_PASSWORD, 235).await;
    }
}
