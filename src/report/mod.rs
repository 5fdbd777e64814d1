//! TLS-RPT (RFC 8460): counting TLS successes and failures per policy domain and UTC day,
//! building the JSON report and sending it to each `rua`.
//!
//! Delivery and the MTA-STS resolver emit [`TlsEvent`]s (defined with the policy, in
//! `mta_sts`) into the [`TlsReporter`], which implements their [`TlsSink`]: one event after
//! every delivery session (or failed attempt to establish one), with the directive it was made
//! under, and one for each delivery made without a policy that could not be fetched.
//! `herald serve` creates one [`TlsReporter`] and one [`send::ReportSender`], and runs
//! [`spawn_periodic`]; the admin endpoint and `herald report flush` call [`flush`].

pub mod build;
pub mod cluster;
mod flush;
pub mod send;
pub mod store;

use std::collections::btree_map::Entry;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use mail_auth::report::tlsrpt::ResultType;

pub use self::flush::{FlushSummary, flush, routes, spawn_periodic};

use self::build::{Reporter, day_of};
use self::store::{Counts, DayCounts, OutboxItem, ReportDir};
use crate::clock::unix_now;
use crate::config::Config;
use crate::mta_sts::policy;
pub use crate::tls_policy::TlsOutcome;
use crate::tls_policy::{Mode, TlsDirective, TlsEvent, TlsSink};

/// The admin endpoint route that runs [`flush`] in a serving herald (`POST`, answers the
/// [`FlushSummary`] as JSON); `herald report flush` calls it first.
pub const FLUSH_PATH: &str = "/report/flush";

/// Reports that could not be delivered for this long are given up.
pub(crate) const OUTBOX_MAX_AGE: u64 = 7 * 24 * 3600;

/// Collects TLS outcomes for TLS-RPT. Counts are saved under `[report] dir` by a writer
/// thread shortly after each record (bursts are coalesced), so a restart keeps them.
pub struct TlsReporter {
    shared: Arc<Shared>,
    writer: Option<mpsc::Sender<()>>,
    /// `[report] enabled`: when off, nothing is counted (a reload may change it).
    enabled: AtomicBool,
    /// With `[cluster]`: where the counts go and reports are built and sent from.
    cluster: Option<cluster::ClusterReports>,
}

struct Shared {
    counts: Mutex<Counts>,
    /// Serializes writes of `counts.json` so that an older snapshot never replaces a newer one.
    io: Mutex<()>,
    dir: Option<ReportDir>,
    /// Who the reports say they are from (a reload may change it).
    reporter: Mutex<Reporter>,
}

impl Default for TlsReporter {
    /// A reporter that keeps counts in memory only (tests, benchmarks).
    fn default() -> Self {
        TlsReporter {
            shared: Arc::new(Shared {
                counts: Mutex::new(Counts::new()),
                io: Mutex::new(()),
                dir: None,
                reporter: Mutex::new(Reporter {
                    organization: "herald".into(),
                    contact: None,
                    hostname: "localhost".into(),
                }),
            }),
            writer: None,
            enabled: AtomicBool::new(true),
            cluster: None,
        }
    }
}

