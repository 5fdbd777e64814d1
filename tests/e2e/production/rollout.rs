//! The README's DKIM roll-out (generate → publish → `herald check` until it exits 0 →
//! activate) as an administrator runs it, as root, on a data directory owned by the service
//! user: a key not yet active is described as such everywhere, and what the commands write
//! stays readable by the service.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::dns_check::{DOMAIN, World, message, status};
use crate::hardening::{BODY, certs};
use crate::submission::client::Client;
use crate::support::herald::{Herald, base_config};

/// The service user of these tests: nobody (as root, files are handed to it).
const SERVICE: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn chown_tree(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            chown_tree(&entry.expect("entry").path(), uid);
        }
    }
}

#[test]
fn a_generated_key_is_not_yet_active_everywhere_and_check_passes_before_activation() {
    let w = World::new(&[("s1", "ed25519", false)]);
    let activate = format!("herald dkim activate {DOMAIN} s1");

    // `herald dns`: "not active yet … activate", never "retiring … remove it".
    let dns = w.herald(&["dns"]);
    assert_eq!(dns.code, 0, "{}", dns.stderr);
    assert!(
        dns.stdout.contains("not active yet") && dns.stdout.contains(&activate),
        "{}",
        dns.stdout
    );
    assert!(!dns.stdout.contains("retiring"), "{}", dns.stdout);

    // Published but for the key: check fails on the record, and says to activate afterwards.
    let records = w.publish_all();
    let name = format!("s1._domainkey.{DOMAIN}");
    w.dns.remove(&name);
    let (code, report) = w.check();
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(status(&report, "dkim.s1"), "fail");
    let text = report.to_string();
    assert!(!text.contains("dkim generate"), "{report:#}");
    assert!(text.contains(&activate), "{report:#}");

    // Published: check exits 0 before activation, as the README's order needs.
    let key = records["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["name"] == name.as_str())
        .expect("the key's record");
    w.dns.add_txt(&name, key["value"].as_str().expect("value"));
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(status(&report, "dkim.s1"), "pass");
    assert!(
        message(&report, "dkim.s1").contains(&activate),
        "{report:#}"
    );
    assert_eq!(status(&report, "dmarc.alignment"), "pass", "{report:#}");

    // Activated as root: the config keeps its owner and mode, the service user is named.
    let data = w.dir.path().join("data");
    if is_root() {
        chown_tree(&data, SERVICE);
        std::os::unix::fs::chown(&w.config, Some(0), Some(SERVICE)).expect("chown config");
        std::fs::set_permissions(&w.config, std::fs::Permissions::from_mode(0o640))
            .expect("chmod config");
    }
    let run = w.herald(&["dkim", "activate", DOMAIN, "s1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    assert!(
        message(&report, "dkim.s1").contains("publishes the key herald signs with"),
        "{report:#}"
    );
    if !is_root() {
        return;
    }
    assert!(
        run.stderr.contains("running as root") && run.stderr.contains("nobody"),
        "{}",
        run.stderr
    );
    let meta = std::fs::metadata(&w.config).expect("config");
    assert_eq!((meta.uid(), meta.gid()), (0, SERVICE), "owner kept");
    assert_eq!(meta.mode() & 0o777, 0o640, "mode kept");

    // `dkim generate` as root: the new key belongs to the service user, mode 0600.
    let run = w.herald(&[
        "dkim",
        "generate",
        "--domain",
        "example.org",
        "--selector",
        "g1",
        "--algorithm",
        "ed25519",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("running as root"), "{}", run.stderr);
    let key = data.join("keys/example.org.g1.ed25519.pem");
    let meta = std::fs::metadata(&key).expect("generated key");
    assert_eq!((meta.uid(), meta.gid()), (SERVICE, SERVICE));
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[tokio::test]
async fn mail_from_a_domain_whose_key_is_not_active_yet_is_told_to_activate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = certs(dir.path());
    let mut cfg = base_config(dir.path());
    let keys = cfg["dkim"]["keys"].as_array_mut().expect("keys");
    keys[0]
        .as_table_mut()
        .expect("key")
        .insert("active".into(), false.into());
    let h = Herald::start(dir.path(), cfg);
    let mut c = Client::submission_login(h.smtp_addr("submission"), tls).await;
    let reply = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    let text = format!("{reply:?}");
    assert!(
        text.contains("not active yet") && text.contains("herald dkim activate example.test"),
        "{text}"
    );
    assert!(!text.contains("generate"), "{text}");
}
