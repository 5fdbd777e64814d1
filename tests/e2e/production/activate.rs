//! `herald dkim activate DOMAIN SELECTOR`: refuses while DNS does not serve the key (leaving the
//! file untouched), then switches the key on in place, keeping comments and layout.

use herald::config::Config;
use herald::signing::Signer;

use super::{herald_in, text};
use crate::support::dns::DnsServer;

const CONFIG: &str = r#"# herald — a production-like config with a key generated, not yet active
[server]
hostname = "relay.example.test"   # our public name
data_dir = "data"

[dns]
servers = ["DNS"]

[dkim]
allow_dev_keys = true

# the current key
[[dkim.keys]]
domain = "example.test"
selector = "old"
algorithm = "ed25519"
file = "data/keys/old.pem"
active = true

# the new key, published on Monday
[[dkim.keys]]
domain = "example.test"
selector = "s202612"
algorithm = "ed25519"
file = "data/keys/new.pem"
active = false   # `herald dkim activate example.test s202612` once DNS serves the record below
"#;

#[test]
fn activate_refuses_an_unpublished_key_then_activates_a_published_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = DnsServer::start();
    let config = dir.path().join("herald.toml");
    let original = CONFIG.replace("DNS", &dns.addr.to_string());
    std::fs::write(&config, &original).expect("write");
    let keys = Signer::load(&Config::load(&config).expect("loads"))
        .expect("keys generated")
        .published_keys();
    let new = keys
        .iter()
        .find(|k| k.selector == "s202612")
        .expect("new key");
    let name = "s202612._domainkey.example.test";

    // Not published: refused, file untouched.
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["dkim", "activate", "example.test", "s202612"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not activated"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), original);

    // Published with another key (a stale paste): refused too.
    let other = keys.iter().find(|k| k.selector == "old").expect("old key");
    dns.set_txt(name, &other.txt);
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["dkim", "activate", "example.test", "s202612"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("different public key"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), original);

    // Published: activated in place.
    dns.set_txt(name, &new.txt);
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["dkim", "activate", "example.test", "s202612"],
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let edited = std::fs::read_to_string(&config).expect("read");
    for kept in [
        "# herald — a production-like config with a key generated, not yet active",
        "hostname = \"relay.example.test\"   # our public name",
        "# the new key, published on Monday",
        "# the current key",
    ] {
        assert!(edited.contains(kept), "lost {kept:?}:\n{edited}");
    }
    let cfg = Config::load(&config).expect("still loads");
    assert!(cfg.dkim.keys.iter().all(|k| k.active), "{edited}");
    // Only that line changed.
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(edited.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].1.starts_with("active = true"), "{changed:?}");

    // Unknown selector: refused.
    let out = herald_in(
        dir.path(),
        &config,
        &[],
        &["dkim", "activate", "example.test", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
}
