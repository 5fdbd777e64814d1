//! Submission: REQUIRETLS is offered only over TLS and refused without it; the envelope records
//! it; `TLS-Required: No` is refused for an app without `allow_tls_optional` and recorded for
//! one with it; `herald queue` shows the flag.

use std::path::Path;
use std::process::Command;

use super::rig::{DOMAIN, Rig, login, message, queue_id, submit};
use crate::submission::client::Client;
use crate::support::herald::herald_bin;

/// The envelope (JSON line) of spooled message `id`.
fn envelope(data: &Path, id: &str) -> serde_json::Value {
    let spooled = crate::support::spool::spooled(data);
    let entry = spooled
        .iter()
        .find(|m| m.id == id)
        .expect("spooled message");
    serde_json::from_str(&entry.envelope).expect("envelope JSON")
}

fn spooled_count(data: &Path) -> usize {
    crate::support::spool::spooled(data).len()
}

fn queue(config: &Path, args: &[&str]) -> String {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .arg("queue")
        .args(args)
        .output()
        .expect("run herald queue");
    assert!(out.status.success(), "herald queue {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requiretls_is_offered_only_over_tls_and_recorded_in_the_envelope() {
    let rig = Rig::new(1);
    // No MX for bank.test: the DNS answer leaves the message waiting, to be looked at.
    rig.dns.fail(DOMAIN);
    let mut cfg = rig.config();
    let plain = crate::support::free_addr();
    crate::support::set(&mut cfg, "smtp.plain", plain.to_string());
    crate::support::set(&mut cfg, "smtp.plain_networks", vec!["127.0.0.0/8"]);
    crate::support::set(&mut cfg, "smtp.plain_senders", vec!["@example.test"]);
    let mut h = rig.start(cfg);

    // Submission port: not before STARTTLS, then offered.
    let mut c = Client::plain(h.smtp_addr("submission")).await;
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    assert!(!ehlo.contains("REQUIRETLS"), "offered in clear: {ehlo}");
    c.starttls(rig.client_tls()).await;
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    assert!(ehlo.lines().any(|l| l == "REQUIRETLS"), "{ehlo}");
    c.auth_plain("demo", crate::support::herald::DEMO_PASSWORD, 235)
        .await;
    let to = format!("a@{DOMAIN}");
    let reply = submit(&mut c, " REQUIRETLS", &to, &message(&to, "rt-env", "")).await;
    let id = queue_id(&reply);
    let env = envelope(rig.dir.path(), &id);
    assert_eq!(env["tls_request"], "require-tls", "{env}");
    let ordinary = submit(&mut c, "", &to, &message(&to, "rt-plain", "")).await;
    let ordinary = envelope(rig.dir.path(), &queue_id(&ordinary));
    assert!(ordinary.get("tls_request").is_none(), "{ordinary}");

    // Implicit TLS: offered at once.
    let mut c = Client::tls_from(
        crate::support::free_ip(),
        h.smtp_addr("submissions"),
        rig.client_tls(),
    )
    .await;
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    assert!(ehlo.lines().any(|l| l == "REQUIRETLS"), "{ehlo}");

    // The allow-listed plain listener without TLS: neither offered nor accepted.
    let mut c = Client::plain(plain).await;
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.expect("EHLO app.test", 250).await.text;
    assert!(!ehlo.contains("REQUIRETLS"), "{ehlo}");
    let refused = c
        .expect("MAIL FROM:<app@example.test> REQUIRETLS", 530)
        .await;
    assert!(
        refused.text.starts_with("5.7.10") && refused.text.contains("STARTTLS"),
        "{refused:?}"
    );
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("QUIT", 221).await;

    // `herald queue` shows the flag (offline, once herald has stopped).
    h.terminate();
    let list = queue(&rig.config_path(), &["list"]);
    let line = list.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("[REQUIRETLS]"), "{list}");
    assert_eq!(list.matches("[REQUIRETLS]").count(), 1, "{list}");
    let show = queue(&rig.config_path(), &["show", &id]);
    assert!(show.contains("tls:       REQUIRETLS"), "{show}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_no_needs_the_apps_permission_and_requiretls_wins() {
    let rig = Rig::new(1);
    rig.dns.fail(DOMAIN);
    let h = rig.start(rig.config());
    let to = format!("a@{DOMAIN}");
    let optional = message(&to, "rt-optional", "TLS-Required: No\r\n");

    let mut demo = login(&h, rig.client_tls(), "demo").await;
    let refused = submit(&mut demo, "", &to, &optional).await;
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(
        refused.text.starts_with("5.7.1")
            && refused.text.contains("TLS-Required: No")
            && refused
                .text
                .contains("allow_tls_optional = true in [apps.demo]"),
        "{refused:?}"
    );
    assert_eq!(spooled_count(rig.dir.path()), 0, "nothing kept");
    // With REQUIRETLS the header is ignored (RFC 8689 §4.1): accepted, and REQUIRETLS holds.
    let both = submit(&mut demo, " REQUIRETLS", &to, &optional).await;
    let env = envelope(rig.dir.path(), &queue_id(&both));
    assert_eq!(env["tls_request"], "require-tls", "{env}");

    let mut lax = login(&h, rig.client_tls(), "lax").await;
    let accepted = submit(&mut lax, "", &to, &optional).await;
    let env = envelope(rig.dir.path(), &queue_id(&accepted));
    assert_eq!(env["tls_request"], "tls-optional", "{env}");
    assert_eq!(env["app"], "lax");
}