impl TlsReporter {
    /// Opens the reporter on `[report] dir`, loading the counts a previous run left.
    pub fn open(cfg: &Config) -> anyhow::Result<TlsReporter> {
        let dir = ReportDir::new(&cfg.report_dir());
        let counts = dir.load_counts().map_err(|e| {
            anyhow::anyhow!(
                "report.dir: cannot read pending TLS-RPT counts in {}: {e}",
                cfg.report_dir().display()
            )
        })?;
        let shared = Arc::new(Shared {
            counts: Mutex::new(counts),
            io: Mutex::new(()),
            dir: Some(dir),
            reporter: Mutex::new(Reporter::of(cfg)),
        });
        let (tx, rx) = mpsc::channel::<()>();
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("tlsrpt-writer".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    if let Err(e) = writer_shared.save() {
                        tracing::error!("tls-rpt: cannot save pending counts: {e}");
                    }
                }
            })?;
        Ok(TlsReporter {
            shared,
            writer: Some(tx),
            enabled: AtomicBool::new(cfg.report.enabled),
            cluster: None,
        })
    }

    /// This reporter in a cluster: counts move to `db` (see [`cluster`]) and reports are built
    /// and sent from there. Run [`cluster::spawn_sync`] with it.
    pub fn with_cluster(mut self, db: crate::cluster::Db) -> TlsReporter {
        self.cluster = Some(cluster::ClusterReports::new(db));
        self
    }

    /// Moves this node's counts into the cluster's database (nothing without `[cluster]`).
    /// The local copy is cleared once the database has them; on failure it is kept.
    pub async fn push_to_cluster(&self) -> io::Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let taken = std::mem::take(&mut *self.shared.lock_counts());
        if taken.is_empty() {
            return Ok(());
        }
        let list: Vec<DayCounts> = taken.values().cloned().collect();
        if let Err(e) = cluster.push(&list).await {
            let mut counts = self.shared.lock_counts();
            for (key, day) in taken {
                match counts.entry(key) {
                    Entry::Occupied(mut newer) => newer.get_mut().merge(day),
                    Entry::Vacant(slot) => {
                        slot.insert(day);
                    }
                }
            }
            return Err(e);
        }
        self.shared.save()
    }

    /// Applies a reloaded `[report]` section (enabled, organization, contact) and host name
    /// to what is counted and built from now on. `[report] dir` needs a restart.
    pub fn reload(&self, cfg: &Config) {
        self.enabled.store(cfg.report.enabled, Ordering::Relaxed);
        *self
            .shared
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Reporter::of(cfg);
    }

    /// Records one outcome for the policy domain of `directive` (an MTA-STS policy in `enforce`
    /// or `testing` mode, or DANE for one MX host: policy type `tlsa`). Opportunistic and `Required` deliveries have no published policy and
    /// are not counted; `StsFailed` is counted by the resolver (see
    /// [`TlsReporter::record_policy_failure`]).
    pub fn record(&self, directive: &TlsDirective, outcome: TlsOutcome) {
        if let TlsDirective::Dane { target } = directive {
            let records = target.record_lines();
            self.update(&target.domain, |entry| {
                let tlsa = entry.tlsa_mut();
                tlsa.note(&target.host, &records);
                match outcome {
                    TlsOutcome::Success => tlsa.success += 1,
                    TlsOutcome::Failure {
                        result_type,
                        mx_host,
                        ip,
                        detail,
                    } => {
                        let host = (!mx_host.is_empty()).then_some(mx_host);
                        entry.add_tlsa_failure(result_type, host, ip, detail)
                    }
                }
            });
            return;
        }
        let TlsDirective::Sts { domain, policy } = directive else {
            return;
        };
        if policy.mode == Mode::None {
            return;
        }
        self.update(domain, |entry| {
            entry.policy_string = policy::to_lines(policy);
            entry.mx_patterns = policy.mx.clone();
            match outcome {
                TlsOutcome::Success => entry.success += 1,
                TlsOutcome::Failure {
                    result_type,
                    mx_host,
                    ip,
                    detail,
                } => {
                    let host = (!mx_host.is_empty()).then_some(mx_host);
                    entry.add_failure(result_type, host, ip, detail)
                }
            }
        });
    }

    /// Records one delivery attempt to `domain` made without its announced policy, because the
    /// policy could not be fetched or parsed (`sts-policy-fetch-error`, `sts-policy-invalid`,
    /// `sts-webpki-invalid`). The [`crate::mta_sts::StsResolver`] emits this each time it hands
    /// out a [`TlsDirective::StsFailed`], so [`TlsReporter::record`] ignores that directive.
    pub fn record_policy_failure(&self, domain: &str, result_type: ResultType, detail: &str) {
        self.update(domain, |entry| {
            entry.add_failure(result_type, None, None, detail.to_string())
        });
    }

    fn update(&self, domain: &str, change: impl FnOnce(&mut DayCounts)) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let day = day_of(unix_now() as i64);
        {
            let mut counts = self.shared.lock_counts();
            let entry = counts
                .entry((domain.to_string(), day.clone()))
                .or_insert_with(|| DayCounts::new(domain, &day));
            change(entry);
        }
        if let Some(writer) = &self.writer {
            let _ = writer.send(());
        }
    }

    /// The counts not yet turned into reports, by domain and day.
    pub fn pending(&self) -> Vec<DayCounts> {
        self.shared.lock_counts().values().cloned().collect()
    }

    /// Saves the pending counts now (the writer thread otherwise does it shortly after each
    /// record); call at shutdown.
    pub fn persist(&self) -> io::Result<()> {
        self.shared.save()
    }
}

impl TlsSink for TlsReporter {
    fn emit(&self, event: TlsEvent) {
        count_tls_metric(&event);
        match event {
            TlsEvent::Session { directive, outcome } => self.record(&directive, outcome),
            TlsEvent::PolicyUnavailable {
                domain,
                result_type,
                detail,
            } => self.record_policy_failure(&domain, result_type, &detail),
        }
    }
}

/// Counts a TLS event in `/metrics` by policy type and result (`success` or the RFC 8460
/// result type).
fn count_tls_metric(event: &TlsEvent) {
    let result_name = |r: &ResultType| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "other".into())
    };
    let (policy, result) = match event {
        TlsEvent::Session { directive, outcome } => {
            let policy = match directive {
                TlsDirective::Opportunistic => "opportunistic",
                TlsDirective::Required => "required",
                TlsDirective::Sts { policy, .. } => match policy.mode {
                    Mode::Enforce => "mta-sts-enforce",
                    Mode::Testing => "mta-sts-testing",
                    Mode::None => "mta-sts-none",
                },
                TlsDirective::StsFailed { .. } => "mta-sts-unavailable",
                TlsDirective::Dane { .. } => "dane",
            };
            let result = match outcome {
                TlsOutcome::Success => "success".to_string(),
                TlsOutcome::Failure { result_type, .. } => result_name(result_type),
            };
            (policy, result)
        }
        TlsEvent::PolicyUnavailable { result_type, .. } => {
            ("mta-sts-unavailable", result_name(result_type))
        }
    };
    crate::metrics::tls_session(policy, &result);
}

