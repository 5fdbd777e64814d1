//! `herald check`'s verdict for Gmail, Yahoo and Microsoft: a domain passing every rule is ready
//! for all three; a bulk app without one-click unsubscribe fails that rule (where required).

use serde_json::Value;

use super::{DOMAIN, EGRESS_V4, World};
use crate::support::herald::DEMO_HASH;

/// `provider` → (verdict, the rule `id`'s status).
fn verdict(report: &Value, provider: &str, rule: &str) -> (String, String) {
    let v = report["readiness"]
        .as_array()
        .expect("readiness")
        .iter()
        .find(|v| v["provider"] == provider)
        .unwrap_or_else(|| panic!("no {provider} in {report:#}"));
    let r = v["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["id"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule} for {provider}: {report:#}"));
    (
        v["verdict"].as_str().unwrap_or_default().to_string(),
        r["status"].as_str().unwrap_or_default().to_string(),
    )
}

fn edit(w: &World, from: &str, to: &str) {
    let text = std::fs::read_to_string(&w.config).expect("config");
    assert!(text.contains(from), "{from} in {text}");
    std::fs::write(&w.config, text.replace(from, to)).expect("write config");
}

#[test]
fn check_says_ready_for_all_three_and_a_bulk_app_needs_one_click_unsubscribe() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    let mut text = std::fs::read_to_string(&w.config).unwrap();
    text.push_str(&format!(
        "\n[apps.news]\npassword_hash = \"{DEMO_HASH}\"\nsenders = [\"@{DOMAIN}\"]\nbulk = false\n"
    ));
    std::fs::write(&w.config, text).unwrap();

    // Every rule passes: ready for all three.
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    for provider in ["gmail", "yahoo", "microsoft"] {
        for rule in [
            "dkim",
            "spf",
            "dmarc",
            "ptr",
            "tls",
            "format",
            "unsubscribe",
        ] {
            assert_eq!(
                verdict(&report, provider, rule),
                ("ready".to_string(), "pass".to_string()),
                "{provider} {rule}: {report:#}"
            );
        }
        // No running herald to ask: the complaint rate is unknown, and says why.
        assert_eq!(verdict(&report, provider, "complaints").1, "info");
    }
    let run = w.herald(&["check", DOMAIN]);
    assert!(
        run.stdout.contains("gmail      ready") && run.stdout.contains("microsoft  ready"),
        "{}",
        run.stdout
    );

    // Marked bulk without one-click unsubscribe: Gmail and Yahoo refuse; Microsoft only
    // recommends it.
    edit(&w, "bulk = false", "bulk = true");
    let run = w.herald(&["check", "--app", "news", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let all: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(all["app"], "news");
    assert_eq!(all["ok"], false);
    let report = &all["reports"][0];
    assert_eq!(report["domain"], DOMAIN);
    for provider in ["gmail", "yahoo"] {
        assert_eq!(
            verdict(report, provider, "unsubscribe"),
            ("not ready".to_string(), "fail".to_string()),
            "{report:#}"
        );
    }
    assert_eq!(verdict(report, "microsoft", "unsubscribe").0, "ready");
    let rule = &report["readiness"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "unsubscribe")
        .unwrap()
        .clone();
    assert!(
        rule["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("unsubscribe = \"one-click\" in [apps.news]"),
        "{rule:#}"
    );

    // With one-click unsubscribe it passes again.
    edit(
        &w,
        "bulk = true",
        "bulk = true\nunsubscribe = \"one-click\"\n\n[web]\nlisten = \"127.0.0.1:1\"",
    );
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        verdict(&report, "gmail", "unsubscribe"),
        ("ready".to_string(), "pass".to_string())
    );

    // Without reverse DNS for one address, Gmail and Yahoo are not ready.
    let ip: std::net::IpAddr = EGRESS_V4.parse().unwrap();
    w.dns.remove(&hickory_proto::rr::Name::from(ip).to_ascii());
    let (code, report) = w.check();
    assert_eq!(code, 1);
    assert_eq!(
        verdict(&report, "yahoo", "ptr"),
        ("not ready".to_string(), "fail".to_string())
    );
    assert_eq!(verdict(&report, "microsoft", "ptr").0, "ready");
}
