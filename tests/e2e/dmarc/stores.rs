//! The same reports give the same summary from the embedded SQLite store and from a cluster's
//! PostgreSQL: both keep their totals when a report is stored, and both store a report's
//! records one at a time from the report as it came (PostgreSQL in chunks of 500). The
//! cluster migration's backfill counts stored reports as storing them did.

use serde_json::Value;

use super::flow::{mail_for, publish_spf, story};
use super::samples::{self, Row, gzip};
use super::smtp::deliver;
use super::{FEEDBACK, domain, feedback_config, herald_cmd, start, summary};
use crate::support::dns::DnsServer;
use crate::support::postgres::Postgres;

const IPS: [&str; 4] = [
    "203.0.113.10",
    "198.51.100.20",
    "198.51.100.21",
    "192.0.2.99",
];

#[test]
fn the_same_reports_give_the_same_summary_from_sqlite_and_from_postgresql() {
    let dns = DnsServer::start();
    publish_spf(&dns);
    let pg = Postgres::start();
    let (embedded, cluster) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut reports: Vec<_> = story().into_iter().map(|(r, _)| r).collect();
    // One report of 1,200 records: more than one chunk, gzip'd.
    let mut big = reports[0].clone();
    big.report_id = "big-1".into();
    big.rows = (0..1_200)
        .map(|i| Row {
            ip: IPS[i % IPS.len()],
            count: (i % 5 + 1) as u64,
            dkim_aligned: i % 3 != 0,
            spf_aligned: i % 4 == 0,
            header_from: "example.com",
            dkim: vec![("example.com", if i % 2 == 0 { "s1" } else { "s2" }, "pass")],
            spf: ("example.com", "pass"),
        })
        .collect();
    let files = embedded.path().join("saved");
    std::fs::create_dir_all(&files).unwrap();
    let mut paths = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let p = files.join(format!("{i}.xml"));
        std::fs::write(&p, r.xml()).unwrap();
        paths.push(p.display().to_string());
    }
    let p = files.join("big.xml.gz");
    std::fs::write(&p, gzip(big.xml().as_bytes())).unwrap();
    paths.push(p.display().to_string());
    reports.push(big);

    let mut configs = Vec::new();
    for (dir, with_pg) in [(&embedded, false), (&cluster, true)] {
        let (mut cfg, _) = feedback_config(dir.path(), &dns);
        if with_pg {
            for (key, value) in crate::cluster::common::node_config(dir.path(), &pg, "node-s") {
                if key == "cluster" {
                    cfg.insert(key, value);
                }
            }
        }
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let mut argv = vec!["dmarc", "import"];
        argv.extend(paths.iter().map(String::as_str));
        let (code, out, _) = herald_cmd(&path, &argv);
        assert_eq!(code, 0, "{out}");
        configs.push(path);
    }

    let same = |mut s: Value| {
        s["generated_at"] = Value::Null;
        s["since"] = Value::Null;
        s
    };
    let (a, b) = (same(summary(&configs[0])), same(summary(&configs[1])));
    assert_eq!(a, b, "SQLite:\n{a:#}\nPostgreSQL:\n{b:#}");
    let expected: u64 = reports
        .iter()
        .filter(|r| r.domain == "example.com")
        .flat_map(|r| &r.rows)
        .map(|row| row.count)
        .sum();
    assert_eq!(domain(&a, "example.com")["messages"], expected, "{a:#}");
    assert_eq!(
        pg.query(
            "SELECT count(*) FROM herald_dmarc_rows r JOIN herald_dmarc_reports p \
                  ON r.report = p.id WHERE p.report_id = 'big-1'"
        ),
        "1200"
    );
}

#[test]
fn with_postgres_a_forged_report_gives_way_to_the_genuine_one_and_leaves_no_total() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    publish_spf(&dns);
    let pg = Postgres::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    for (key, value) in crate::cluster::common::node_config(dir.path(), &pg, "node-f") {
        if key == "cluster" {
            cfg.insert(key, value);
        }
    }
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    // A forger takes the id of Google's next report; the genuine report replaces it.
    let (genuine, sender) = story().remove(7);
    let squatter = genuine.clone();
    let mail = samples::multipart_gzip_mail(&squatter, "reports@forger.test", &rcpt);
    assert!(deliver(listen, &rcpt, &mail).text.contains("1 stored"));
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_dmarc_totals WHERE NOT verified"),
        "1"
    );
    let reply = deliver(listen, &rcpt, &mail_for(&genuine, sender, &rcpt));
    assert!(reply.text.contains("1 stored"), "{reply:?}");
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_dmarc_totals WHERE NOT verified"),
        "0"
    );
    let s = summary(&h.config_path);
    let com = domain(&s, "example.com");
    let messages: u64 = genuine.rows.iter().map(|r| r.count).sum();
    assert_eq!(com["messages"], messages, "{com:#}");
    assert_eq!(com["unverified"]["messages"], 0, "{com:#}");
}
