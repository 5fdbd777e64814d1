//! DMARC reports received in a cluster live in its PostgreSQL: a report imported (or received)
//! on one node shows in `herald dmarc` on every other.

use std::path::Path;
use std::process::Command;

use super::common::node_config;
use crate::support::herald::herald_bin;
use crate::support::postgres::Postgres;

fn herald(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(herald_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run herald");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <report_id>cluster-1</report_id>
    <date_range><begin>BEGIN</begin><end>END</end></date_range>
  </report_metadata>
  <policy_published>
    <domain>example.org</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp><pct>100</pct>
  </policy_published>
  <record>
    <row>
      <source_ip>192.0.2.10</source_ip><count>7</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated>
    </row>
    <identifiers><header_from>example.org</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.org</domain><selector>s1</selector><result>pass</result></dkim>
      <spf><domain>example.org</domain><result>pass</result></spf>
    </auth_results>
  </record>
</feedback>
"#;

#[test]
fn a_dmarc_report_imported_on_one_node_shows_on_the_others() {
    let pg = Postgres::start();
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut configs = Vec::new();
    for (dir, name) in [(&a, "node-a"), (&b, "node-b")] {
        let cfg = node_config(dir.path(), &pg, name);
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, toml::to_string(&cfg).expect("toml")).expect("write config");
        configs.push(path);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let xml = REPORT
        .replace("BEGIN", &(now - 86400).to_string())
        .replace("END", &now.to_string());
    let file = a.path().join("google.xml");
    std::fs::write(&file, xml).expect("write report");
    let (code, out) = herald(
        &configs[0],
        &["dmarc", "import", &file.display().to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 stored"), "{out}");

    let (code, out) = herald(&configs[1], &["dmarc", "summary", "--json"]);
    assert_eq!(code, 0, "{out}");
    let start = out.find('{').unwrap_or_else(|| panic!("JSON: {out}"));
    let s: serde_json::Value = serde_json::from_str(&out[start..]).expect("summary JSON");
    assert_eq!(s["counters"]["dmarc_reports"], 1, "{s}");
    assert!(out.contains("example.org"), "{out}");
    // Importing it again on node b is a duplicate, counted once across the cluster.
    let (code, out) = herald(
        &configs[1],
        &["dmarc", "import", &file.display().to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 stored, 1 duplicate"), "{out}");
    assert_eq!(pg.query("SELECT count(*) FROM herald_dmarc_reports"), "1");
    assert_eq!(pg.query("SELECT sum(count) FROM herald_dmarc_rows"), "7");
}
