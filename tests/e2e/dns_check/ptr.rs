//! `herald check`'s reverse DNS of the egress addresses: missing, not forward-confirmed, and
//! named differently from EHLO, each failing with its own fix; the correct setup passing.

use std::net::IpAddr;

use super::{EGRESS_V4, EGRESS_V6, EHLO, World, status};
use crate::support::dns::RecordType;

fn finding(report: &serde_json::Value, id: &str) -> (String, String, String) {
    let f = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {report:#}"));
    let text = |k: &str| f[k].as_str().unwrap_or_default().to_string();
    (text("status"), text("message"), text("fix"))
}

#[test]
fn check_fails_missing_unconfirmed_and_misnamed_reverse_dns_each_with_its_fix() {
    let w = World::new(&[("e1", "ed25519", true)]);
    w.publish_all();
    let v4 = format!("ptr.{EGRESS_V4}");
    let v6 = format!("ptr.{EGRESS_V6}");
    let (code, report) = w.check();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(status(&report, &v4), "pass");
    assert_eq!(status(&report, &v6), "pass");

    let ip: IpAddr = EGRESS_V4.parse().unwrap();
    let reverse = hickory_proto::rr::Name::from(ip).to_ascii();

    // Missing PTR.
    w.dns.remove(&reverse);
    let (code, report) = w.check();
    assert_eq!(code, 1);
    let (s, m, fix) = finding(&report, &v4);
    assert_eq!(s, "fail");
    assert!(m.contains("no PTR record"), "{m}");
    assert!(
        fix.contains(&format!("PTR record to {EHLO}")),
        "the fix names the PTR to set: {fix}"
    );
    assert_eq!(status(&report, &v6), "pass", "the other address is fine");

    // A PTR whose name does not resolve back to the address.
    w.dns.add_ptr(ip, "static.host.example.net");
    w.dns
        .add_a("static.host.example.net", "198.51.100.7".parse().unwrap());
    let (code, report) = w.check();
    assert_eq!(code, 1);
    let (s, m, fix) = finding(&report, &v4);
    assert_eq!(s, "fail");
    assert!(
        m.contains("198.51.100.7") && m.contains("not forward-confirmed"),
        "{m}"
    );
    assert!(
        fix.contains(&format!("publish static.host.example.net A {EGRESS_V4}")),
        "{fix}"
    );

    // Forward-confirmed, but not the EHLO name.
    w.dns.remove_type("static.host.example.net", RecordType::A);
    w.dns.add_ip("static.host.example.net", ip);
    let (code, report) = w.check();
    assert_eq!(code, 1);
    let (s, m, fix) = finding(&report, &v4);
    assert_eq!(s, "fail");
    assert!(m.contains(&format!("EHLO {EHLO}")), "{m}");
    assert!(
        fix.contains("hostname = \"static.host.example.net\""),
        "{fix}"
    );

    // The text form carries the fix under the address.
    let run = w.herald(&["check", super::DOMAIN]);
    assert!(
        run.stdout.contains(&format!("FAIL   {v4}"))
            && run.stdout.contains("fix: set [server] hostname"),
        "{}",
        run.stdout
    );
}
