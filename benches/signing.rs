//! Signing throughput per core: RSA-2048 and Ed25519 at 4 KB and 100 KB messages, through the
//! same `Signer` herald uses (alignment, header inspection, canonicalization, signature), beside
//! `openssl speed -seconds 3 rsa2048 ed25519` on the same machine as the ceiling.
//!
//! Run: `cargo bench --bench signing` (release). Single-threaded: the numbers are per core.

use std::process::Command;
use std::time::{Duration, Instant};

use herald::config::{Config, DkimAlgorithm};
use herald::signing::{Signer, keys};

fn main() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return eprintln!("bench: no temp dir: {e}"),
    };
    let mut text = format!(
        "[server]\ndata_dir = {:?}\n",
        dir.path().display().to_string()
    );
    for (domain, alg) in [
        ("rsa.test", DkimAlgorithm::Rsa),
        ("ed.test", DkimAlgorithm::Ed25519),
    ] {
        let file = dir.path().join(format!("{domain}.pem"));
        let generated = match keys::generate(alg, 2048) {
            Ok(g) => g,
            Err(e) => return eprintln!("bench: key generation failed: {e}"),
        };
        if let Err(e) = keys::write_private_key(&file, &generated.pem) {
            return eprintln!("bench: cannot write key: {e}");
        }
        text.push_str(&format!(
            "\n[[dkim.keys]]\ndomain = {domain:?}\nselector = \"b\"\nalgorithm = {:?}\nfile = {:?}\n",
            alg.as_str(),
            file.display().to_string()
        ));
    }
    let signer = match toml::from_str::<Config>(&text)
        .map_err(anyhow::Error::from)
        .and_then(|c| Signer::load(&c))
    {
        Ok(s) => s,
        Err(e) => return eprintln!("bench: signer: {e:#}"),
    };

    let ceiling = openssl_speed();
    println!("herald DKIM signing, one core (sign/s through Signer::sign_blocking)");
    println!(
        "{:<10} {:>8} {:>12} {:>16} {:>8}",
        "algorithm", "message", "herald/s", "openssl sign/s", "ratio"
    );
    for (label, domain, key) in [
        ("rsa-2048", "rsa.test", "rsa2048"),
        ("ed25519", "ed.test", "ed25519"),
    ] {
        for size in [4 * 1024, 100 * 1024] {
            let msg = message(domain, size);
            let rate = rate(&signer, &msg);
            let top = ceiling.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let ratio = top.map_or("-".to_string(), |t| format!("{:.0}%", 100.0 * rate / t));
            let top = top.map_or("-".to_string(), |t| format!("{t:.0}"));
            println!(
                "{label:<10} {:>7}K {rate:>12.0} {top:>16} {ratio:>8}",
                size / 1024
            );
        }
    }
}

/// A message of about `size` bytes from `billing@<domain>` with the usual headers.
fn message(domain: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Billing <billing@{domain}>\r\nTo: customer@receiver.example\r\nSubject: Invoice\r\n\
         Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMessage-ID: <1@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// Signatures per second on this thread, over about two seconds.
fn rate(signer: &Signer, msg: &[u8]) -> f64 {
    // Warm up caches and the allocator.
    for _ in 0..20 {
        let _ = signer.sign_blocking(msg);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..10 {
            if signer.sign_blocking(msg).is_err() {
                eprintln!("bench: signing failed");
                return 0.0;
            }
        }
        n += 10;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// `openssl speed -seconds 3 rsa2048 ed25519`: sign/s per algorithm (empty without openssl).
fn openssl_speed() -> Vec<(&'static str, f64)> {
    let out = match Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048", "ed25519"])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            eprintln!("bench: `openssl speed` unavailable; no ceiling printed");
            return Vec::new();
        }
    };
    println!("openssl speed -seconds 3 rsa2048 ed25519:");
    let mut found = Vec::new();
    let mut sign_from_end = None;
    for line in out.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = tokens.iter().position(|t| *t == "sign/s") {
            sign_from_end = Some(tokens.len() - i);
            println!("  {line}");
            continue;
        }
        let key = if line.contains("rsa") && line.contains("2048 bits") {
            "rsa2048"
        } else if line.contains("Ed25519") {
            "ed25519"
        } else {
            continue;
        };
        println!("  {line}");
        let value = sign_from_end
            .and_then(|k| tokens.len().checked_sub(k))
            .and_then(|i| tokens.get(i))
            .and_then(|t| t.parse::<f64>().ok());
        if let Some(v) = value {
            found.push((key, v));
        }
    }
    found
}
