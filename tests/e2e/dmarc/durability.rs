//! The report store when the storage misbehaves (issue 28). SQLite: the database's directory
//! is the lazy file system of `support::lazyfs`; a report whose commit could not be made
//! durable is answered 451 (never 250) and stored once when its sender tries again, and every
//! report answered 250 is still there after a power cut. PostgreSQL (`[cluster]`): sessions
//! ended mid-transaction cost a 451 and a retry, never a report answered 250.

use std::path::Path;

use super::flow::{mail_for, story};
use super::smtp::{Reply, deliver};
use super::{FEEDBACK, feedback_config, start, summary};
use crate::support::dns::DnsServer;
use crate::support::herald::Herald;
use crate::support::lazyfs::LazyFs;

/// herald with its report database on a lazy file system; herald first in drop order (its
/// open files would keep the file system busy).
struct ReportRig {
    herald: Option<Herald>,
    lazy: Option<LazyFs>,
    cfg: toml::Table,
    listen: std::net::SocketAddr,
    _dns: DnsServer,
    dir: tempfile::TempDir,
}

impl ReportRig {
    /// The database in `reports/<sub>reports.sqlite` (`sub`: a directory herald creates).
    fn new() -> ReportRig {
        ReportRig::with_database("")
    }

    fn with_database(sub: &str) -> ReportRig {
        let dir = tempfile::tempdir().expect("tempdir");
        let dns = DnsServer::start();
        super::flow::publish_spf(&dns);
        let (mut cfg, listen) = feedback_config(dir.path(), &dns);
        let db_dir = dir.path().join("reports");
        std::fs::create_dir_all(&db_dir).expect("mountpoint");
        let lazy = LazyFs::mount(&db_dir);
        let db = db_dir
            .join(format!("{sub}reports.sqlite"))
            .display()
            .to_string();
        crate::support::set(&mut cfg, "feedback.database", db);
        let herald = Some(start(dir.path(), cfg.clone()));
        ReportRig {
            herald,
            lazy: Some(lazy),
            cfg,
            listen,
            _dns: dns,
            dir,
        }
    }

    fn lazy(&self) -> &LazyFs {
        self.lazy.as_ref().expect("mounted")
    }

    /// Sends report `i` of the DMARC story to the feedback listener.
    fn send(&self, i: usize) -> Reply {
        let rcpt = format!("dmarc@{FEEDBACK}");
        let (r, sender) = &story()[i];
        deliver(self.listen, &rcpt, &mail_for(r, sender, &rcpt))
    }

    /// The power goes (herald with it); the disk comes back with what it kept and herald
    /// starts on it.
    fn power_cut_and_restart(&mut self) {
        self.lazy().power_cut();
        if let Some(mut h) = self.herald.take() {
            h.kill9();
        }
        let lazy = self.lazy.take().expect("mounted");
        self.lazy = Some(lazy.restart());
        self.herald = Some(start(self.dir.path(), self.cfg.clone()));
    }

    /// Reports in the database, as `herald dmarc summary` counts them.
    fn stored(&self) -> serde_json::Value {
        let config: &Path = &self.herald.as_ref().expect("herald").config_path;
        summary(config)["counters"]["dmarc_reports"].clone()
    }
}

impl Drop for ReportRig {
    fn drop(&mut self) {
        if let Some(mut h) = self.herald.take() {
            h.kill9();
        }
        self.lazy = None;
    }
}

fn stored_one(reply: &Reply) {
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.text.contains("1 stored"), "{reply:?}");
}

#[test]
fn a_report_whose_commit_fsync_fails_gets_451_and_is_stored_once_when_sent_again() {
    let mut rig = ReportRig::new();
    stored_one(&rig.send(0));
    rig.lazy().fail_fsyncs(1);
    let refused = rig.send(1);
    assert_eq!(refused.code, 451, "{refused:?}");
    assert!(refused.text.starts_with("4.3.0"), "{refused:?}");
    // Linux forgets the pages a failed fsync could not write and the next fsync succeeds: the
    // report sent again must be written again, not taken as already there.
    stored_one(&rig.send(1));
    assert_eq!(rig.stored(), 2);
    rig.power_cut_and_restart();
    assert_eq!(rig.stored(), 2, "a report answered 250 was lost");
    let again = rig.send(1);
    assert!(again.text.contains("1 duplicate"), "{again:?}");
}

