//! `herald dkim generate` and `herald dkim list`, run as an operator runs them; the printed
//! config block and DNS records are used as printed, and the signatures they lead to verify.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use herald::config::DkimAlgorithm;
use herald::signing::{PublishedKey, Signer};

use super::helpers::{dkimpy, mail_auth, parse_config, simple};
use crate::support::herald::herald_bin;
use crate::support::tools::require_tool;

fn herald(config: &Path, args: &[&str]) -> Output {
    Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run herald")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The TXT records printed in zone-file syntax: (owner name, joined value, string lengths).
fn printed_records(out: &str) -> Vec<(String, String, Vec<usize>)> {
    let mut records = Vec::new();
    let mut lines = out.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, rest)) = line.split_once(" IN TXT ") else {
            continue;
        };
        let mut text = rest.to_string();
        if rest.starts_with('(') {
            while !text.trim_end().ends_with(')') {
                text.push_str(lines.next().expect("record continues"));
            }
        }
        let strings: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
        records.push((
            name.trim_end_matches('.').to_string(),
            strings.concat(),
            strings.iter().map(|s| s.len()).collect(),
        ));
    }
    records
}

#[tokio::test]
async fn generate_prints_what_to_configure_and_publish_and_it_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    let base = format!(
        "[server]\ndata_dir = {:?}\n",
        dir.path().display().to_string()
    );
    std::fs::write(&config, &base).expect("write config");

    let out = herald(
        &config,
        &[
            "dkim",
            "generate",
            "--domain",
            "Example.ORG",
            "--selector",
            "s1",
            "--algorithm",
            "both",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for name in [
        "example.org.s1-rsa.rsa.pem",
        "example.org.s1-ed25519.ed25519.pem",
    ] {
        let file = dir.path().join("keys").join(name);
        let mode = std::fs::metadata(&file)
            .expect("key file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        assert!(
            text.contains(&file.display().to_string()),
            "the config block names {name}"
        );
    }
    let records = printed_records(&text);
    assert_eq!(records.len(), 2, "{text}");
    let rsa = &records[0];
    assert_eq!(rsa.0, "s1-rsa._domainkey.example.org");
    assert!(rsa.1.starts_with("v=DKIM1; k=rsa; p=MII"));
    assert!(
        rsa.2.len() >= 2 && rsa.2.iter().all(|&n| n <= 255),
        "split in ≤255-byte strings: {:?}",
        rsa.2
    );
    assert_eq!(records[1].0, "s1-ed25519._domainkey.example.org");
    assert!(records[1].1.starts_with("v=DKIM1; k=ed25519; p="));

    // The records are valid zone-file syntax.
    let zone = dir.path().join("example.org.zone");
    let mut body = String::from(
        "$TTL 3600\n@ IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60\n@ IN NS ns.example.org.\nns IN A 192.0.2.1\n",
    );
    for line in text
        .lines()
        .skip_while(|l| !l.contains(" IN TXT "))
        .take_while(|l| !l.is_empty())
    {
        body.push_str(line);
        body.push('\n');
    }
    std::fs::write(&zone, body).expect("zone");
    let check = Command::new(require_tool("named-checkzone", "bind9-utils"))
        .arg("example.org")
        .arg(&zone)
        .output()
        .expect("named-checkzone runs");
    assert!(
        check.status.success(),
        "named-checkzone: {}",
        stdout(&check)
    );

    // The config block, pasted and activated, makes a signer whose signatures verify against
    // the records exactly as printed.
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[dkim.keys]]"))
        .take_while(|l| !l.starts_with("Publish"))
        .map(|l| format!("{}\n", l.replace("active = false", "active = true")))
        .collect();
    std::fs::write(&config, format!("{base}{block}")).expect("config with keys");
    let list = herald(&config, &["dkim", "list"]);
    assert!(list.status.success(), "{list:?}");
    let listed = stdout(&list);
    assert!(
        listed.lines().any(|l| l.contains("s1-rsa")
            && l.contains(" rsa ")
            && l.contains("2048")
            && l.contains("yes")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.contains("s1-ed25519") && l.contains("256")),
        "{listed}"
    );

    let cfg = parse_config(&std::fs::read_to_string(&config).expect("config"));
    let signer = Signer::load(&cfg).expect("generated keys load");
    let published: Vec<PublishedKey> = records
        .iter()
        .map(|(name, txt, _)| PublishedKey {
            domain: "example.org".into(),
            selector: name.split('.').next().unwrap_or_default().into(),
            algorithm: DkimAlgorithm::Rsa,
            bits: 0,
            txt: txt.clone(),
            active: true,
        })
        .collect();
    let signed = signer
        .sign(simple("billing@example.org"))
        .await
        .expect("signed");
    let verdicts = dkimpy(&signed, &published);
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts.iter().all(|v| v.ok), "{verdicts:?}");
    assert!(mail_auth(&signed, &published).await.iter().all(|r| r.2));
    let mut ours: Vec<String> = signer.published_keys().into_iter().map(|k| k.txt).collect();
    let mut printed: Vec<String> = records.into_iter().map(|r| r.1).collect();
    ours.sort();
    printed.sort();
    assert_eq!(
        ours, printed,
        "published_keys() gives the records generate printed"
    );

    // Generating the same selector again is refused (the key stays as it was).
    let again = herald(
        &config,
        &[
            "dkim",
            "generate",
            "--domain",
            "example.org",
            "--selector",
            "s1-rsa",
        ],
    );
    assert_eq!(again.status.code(), Some(2), "{again:?}");
}

#[test]
fn generate_defaults_to_a_dated_rsa_selector_and_refuses_weak_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\n",
            dir.path().display().to_string()
        ),
    )
    .expect("write config");
    let out = herald(&config, &["dkim", "generate", "--domain", "example.net"]);
    assert!(out.status.success(), "{out:?}");
    let records = printed_records(&stdout(&out));
    assert_eq!(records.len(), 1);
    let selector = records[0]
        .0
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        selector.len() == 7
            && selector.starts_with('s')
            && selector[1..].chars().all(|c| c.is_ascii_digit()),
        "dated selector like s202611: {selector}"
    );
    assert!(records[0].1.contains("k=rsa"));

    let again = herald(&config, &["dkim", "generate", "--domain", "example.net"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing key file is never overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));

    let weak = herald(
        &config,
        &[
            "dkim",
            "generate",
            "--domain",
            "example.net",
            "--selector",
            "w",
            "--bits",
            "1024",
        ],
    );
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("1024"));
    assert!(!dir.path().join("keys/example.net.w.rsa.pem").exists());
}
