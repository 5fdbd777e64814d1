//! `herald dns` prints the MX and SPF records of an app's return-path domain, and `herald
//! check` verifies them.

use crate::dns_check::{World, status};
use crate::support::herald::DEMO_HASH;

#[test]
fn herald_dns_prints_and_herald_check_verifies_the_return_path_records() {
    let w = World::new(&[("s1", "ed25519", true)]);
    let mut text = std::fs::read_to_string(&w.config).expect("config");
    text.push_str(&format!(
        "\n[apps.news]\npassword_hash = \"{DEMO_HASH}\"\nsenders = [\"@example.test\"]\n\
         return_path_domain = \"bounces.example.test\"\n"
    ));
    std::fs::write(&w.config, text).expect("config");
    let json = w.records();
    let records = json["records"].as_array().expect("records");
    let of = |rtype: &str| {
        records
            .iter()
            .find(|r| r["name"] == "bounces.example.test" && r["type"] == rtype)
            .unwrap_or_else(|| panic!("no {rtype} for the return path in {json:#}"))
    };
    assert_eq!(of("MX")["value"], "10 herald.example.test.");
    let spf = of("TXT")["value"].as_str().expect("spf").to_string();
    assert!(
        spf.starts_with("v=spf1 include:_spf.relay.example.test"),
        "{spf}"
    );

    w.publish_all();
    let (_, report) = w.check();
    assert_eq!(status(&report, "return_path.mx"), "fail", "{report:#}");
    w.dns
        .add_mx("bounces.example.test", 10, "herald.example.test");
    let (_, report) = w.check();
    assert_eq!(status(&report, "return_path.mx"), "pass", "{report:#}");
    assert_eq!(status(&report, "return_path.spf"), "pass", "{report:#}");
}
