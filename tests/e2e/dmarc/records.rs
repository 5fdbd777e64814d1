//! Records and checks that make reports flow: `herald dns` prints the feedback domain's MX, the
//! `rua=` at herald and the RFC 7489 §7.1 authorization records; `herald check` reports
//! `dmarc.reports`; `herald dmarc import` loads reports saved elsewhere.

use serde_json::Value;

use super::flow::{mail_for, publish_spf, story};
use super::samples::{gzip, zip};
use super::smtp::deliver;
use super::{FEEDBACK, domain, feedback_config, herald_cmd, start, summary};
use crate::support::dns::DnsServer;

fn records(config: &std::path::Path) -> Vec<Value> {
    let (code, out, err) = herald_cmd(config, &["dns", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["records"].as_array().unwrap().clone()
}

fn find<'a>(records: &'a [Value], name: &str) -> Option<&'a Value> {
    records.iter().find(|r| r["name"] == name)
}

fn write_config(dir: &std::path::Path, cfg: &toml::Table) -> std::path::PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(&path, toml::to_string(cfg).unwrap()).unwrap();
    path
}

#[test]
fn dns_prints_the_feedback_mx_rua_and_authorization_records() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (cfg, _) = feedback_config(dir.path(), &dns);
    let config = write_config(dir.path(), &cfg);
    let recs = records(&config);
    let mx = find(&recs, FEEDBACK).expect("MX for the feedback domain");
    assert_eq!(mx["type"], "MX");
    assert_eq!(mx["value"], "10 herald.example.test.");
    for d in ["example.com", "example.org", "example.test"] {
        let dmarc = find(&recs, &format!("_dmarc.{d}")).unwrap();
        assert_eq!(
            dmarc["value"],
            format!("v=DMARC1; p=none; rua=mailto:dmarc@{FEEDBACK}")
        );
        let auth = find(&recs, &format!("{d}._report._dmarc.{FEEDBACK}"));
        if d == "example.test" {
            // The report domain is inside example.test's organization: no authorization.
            assert!(auth.is_none(), "{auth:?}");
            continue;
        }
        let auth = auth.unwrap_or_else(|| panic!("no §7.1 record for {d}"));
        assert_eq!(auth["value"], "v=DMARC1");
        assert_eq!(auth["purpose"], "report-authorization");
    }
    // The zone text carries the MX unquoted, and the file loads in named-checkzone.
    let (code, zone, _) = herald_cmd(&config, &["dns"]);
    assert_eq!(code, 0);
    assert!(
        zone.contains(&format!("{FEEDBACK}. 3600 IN MX 10 herald.example.test.")),
        "{zone}"
    );
}

#[test]
fn without_feedback_an_outside_dmarc_rua_gets_its_authorization_record() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, _) = feedback_config(dir.path(), &dns);
    cfg.remove("feedback");
    crate::support::set(&mut cfg, "spf.dmarc_rua", "mailto:dmarc@example.test");
    let config = write_config(dir.path(), &cfg);
    let recs = records(&config);
    assert!(recs.iter().all(|r| r["type"] != "MX"));
    assert_eq!(
        find(&recs, "_dmarc.example.com").unwrap()["value"],
        "v=DMARC1; p=none; rua=mailto:dmarc@example.test"
    );
    assert!(find(&recs, "example.com._report._dmarc.example.test").is_some());
    assert!(find(&recs, "example.org._report._dmarc.example.test").is_some());
    // The report address's own domain needs no authorization.
    assert!(find(&recs, "example.test._report._dmarc.example.test").is_none());
}

fn check(config: &std::path::Path, domain: &str) -> Value {
    let (_, out, err) = herald_cmd(config, &["check", domain, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("check JSON ({e}): {out}{err}"))
}

fn finding(report: &Value, id: &str) -> Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id} in {report:#}"))
}

#[test]
fn check_reports_missing_authorization_and_recent_reports() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    publish_spf(&dns);
    let (cfg, listen) = feedback_config(dir.path(), &dns);
    let rua = format!("v=DMARC1; p=none; rua=mailto:dmarc@{FEEDBACK}");
    dns.add_txt("_dmarc.example.com", &rua);
    dns.add_txt("_dmarc.example.org", &rua);
    dns.add_txt(
        &format!("example.com._report._dmarc.{FEEDBACK}"),
        "v=DMARC1",
    );
    let h = start(dir.path(), cfg);

    // example.org lacks its §7.1 record: receivers would send nothing.
    let f = finding(&check(&h.config_path, "example.org"), "dmarc.reports");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains(&format!("example.org._report._dmarc.{FEEDBACK}")),
        "{f}"
    );
    // example.com is authorized but nothing has arrived yet.
    let f = finding(&check(&h.config_path, "example.com"), "dmarc.reports");
    assert_eq!(f["status"], "warn", "{f}");
    let rcpt = format!("dmarc@{FEEDBACK}");
    let (r, sender) = &story()[8];
    assert_eq!(
        deliver(listen, &rcpt, &mail_for(r, sender, &rcpt)).code,
        250
    );
    let f = finding(&check(&h.config_path, "example.com"), "dmarc.reports");
    assert_eq!(f["status"], "pass", "{f}");
}

