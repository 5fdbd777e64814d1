//! Submission end-to-end tests about herald's life: crashes (SIGKILL) lose nothing
//! acknowledged and keep nothing half-received, SIGTERM drains, bad config exits 2, and the
//! `herald app` commands.

use std::path::Path;
use std::time::Duration;

use herald::spool::{FsBackend, SpoolBackend};

use super::{BODY, client, rig, set, spooled};
use crate::support::herald::{Herald, base_config};

#[tokio::test]
async fn sigkill_right_after_250_keeps_the_message() {
    let mut rig = rig(|_| {});
    let mut c = rig.login().await;
    let r = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(r.code, 250);
    let id = r.text.rsplit(' ').next().expect("queue id").to_string();
    rig.herald.kill9();
    let cfg = rig.herald.config.clone();
    let herald = Herald::start(rig.dir.path(), cfg);
    let backend = FsBackend::open(&rig.dir.path().join("spool")).expect("open spool");
    let all = backend.recover().await.expect("recover");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert_eq!(
        all[0].envelope.recipients,
        vec!["r@example.org".to_string()]
    );
    let bytes = backend.read_message(&id).await.expect("read message");
    assert!(String::from_utf8_lossy(&bytes).ends_with("Hello.\r\n"));
    drop(herald);
}

#[tokio::test]
async fn sigkill_mid_data_leaves_no_half_message() {
    let mut rig = rig(|_| {});
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send("From: app@example.test\r\nSubject: half\r\n\r\nfirst half of the bo")
        .await;
    rig.herald.kill9();
    let cfg = rig.herald.config.clone();
    let _herald = Herald::start(rig.dir.path(), cfg);
    let backend = FsBackend::open(&rig.dir.path().join("spool")).expect("open spool");
    assert!(backend.recover().await.expect("recover").is_empty());
    assert!(spooled(rig.dir.path()).is_empty());
}

#[tokio::test]
async fn sigterm_lets_the_session_in_flight_finish_then_exits_0() {
    let mut rig = rig(|_| {});
    let mut c = rig.login().await;
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send("From: app@example.test\r\nSubject: late\r\n\r\n")
        .await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(rig.herald.child.id() as i32, libc::SIGTERM) };
    rig.herald
        .wait_for_event("listeners_closed", Duration::from_secs(10));
    assert!(
        client::tcp_from(crate::support::free_ip(), rig.addr("submission"))
            .await
            .is_err()
    );
    c.send("the end\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    let r = c.reply().await;
    assert_eq!(r.code, 421, "idle session told to leave: {r:?}");
    let status = rig.herald.child.wait().expect("herald exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(spooled(rig.dir.path()).len(), 1);
}

#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = base_config(dir.path());
    set(&mut cfg, "smtp", "max_recipients", 0);
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("smtp.max_recipients"), "{err}");
    // Missing certificate without dev certs: the key is named too.
    let mut cfg = base_config(dir.path());
    set(&mut cfg, "tls", "allow_dev_certs", false);
    std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.cert"));
}

#[test]
fn app_commands_hash_passwords_and_print_config_blocks() {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::herald::herald_bin())
        .args(["app", "hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run herald");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .args([
            "app",
            "add",
            "billing",
            "--sender",
            "@shop.test",
            "--sender",
            "a@b.test",
        ])
        .output()
        .expect("run herald");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[apps.billing]"), "{text}");
    assert!(
        text.contains("senders = [\"@shop.test\", \"a@b.test\"]"),
        "{text}"
    );
    assert!(text.contains("\n# allow_tls_optional = false "), "{text}");
    let table: toml::Table = toml::from_str(&text).expect("the block is valid TOML");
    let enabled = text.replace("# allow_tls_optional = false", "allow_tls_optional = true");
    let enabled: toml::Table = toml::from_str(&enabled).expect("valid TOML once uncommented");
    assert_eq!(
        enabled["apps"]["billing"]["allow_tls_optional"].as_bool(),
        Some(true)
    );
    assert!(
        table["apps"]["billing"]["password_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("$argon2id$"))
    );
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .args(["app", "add", "billing", "--sender", "shop.test"])
        .output()
        .expect("run herald");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["config/herald.toml", "config/production.example.toml"] {
        if let Err(e) = herald::config::Config::load(&root.join(f)) {
            panic!("{f}: {e}");
        }
    }
}
