//! DMARCbis in `herald check`: the organizational domain by the DNS tree walk (RFC 9989), and
//! where it differs from the Public Suffix List, said so; `t=`, `np=` and the legacy `pct=`.

use serde_json::Value;

use super::{DOMAIN, INCLUDE, World, message, status};

#[test]
fn check_reports_where_the_tree_walk_and_the_public_suffix_list_differ() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    let sub = "news.example.test";
    w.dns
        .add_txt(sub, &format!("v=spf1 include:{INCLUDE} ~all"));
    w.dns.add_txt(
        &format!("_dmarc.{sub}"),
        "v=DMARC1; p=reject; np=reject; pct=50; rua=mailto:d@example.test",
    );
    let check = || -> (i32, Value) {
        let run = w.herald(&["check", sub, "--json"]);
        (run.code, serde_json::from_str(&run.stdout).expect("JSON"))
    };
    // Both the subdomain and its parent publish DMARC: the walk ends at the parent, as the
    // PSL does, and the parent's key aligns.
    let (_, report) = check();
    assert_eq!(status(&report, "dmarc.orgdomain"), "info", "{report:#}");
    assert!(message(&report, "dmarc.orgdomain").contains("agrees"));
    assert_eq!(status(&report, "dmarc.alignment"), "pass");
    assert_eq!(status(&report, "dmarc.np"), "info");
    assert_eq!(status(&report, "dmarc.pct"), "warn", "pct=50 is legacy");

    // Without the parent's record the subdomain is its own organization under DMARCbis, while
    // the PSL still says example.test: herald's d=example.test no longer aligns.
    w.dns.remove(&format!("_dmarc.{DOMAIN}"));
    let (code, report) = check();
    assert_eq!(code, 1);
    assert_eq!(status(&report, "dmarc.orgdomain"), "warn");
    let m = message(&report, "dmarc.orgdomain");
    assert!(
        m.contains(&format!("gives {sub} as the organizational domain"))
            && m.contains(&format!("Public Suffix List gives {DOMAIN}")),
        "{m}"
    );
    assert_eq!(status(&report, "dmarc.alignment"), "fail");
    assert!(message(&report, "dmarc.alignment").contains("tree walk"));

    // t=y: testing mode is named.
    w.dns.set_txt(
        &format!("_dmarc.{sub}"),
        "v=DMARC1; p=reject; t=y; psd=n; rua=mailto:d@example.test",
    );
    let (_, report) = check();
    assert_eq!(status(&report, "dmarc.testing"), "warn");
    assert_eq!(status(&report, "dmarc.psd"), "info");
}