#[test]
fn import_loads_xml_gzip_zip_eml_and_mbox_files() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    publish_spf(&dns);
    let (cfg, _) = feedback_config(dir.path(), &dns);
    let config = write_config(dir.path(), &cfg);
    let reports = story();
    let files = dir.path().join("saved");
    std::fs::create_dir_all(&files).unwrap();
    let xml = files.join("a.xml");
    std::fs::write(&xml, reports[0].0.xml()).unwrap();
    let gz = files.join("b.xml.gz");
    std::fs::write(&gz, gzip(reports[1].0.xml().as_bytes())).unwrap();
    let zp = files.join("c.zip");
    std::fs::write(
        &zp,
        zip(&[("c.xml".into(), reports[2].0.xml().into_bytes())]),
    )
    .unwrap();
    let eml = files.join("d.eml");
    std::fs::write(
        &eml,
        mail_for(&reports[8].0, "microsoft", "dmarc@example.test"),
    )
    .unwrap();
    let mbox = files.join("inbox.mbox");
    let mut mb = Vec::new();
    for (r, s) in &reports[9..11] {
        mb.extend_from_slice(b"From MAILER-DAEMON Tue Dec  1 10:00:00 2026\n");
        mb.extend_from_slice(&mail_for(r, s, "dmarc@example.test"));
        mb.extend_from_slice(b"\n");
    }
    std::fs::write(&mbox, mb).unwrap();
    let args: Vec<String> = [&xml, &gz, &zp, &eml, &mbox]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut argv = vec!["dmarc", "import"];
    argv.extend(args.iter().map(String::as_str));
    let (code, out, _) = herald_cmd(&config, &argv);
    assert_eq!(code, 0, "{out}");
    let s = summary(&config);
    assert_eq!(s["counters"]["dmarc_reports"], 6);
    assert_eq!(domain(&s, "example.org")["reports"], 1);
    // Importing again stores nothing new.
    let (code, out, _) = herald_cmd(&config, &argv);
    assert_eq!(code, 0);
    assert!(out.contains("0 stored, 1 duplicate"), "{out}");
    assert_eq!(summary(&config)["counters"]["duplicates"], 6);
}

#[test]
fn a_dead_resolver_costs_the_summary_seconds_not_a_timeout_per_domain() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let (mut cfg, _) = feedback_config(dir.path(), &dns);
    // A resolver that receives every question and never answers.
    let dead = std::net::UdpSocket::bind(format!("{}:0", crate::support::free_ip())).unwrap();
    crate::support::set(
        &mut cfg,
        "dns.servers",
        vec![dead.local_addr().unwrap().to_string()],
    );
    let config = write_config(dir.path(), &cfg);
    let files = dir.path().join("saved");
    std::fs::create_dir_all(&files).unwrap();
    let (base, _) = &story()[9]; // Yahoo: herald plus an ESP address
    let mut args = Vec::new();
    for (i, d) in ["example.com", "example.org", "example.net", "example.edu"]
        .into_iter()
        .enumerate()
    {
        let mut r = base.clone();
        r.domain = d;
        r.report_id = format!("dead-{i}");
        let path = files.join(format!("{d}.xml"));
        std::fs::write(&path, r.xml()).unwrap();
        args.push(path.display().to_string());
    }
    let mut argv = vec!["dmarc", "import"];
    argv.extend(args.iter().map(String::as_str));
    assert_eq!(herald_cmd(&config, &argv).0, 0);
    let start = std::time::Instant::now();
    let s = summary(&config);
    let took = start.elapsed();
    assert_eq!(s["domains"].as_array().unwrap().len(), 4, "{s:#}");
    // Before: an 8 s SPF and an 8 s PTR question per domain, one after the other (64 s here).
    assert!(
        took < std::time::Duration::from_secs(20),
        "summary took {took:?} with a dead resolver"
    );
}
