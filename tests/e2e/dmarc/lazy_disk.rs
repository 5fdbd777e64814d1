//! The report store on a failing and a forgetful disk (issue 28): the database's directory is
//! the lazy file system of `support::lazyfs`. A report whose commit could not be made durable
//! is answered 451 (never 250) and stored once when its sender tries again; every report
//! answered 250 is still there after a power cut.

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
    fn new() -> ReportRig {
        let dir = tempfile::tempdir().expect("tempdir");
        let dns = DnsServer::start();
        super::flow::publish_spf(&dns);
        let (mut cfg, listen) = feedback_config(dir.path(), &dns);
        let db_dir = dir.path().join("reports");
        std::fs::create_dir_all(&db_dir).expect("mountpoint");
        let lazy = LazyFs::mount(&db_dir);
        let db = db_dir.join("reports.sqlite").display().to_string();
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
fn reports_answered_250_survive_a_power_cut_and_a_full_disk_gets_451() {
    let mut rig = ReportRig::new();
    // The first report creates the database: its name must be durable too.
    stored_one(&rig.send(0));
    rig.power_cut_and_restart();
    assert_eq!(rig.stored(), 1, "the report answered 250 was lost");
    stored_one(&rig.send(1));
    rig.lazy().set_full(true);
    let refused = rig.send(2);
    assert_eq!(refused.code, 451, "{refused:?}");
    rig.lazy().set_full(false);
    stored_one(&rig.send(2));
    rig.power_cut_and_restart();
    assert_eq!(rig.stored(), 3, "a report answered 250 was lost");
}
