//! `herald tls show DOMAIN`: MX hosts, DNSSEC status, TLSA records, the MTA-STS policy, and
//! which policy applies to each MX host and why.

use std::process::Command;

use super::world::{DaneWorld, MX, spki_sha256, tlsa_name};
use crate::mta_sts::world::{DOMAIN, World};
use crate::support::ca::{Validity, self_signed_der};
use crate::support::herald::herald_bin;

fn tls_show(config: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .args(["tls", "show", DOMAIN])
        .output()
        .expect("run herald");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tls_show_explains_dane_over_mta_sts_and_dns_trouble() {
    let d = DaneWorld::signed();
    d.w.publish_policy("7", World::enforce());
    let (cert, tls) = self_signed_der(&[MX], Validity::Current);
    let mx = d.start_mx(tls);
    let port = mx.addr().port();
    let spki = spki_sha256(&cert);
    d.w.dns.add_tlsa(&tlsa_name(port), 3, 1, 1, spki.clone());
    // A second MX host whose TLSA is securely absent: MTA-STS applies to it.
    d.w.dns.add_mx(DOMAIN, 20, "mx2.bank.test");
    d.w.dns
        .add_a("mx2.bank.test", "127.0.0.2".parse().expect("ip"));
    let config = d.config_file(port);

    let (code, out, err) = tls_show(&config);
    assert_eq!(code, Some(0), "{out}{err}");
    let hex: String = spki.iter().map(|b| format!("{b:02x}")).collect();
    for line in [
        "domain:   bank.test",
        "dnssec:   validating",
        "mx:       mx1.bank.test mx2.bank.test (DNSSEC-secure)",
        "[mta-sts]",
        "mode:     enforce",
        "[mx1.bank.test]",
        &format!("tlsa:     {} (DNSSEC-secure)", tlsa_name(port)),
        &format!("          3 1 1 {hex}"),
        "applies:  dane: STARTTLS required, the certificate chain must match a TLSA record",
        "[mx2.bank.test]",
        "tlsa:     none used (",
        "has no TLSA records (securely denied)",
        "applies:  mta-sts enforce: STARTTLS with a WebPKI-verified certificate for mx2.bank.test",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }

    // A TLSA look-up answered SERVFAIL: the host is not used, and the command says so (exit 1).
    d.w.dns.fail(&tlsa_name(port));
    let (code, out, _) = tls_show(&config);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("applies:  not used now (dnssec-invalid)"),
        "{out}"
    );
}
