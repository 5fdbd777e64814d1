//! `config/production.example.toml` used as the README says: copied as it is, its
//! example.com values set (here through `HERALD__…` overrides, as under Docker), the blocks
//! `herald dkim generate` prints pasted in — and herald starts on it.

use std::time::Duration;

use super::{herald_in, text};
use crate::hardening::certs;
use crate::support::herald::Herald;

fn example() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/production.example.toml"),
    )
    .expect("production example")
}

#[test]
fn the_production_example_starts_as_copied_and_matches_dkim_generate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, example()).expect("copy the example");
    certs(dir.path());
    let data = dir.path().join("data");
    let addr = |_| crate::support::free_addr().to_string();
    let (submission, submissions, admin): (String, String, String) = (addr(0), addr(1), addr(2));
    let cert = dir.path().join("certs/herald.crt").display().to_string();
    let key = dir.path().join("certs/herald.key").display().to_string();
    let data_dir = data.display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("HERALD__SERVER__DATA_DIR", &data_dir),
        ("HERALD__TLS__CERT", &cert),
        ("HERALD__TLS__KEY", &key),
        ("HERALD__SMTP__SUBMISSION", &submission),
        ("HERALD__SMTP__SUBMISSIONS", &submissions),
        ("HERALD__ADMIN__LISTEN", &admin),
        ("HERALD__DNS__SERVERS", "127.0.0.1:9"),
    ];

    // The DKIM blocks the example shows are what `dkim generate` prints.
    let out = herald_in(
        dir.path(),
        &config,
        &env,
        &[
            "dkim",
            "generate",
            "--domain",
            "example.com",
            "--selector",
            "s202612",
            "--algorithm",
            "both",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let block: String = printed
        .lines()
        .skip_while(|l| !l.starts_with("[[dkim.keys]]"))
        .take_while(|l| !l.starts_with("Publish in DNS"))
        .collect::<Vec<_>>()
        .join("\n");
    let shown = example()
        .lines()
        .skip_while(|l| *l != "# [[dkim.keys]]")
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        // Printed relative to the config file when below it (here data/ is beside it).
        block
            .trim()
            .replace("file = \"data/", "file = \"/var/lib/herald/"),
        shown.trim(),
        "the example's commented [[dkim.keys]] blocks"
    );

    // Pasted in: `herald dns` gives the DMARC record its rua= and says the keys wait.
    let mut pasted = example();
    pasted.push_str(&block);
    pasted.push('\n');
    std::fs::write(&config, &pasted).expect("paste");
    let out = herald_in(
        dir.path(),
        &config,
        &env,
        &["dns", "--domain", "example.com"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let zone = text(&out.stdout);
    assert!(
        zone.contains("\"v=DMARC1; p=none; rua=mailto:dmarc@example.com\""),
        "{zone}"
    );
    assert!(zone.contains("not active yet"), "{zone}");

    // And herald starts on it (refusing mail until a key is activated and an app added).
    let cfg: toml::Table = toml::from_str(&format!(
        "[smtp]\nsubmission = \"{submission}\"\nsubmissions = \"{submissions}\"\n"
    ))
    .expect("toml");
    let mut h = Herald::spawn_with_env(&config, cfg, &["serve"], &env);
    h.wait_for_event("ready", Duration::from_secs(60));
    assert!(h.terminate().success());
}
