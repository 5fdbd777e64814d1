//! ACME certificates and the hosted MTA-STS policy.

use super::rig::{self, HOST, STS_HOST, WAIT};

/// Pebble issues herald a certificate for its host and `mta-sts.example.test` (never for
/// `mta-sts.elsewhere.test`, whose DNS points elsewhere); curl and herald's own MTA-STS
/// client accept it and read the policy; `herald dns` announces it; a short-lived certificate
/// is renewed and swapped in without a restart.
#[test]
fn pebble_certificate_serves_the_policy_and_is_renewed_in_place() {
    let elsewhere = crate::support::free_ip();
    let mut r = rig::start(
        20,
        "1s",
        "[web.mta_sts.\"elsewhere.test\"]\nmode = \"enforce\"\nmx = [\"mx.elsewhere.test\"]\n",
        &[("mta-sts.elsewhere.test", elsewhere.into())],
    );
    let first = r.herald.log.lock().unwrap().join("\n");
    assert!(
        first.contains("no certificate ordered for this name")
            && first.contains("mta-sts.elsewhere.test"),
        "the unreachable name is explained:\n{first}"
    );
    let key_mode = std::fs::metadata(r.dir.path().join("web/certificate.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the key is stored in [web] dir");
    assert_eq!(key_mode, 0o600);

    // curl, trusting only Pebble's root, reads the policy.
    let out = r.curl(STS_HOST, "/.well-known/mta-sts.txt", &["-i"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("content-type: text/plain"), "{text}");
    assert!(
        text.contains("version: STSv1\r\nmode: testing\r\nmx: mx.example.test\r\nmx: *.backup.example.test\r\nmax_age: 86400\r\n"),
        "{text}"
    );
    // The certificate does not name what herald was not asked to serve here.
    let wrong = r.curl("mta-sts.elsewhere.test", "/.well-known/mta-sts.txt", &[]);
    assert!(
        !wrong.status.success(),
        "no certificate for mta-sts.elsewhere.test"
    );
    let unknown = r.curl(
        HOST,
        "/.well-known/mta-sts.txt",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(
        String::from_utf8_lossy(&unknown.stdout),
        "404",
        "policy only on mta-sts.<domain>"
    );

    // `herald dns` announces the policy; herald's own MTA-STS client fetches it through DNS.
    let dns_out = r.herald_cli(&["dns", "--format", "json"]);
    assert!(
        dns_out.status.success(),
        "{}",
        String::from_utf8_lossy(&dns_out.stderr)
    );
    let set: serde_json::Value = serde_json::from_slice(&dns_out.stdout).expect("json");
    let record = |name: &str| {
        set["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {set:#}"))
            .clone()
    };
    let txt = record("_mta-sts.example.test")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(txt.starts_with("v=STSv1; id="), "{txt}");
    assert_eq!(record(STS_HOST)["value"], format!("{HOST}."));
    r.dns.add_txt("_mta-sts.example.test", &txt);
    let sts = r.herald_cli(&["sts", "show", "example.test"]);
    let shown = String::from_utf8_lossy(&sts.stdout);
    assert!(
        sts.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&sts.stderr)
    );
    assert!(shown.contains("fetched now"), "{shown}");
    assert!(
        shown.contains("mx.example.test") && shown.contains("testing"),
        "{shown}"
    );

    // `herald check` follows the chain: record, certificate (and its expiry), policy, MX.
    r.dns.add_mx("example.test", 10, "mx.example.test");
    let check = |r: &rig::WebRig| -> serde_json::Value {
        let out = r.herald_cli(&["check", "example.test", "--json"]);
        serde_json::from_slice(&out.stdout).expect("check json")
    };
    let finding = |report: &serde_json::Value, id: &str| -> (String, String) {
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {report:#}"));
        (
            f["status"].as_str().unwrap().to_string(),
            f["message"].as_str().unwrap().to_string(),
        )
    };
    let report = check(&r);
    assert_eq!(finding(&report, "mta-sts.policy").0, "pass", "{report:#}");
    assert_eq!(finding(&report, "mta-sts.mx").0, "pass", "{report:#}");
    let (status, message) = finding(&report, "mta-sts.certificate");
    assert!(
        status == "warn" && message.contains("verified; expires"),
        "a 20-second certificate is about to expire: {message}"
    );
    r.dns.add_mx("example.test", 20, "rogue.example.org");
    let report = check(&r);
    let (status, message) = finding(&report, "mta-sts.mx");
    assert!(
        status == "fail" && message.contains("rogue.example.org"),
        "{message}"
    );

    // Renewal: a third of the 20 s lifetime left, herald orders again and swaps the new
    // certificate in; the same process keeps serving with it.
    r.herald.wait_for_log("certificate due for renewal", WAIT);
    r.herald
        .wait_for_log("certificate issued and in force", WAIT);
    let after = r.curl(STS_HOST, "/.well-known/mta-sts.txt", &[]);
    assert!(
        after.status.success(),
        "after renewal: {}",
        String::from_utf8_lossy(&after.stderr)
    );
    let issued: Vec<String> = r
        .herald
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("certificate issued and in force"))
        .cloned()
        .collect();
    assert_eq!(issued.len(), 2, "{issued:#?}");
    assert_ne!(
        not_after(&issued[0]),
        not_after(&issued[1]),
        "a new certificate"
    );
}

fn not_after(line: &str) -> String {
    line.split("not_after=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// With the ACME server gone, a failed renewal keeps the certificate in force, is logged and
/// retried with a growing wait; a restart serves the stored certificate.
#[test]
fn acme_failure_keeps_the_certificate_and_a_restart_serves_the_stored_one() {
    // renew_before longer than the lifetime: every pass wants a new certificate.
    let mut r = rig::start(3600, "100d", "", &[]);
    drop(r.pebble.take());
    let first = r.herald.wait_for_log("ACME order failed", WAIT);
    let second = r.herald.wait_for_log("ACME order failed", WAIT);
    assert!(
        first.contains("retry_in=1s") && second.contains("retry_in=2s"),
        "{first}\n{second}"
    );
    let policy = r.curl(STS_HOST, "/.well-known/mta-sts.txt", &[]);
    assert!(
        policy.status.success(),
        "old certificate still served: {policy:?}"
    );

    let config = r.herald.config.clone();
    r.herald.terminate();
    let h = crate::support::herald::Herald::start(r.dir.path(), config);
    let log = h.log.lock().unwrap().join("\n");
    assert!(log.contains("stored certificate in force"), "{log}");
    let policy = r.curl(STS_HOST, "/.well-known/mta-sts.txt", &[]);
    assert!(
        policy.status.success(),
        "stored certificate served after restart: {policy:?}"
    );
}