impl Shared {
    fn lock_counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.lock_counts().clone();
        dir.save_counts(&snapshot)
    }

    /// Turns every pending count into a report saved in the outbox, then empties the counts;
    /// returns every outbox item (older undelivered ones included). Recording goes on
    /// meanwhile: the counts lock is not held while files are written.
    fn take_into_outbox(&self, now: u64) -> io::Result<Vec<OutboxItem>> {
        let reporter = self
            .reporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _io = self.io.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *self.lock_counts());
        let built: Vec<OutboxItem> = taken
            .values()
            .map(|c| OutboxItem {
                domain: c.domain.clone(),
                report: build::build(c, &reporter, now as i64),
                created_at: now,
                delivered: Vec::new(),
            })
            .collect();
        let Some(dir) = &self.dir else {
            return Ok(built);
        };
        // Outbox first: a crash in between repeats counts rather than losing them.
        let saved = built
            .iter()
            .try_for_each(|item| dir.save_item(item))
            .and_then(|()| dir.save_counts(&self.lock_counts().clone()));
        if let Err(e) = saved {
            for item in &built {
                let _ = dir.remove_item(item);
            }
            let mut counts = self.lock_counts();
            for (key, day) in taken {
                match counts.entry(key) {
                    Entry::Occupied(mut newer) => newer.get_mut().merge(day),
                    Entry::Vacant(slot) => {
                        slot.insert(day);
                    }
                }
            }
            return Err(e);
        }
        dir.load_items()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::Policy;

    fn enforce() -> TlsDirective {
        TlsDirective::Sts {
            domain: "bank.test".into(),
            policy: Arc::new(Policy {
                id: "1".into(),
                mode: Mode::Enforce,
                mx: vec!["*.bank.test".into()],
                max_age: 86400,
            }),
        }
    }

    fn failure(result_type: ResultType) -> TlsOutcome {
        TlsOutcome::Failure {
            result_type,
            mx_host: "mx1.bank.test".into(),
            ip: "127.0.0.7".parse().ok(),
            detail: "detail".into(),
        }
    }

    fn config(dir: &std::path::Path) -> Config {
        let mut cfg: Config = toml::from_str("").expect("empty config");
        cfg.report.dir = Some(dir.to_path_buf());
        cfg
    }

    #[test]
    fn counts_by_domain_day_and_failure() {
        let r = TlsReporter::default();
        r.record(&enforce(), TlsOutcome::Success);
        r.record(&enforce(), TlsOutcome::Success);
        r.record(&enforce(), failure(ResultType::CertificateExpired));
        r.record(&enforce(), failure(ResultType::CertificateExpired));
        r.record(&enforce(), failure(ResultType::StartTlsNotSupported));
        r.record(&TlsDirective::Opportunistic, TlsOutcome::Success);
        r.record(
            &TlsDirective::Required,
            failure(ResultType::CertificateExpired),
        );
        let failed = TlsDirective::StsFailed {
            domain: "other.test".into(),
            result_type: ResultType::StsPolicyFetchError,
            detail: "down".into(),
        };
        r.record(&failed, TlsOutcome::Success);
        r.record_policy_failure("other.test", ResultType::StsPolicyFetchError, "down");
        let pending = r.pending();
        assert_eq!(pending.len(), 2);
        let bank = pending
            .iter()
            .find(|c| c.domain == "bank.test")
            .expect("bank");
        assert_eq!(bank.success, 2);
        assert_eq!(bank.failure_total(), 3);
        assert_eq!(bank.failures[0].count, 2);
        assert_eq!(bank.mx_patterns, vec!["*.bank.test"]);
        let other = pending
            .iter()
            .find(|c| c.domain == "other.test")
            .expect("other");
        assert_eq!(other.success, 0);
        assert_eq!(
            other.failures[0].result_type,
            ResultType::StsPolicyFetchError
        );
    }

    #[test]
    fn counts_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        {
            let r = TlsReporter::open(&cfg).expect("open");
            r.record(&enforce(), TlsOutcome::Success);
            r.record(&enforce(), failure(ResultType::CertificateHostMismatch));
            r.persist().expect("persist");
        }
        let again = TlsReporter::open(&cfg).expect("reopen");
        let pending = again.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].success, 1);
        assert_eq!(
            pending[0].failures[0].result_type,
            ResultType::CertificateHostMismatch
        );
    }

    #[test]
    fn taking_reports_empties_counts_and_fills_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path());
        let r = TlsReporter::open(&cfg).expect("open");
        r.record(&enforce(), TlsOutcome::Success);
        let items = r.shared.take_into_outbox(unix_now()).expect("take");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].report.policies[0].summary.total_success, 1);
        assert!(r.pending().is_empty());
        let reopened = TlsReporter::open(&cfg).expect("reopen");
        assert!(reopened.pending().is_empty());
        let outbox = ReportDir::new(dir.path()).load_items().expect("items");
        assert_eq!(outbox.len(), 1);
    }
}
