//! Key files: herald refuses to start on a bad one, naming it; accepts keys made by OpenSSL;
//! generates missing development keys only when allowed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use herald::config::ConfigError;
use herald::config::DkimAlgorithm::{Ed25519, Rsa};
use herald::signing::{Signer, keys};

use super::helpers::{dkimpy, key_block, parse_config, simple};
use crate::support::herald::{base_config, herald_bin};
use crate::support::tools::require_tool;

/// Runs `herald serve` until it exits (it must, within a minute): exit code and stderr.
fn serve_until_exit(dir: &Path, config: toml::Table) -> (Option<i32>, String) {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml::to_string(&config).expect("config")).expect("write config");
    let child = Command::new(herald_bin())
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(out)) => (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        _ => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("herald serve did not exit on a bad key file");
        }
    }
}

/// The key file the base config declares (Ed25519, selector `dev`).
fn declared_key(dir: &Path) -> std::path::PathBuf {
    dir.join("keys/example.test.dev.ed25519.pem")
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn bad_key_files_stop_start_up_naming_the_file() {
    let rsa = keys::generate(Rsa, 2048).expect("rsa").pem;
    let ed = keys::generate(Ed25519, 0).expect("ed25519").pem;
    let cases = [
        ("readable by others", ed.as_str(), 0o644, "mode 0644"),
        ("readable by group", ed.as_str(), 0o640, "chmod 600"),
        ("wrong algorithm", rsa.as_str(), 0o600, "holds an RSA key"),
        (
            "garbage",
            "this is not a key\n",
            0o600,
            "not a PEM private key",
        ),
    ];
    for (what, text, mode, words) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = declared_key(dir.path());
        write_mode(&key, text, mode);
        let (code, stderr) = serve_until_exit(dir.path(), base_config(dir.path()));
        assert_eq!(
            code,
            Some(2),
            "{what}: exit status 2 for bad configuration; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(&key.display().to_string()),
            "{what}: names the file:\n{stderr}"
        );
        assert!(
            stderr.contains(words),
            "{what}: says why ({words}):\n{stderr}"
        );
        assert!(
            !stderr.contains("herald ready"),
            "{what}: never became ready"
        );
    }
}

#[test]
fn missing_keys_are_generated_only_when_dev_keys_are_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys/dev.pem");
    let text = format!(
        "[dkim]\nallow_dev_keys = {{}}\n{}",
        key_block("example.test", "dev", Ed25519, &file, true)
    );
    let err = Signer::load(&parse_config(&text.replace("{}", "false")))
        .err()
        .expect("a missing key is an error");
    assert!(
        err.downcast_ref::<ConfigError>().is_some(),
        "exit status 2: {err:#}"
    );
    assert!(
        format!("{err:#}").contains(&file.display().to_string()),
        "{err:#}"
    );
    assert!(!file.exists());

    let signer = Signer::load(&parse_config(&text.replace("{}", "true"))).expect("generated");
    let mode = std::fs::metadata(&file)
        .expect("key written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let published = signer.published_keys();
    assert_eq!(published.len(), 1);
    assert!(published[0].txt.starts_with("v=DKIM1; k=ed25519; p="));
    // And the same file loads again on the next start, without allow_dev_keys.
    Signer::load(&parse_config(&text.replace("{}", "false"))).expect("reloads");
}

fn openssl(args: &[&str], out: &Path) {
    let status = Command::new(require_tool("openssl", "openssl"))
        .args(args)
        .arg("-out")
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[tokio::test]
async fn openssl_keys_load_and_sign_and_weak_ones_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkcs1 = dir.path().join("pkcs1.pem");
    let ed = dir.path().join("ed.pem");
    let weak = dir.path().join("weak.pem");
    let ec = dir.path().join("ec.pem");
    openssl(&["genrsa", "-traditional"], &pkcs1);
    assert!(
        std::fs::read_to_string(&pkcs1)
            .expect("read")
            .contains("BEGIN RSA PRIVATE KEY")
    );
    openssl(&["genpkey", "-algorithm", "ed25519"], &ed);
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
        &weak,
    );
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ],
        &ec,
    );

    let text = format!(
        "{}{}",
        key_block("example.test", "rsa", Rsa, &pkcs1, true),
        key_block("example.test", "ed", Ed25519, &ed, true)
    );
    let signer = Signer::load(&parse_config(&text)).expect("OpenSSL keys load");
    let signed = signer.sign(simple("a@example.test")).await.expect("signed");
    let verdicts = dkimpy(&signed, &signer.published_keys());
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts.iter().all(|v| v.ok), "{verdicts:?}");

    for (file, alg, words) in [
        (&weak, Rsa, "smaller than 2048"),
        (&ec, Ed25519, "neither RSA nor Ed25519"),
    ] {
        let err = Signer::load(&parse_config(&key_block(
            "example.test",
            "x",
            alg,
            file,
            true,
        )))
        .err()
        .expect("refused");
        let text = format!("{err:#}");
        assert!(err.downcast_ref::<ConfigError>().is_some(), "{text}");
        assert!(
            text.contains(&file.display().to_string()) && text.contains(words),
            "{text}"
        );
    }
}

#[test]
fn a_selector_configured_twice_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.pem");
    let b = dir.path().join("b.pem");
    for f in [&a, &b] {
        let k = keys::generate(Ed25519, 0).expect("key");
        keys::write_private_key(f, &k.pem).expect("write");
    }
    let text = format!(
        "{}{}",
        key_block("example.test", "s1", Ed25519, &a, true),
        key_block("Example.Test", "S1", Ed25519, &b, false)
    );
    let err = Signer::load(&parse_config(&text)).err().expect("refused");
    assert!(format!("{err:#}").contains("configured twice"), "{err:#}");
}
