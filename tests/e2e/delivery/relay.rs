//! The smart host: everything through `[delivery] relay_host`, with AUTH and required TLS.

use super::common::{WAIT, World, logged, set, start, wait_finished};
use crate::support::ca::{self, TestCa, Validity};
use crate::support::smtp_sink::SinkOptions;

fn relay_config(w: &World, root: &std::path::Path, password: &str) -> toml::Table {
    let mut cfg = w.config();
    set(
        &mut cfg,
        "delivery",
        "relay_host",
        format!("relay.example.net:{}", w.port),
    );
    set(&mut cfg, "delivery", "relay_username", "herald");
    set(&mut cfg, "delivery", "relay_password", password);
    set(
        &mut cfg,
        "tls",
        "extra_roots",
        toml::Value::Array(vec![root.display().to_string().into()]),
    );
    cfg
}

#[test]
fn smart_host_with_auth_and_tls_carries_every_domain_in_one_transaction() {
    let ca = TestCa::new();
    let mut w = World::new(1);
    let root = w.dir.path().join("test-root.pem");
    ca.write_root(&root);
    let relay = w.sink(
        "relay.example.net",
        SinkOptions {
            tls: Some(ca.server_config(&["relay.example.net"], Validity::Current)),
            require_auth: Some(("herald".into(), "relay-secret".into())),
            require_tls: true,
            ..SinkOptions::default()
        },
    );
    // No MX anywhere: the recipients' domains are never looked up.
    let id = w.store(
        "app@example.test",
        &["a@one.example", "b@two.example"],
        "via-relay",
    );
    let mut h = start(&w, relay_config(&w, &root, "relay-secret"));
    let got = relay.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &id);
    assert_eq!(got[0].rcpts, vec!["a@one.example", "b@two.example"]);
    assert_eq!(got[0].authenticated.as_deref(), Some("herald"));
    assert!(got[0].tls.is_some(), "TLS before AUTH");
    assert_eq!(got[0].sni.as_deref(), Some("relay.example.net"));
    let line = logged(&h, "delivery attempt").remove(0);
    assert!(
        line.contains("policy=required") && line.contains("cert_verified=true"),
        "{line}"
    );
    assert!(
        !h.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("relay-secret")),
        "the relay password is never logged"
    );
}

#[test]
fn smart_host_with_an_untrusted_certificate_is_never_used_in_clear() {
    let ca = TestCa::new();
    let mut w = World::new(1);
    let root = w.dir.path().join("test-root.pem");
    ca.write_root(&root);
    let relay = w.sink(
        "relay.example.net",
        SinkOptions {
            tls: Some(ca::self_signed_server_config(&["relay.example.net"])),
            require_auth: Some(("herald".into(), "relay-secret".into())),
            ..SinkOptions::default()
        },
    );
    let id = w.store("app@example.test", &["a@one.example"], "relay-bad-cert");
    let mut h = start(&w, relay_config(&w, &root, "relay-secret"));
    // Two attempts, both refused by our TLS check; the message stays queued.
    super::common::wait_lines(&mut h, "delivery attempt", 2);
    assert!(relay.messages().is_empty());
    let attempts = logged(&h, "delivery attempt");
    assert!(
        attempts.iter().all(|l| l.contains("TLS failed")),
        "{attempts:#?}"
    );
    assert!(crate::support::spool::is_spooled(w.dir.path(), &id));
}
