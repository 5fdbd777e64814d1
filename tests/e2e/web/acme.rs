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