#[test]
fn reports_answered_250_survive_a_power_cut_and_a_full_disk_gets_452() {
    // herald creates the database, and the directory it is in: both names must be durable.
    let mut rig = ReportRig::with_database("store/");
    stored_one(&rig.send(0));
    rig.power_cut_and_restart();
    assert_eq!(rig.stored(), 1, "the report answered 250 was lost");
    stored_one(&rig.send(1));
    rig.lazy().set_full(true);
    let refused = rig.send(2);
    assert_eq!(refused.code, 452, "{refused:?}");
    assert!(refused.text.starts_with("4.3.1"), "{refused:?}");
    rig.lazy().set_full(false);
    stored_one(&rig.send(2));
    rig.power_cut_and_restart();
    assert_eq!(rig.stored(), 3, "a report answered 250 was lost");
}

/// Ends every session herald holds in the cluster's PostgreSQL; one `t` per session ended.
const TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name LIKE 'herald %' AND pid <> pg_backend_pid()";

#[test]
fn with_postgres_ending_sessions_mid_transaction_every_report_answered_250_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = DnsServer::start();
    let pg = crate::support::postgres::Postgres::start();
    let (mut cfg, listen) = feedback_config(dir.path(), &dns);
    for (key, value) in crate::cluster::common::node_config(dir.path(), &pg, "node-r") {
        if key == "cluster" {
            cfg.insert(key, value);
        }
    }
    let h = start(dir.path(), cfg);
    let rcpt = format!("dmarc@{FEEDBACK}");
    let reports = story();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (mut terminated, mut refused) = (0, 0);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let _done = crate::cluster::terminated::DoneWhenDropped(&done);
            let mut refused = 0;
            for (r, sender) in &reports {
                // As a receiver does: the report again after each 4xx.
                for attempt in 0.. {
                    let reply = deliver_or_deferred(listen, &rcpt, &mail_for(r, sender, &rcpt));
                    if reply.code == 250 {
                        // "1 duplicate" when the session ended after the server committed
                        // but before herald heard it (a 451 for a stored report).
                        let once = ["1 stored", "1 duplicate"];
                        assert!(once.iter().any(|w| reply.text.contains(w)), "{reply:?}");
                        break;
                    }
                    assert!((400..500).contains(&reply.code), "{reply:?}");
                    assert!(attempt < 50, "herald never recovered: {reply:?}");
                    refused += 1;
                }
            }
            refused
        });
        // Sessions end again and again while the reports arrive (each round is one psql).
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            terminated += pg.query(TERMINATE).lines().filter(|l| *l == "t").count();
        }
        refused = sender.join().expect("sender");
    });
    eprintln!(
        "{} reports: {refused} answers 451, {terminated} database sessions ended",
        reports.len()
    );
    assert!(terminated >= 3, "the test ended herald's sessions");
    // Exactly one row each: nothing lost, nothing stored twice.
    assert_eq!(
        pg.query("SELECT count(*) FROM herald_dmarc_reports"),
        reports.len().to_string()
    );
    assert_eq!(
        summary(&h.config_path)["counters"]["dmarc_reports"],
        reports.len() as u64
    );
}

/// As [`deliver`], but a 4xx to MAIL or RCPT is an answer too (the session ends there).
fn deliver_or_deferred(addr: std::net::SocketAddr, rcpt: &str, mail: &[u8]) -> Reply {
    let (mut c, greeting) = super::smtp::Client::connect(addr);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(c.cmd("EHLO mail-sender.report.test").code, 250);
    for line in ["MAIL FROM:<>".to_string(), format!("RCPT TO:<{rcpt}>")] {
        let r = c.cmd(&line);
        if r.code != 250 {
            return r;
        }
    }
    let r = c.data(mail);
    let _ = c.cmd("QUIT");
    r
}
