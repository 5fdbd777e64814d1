//! `[delivery] require_tls_domains`: verified TLS or nothing — a missing STARTTLS or a bad
//! certificate is a temporary failure, never a fall-back to clear text.

use super::common::{WAIT, World, logged, set, start, wait_finished, wait_lines};
use crate::support::ca::{self, TestCa, Validity};
use crate::support::smtp_sink::SinkOptions;

#[test]
fn required_tls_waits_instead_of_falling_back() {
    let ca = TestCa::new();
    let mut w = World::new(3);
    let root = w.dir.path().join("test-root.pem");
    ca.write_root(&root);
    w.dns.add_mx("plain.example", 10, "mx.plain.example");
    w.dns
        .add_mx("selfsigned.example", 10, "mx.selfsigned.example");
    w.dns.add_mx("good.example", 10, "mx.good.example");
    let plain = w.sink("mx.plain.example", SinkOptions::default());
    let selfsigned = w.sink(
        "mx.selfsigned.example",
        SinkOptions {
            tls: Some(ca::self_signed_server_config(&["mx.selfsigned.example"])),
            ..SinkOptions::default()
        },
    );
    let good = w.sink(
        "mx.good.example",
        SinkOptions {
            tls: Some(ca.server_config(&["mx.good.example"], Validity::Current)),
            ..SinkOptions::default()
        },
    );
    let a = w.store("app@example.test", &["a@plain.example"], "req-plain");
    let b = w.store(
        "app@example.test",
        &["b@selfsigned.example"],
        "req-selfsigned",
    );
    let c = w.store("app@example.test", &["c@good.example"], "req-good");
    let mut cfg = w.config();
    set(
        &mut cfg,
        "delivery",
        "require_tls_domains",
        toml::Value::Array(vec![
            "plain.example".into(),
            "selfsigned.example".into(),
            "good.example".into(),
        ]),
    );
    set(
        &mut cfg,
        "tls",
        "extra_roots",
        toml::Value::Array(vec![root.display().to_string().into()]),
    );
    let mut h = start(&w, cfg);
    good.wait_for_messages(1, WAIT);
    wait_finished(&mut h, &c);
    // Two rounds each for the others: both fail the TLS requirement and stay queued.
    wait_lines(&mut h, &format!("queue_id={a} domain=plain.example"), 2);
    wait_lines(
        &mut h,
        &format!("queue_id={b} domain=selfsigned.example"),
        2,
    );
    assert!(plain.messages().is_empty(), "never delivered in clear");
    assert!(
        selfsigned.messages().is_empty(),
        "never to an unverified certificate"
    );
    let a_lines = logged(&h, &format!("queue_id={a}"));
    assert!(
        a_lines[0].contains("does not offer STARTTLS") && a_lines[0].contains("policy=required"),
        "{a_lines:#?}"
    );
    let b_lines = logged(&h, &format!("queue_id={b}"));
    assert!(b_lines[0].contains("TLS failed"), "{b_lines:#?}");
    let c_line = logged(&h, &format!("queue_id={c}")).remove(0);
    assert!(
        c_line.contains("policy=required") && c_line.contains("cert_verified=true"),
        "{c_line}"
    );
    for id in [&a, &b] {
        assert!(crate::support::spool::is_spooled(w.dir.path(), id));
    }
}
