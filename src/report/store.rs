//! Pending TLS-RPT counts and reports, kept on disk under `[report] dir` so that a restart loses
//! nothing: `counts.json` holds the counts per policy domain and UTC day (rewritten atomically
//! by a writer thread, coalescing bursts), and `outbox/` holds built reports until every `rua`
//! has received them.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use mail_auth::report::tlsrpt::{ResultType, TlsReport};
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::fsutil::{sync_dir, write_atomic};

/// One policy domain's sessions on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// The policy domain.
    pub domain: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The policy as its file reads (empty when it could not be fetched).
    #[serde(default)]
    pub policy_string: Vec<String>,
    /// The policy's `mx:` patterns.
    #[serde(default)]
    pub mx_patterns: Vec<String>,
    /// Sessions that set up TLS as the policy demands.
    pub success: u64,
    /// Failed sessions, grouped by result type, MX host and address.
    #[serde(default)]
    pub failures: Vec<FailureCount>,
    /// Sessions under DANE (policy type `tlsa`), reported as a second policy of the same
    /// report; absent when the domain had none that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlsa: Option<TlsaCounts>,
}

/// One domain's DANE sessions on one UTC day (RFC 8460 policy type `tlsa`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsaCounts {
    /// The TLSA records seen (presentation form), the `policy-string`.
    #[serde(default)]
    pub records: Vec<String>,
    /// The MX hosts whose TLSA records applied.
    #[serde(default)]
    pub mx_hosts: Vec<String>,
    /// Sessions authenticated by DANE.
    pub success: u64,
    /// Failed sessions.
    #[serde(default)]
    pub failures: Vec<FailureCount>,
}

impl TlsaCounts {
    /// Notes the records and host a session was made under.
    pub fn note(&mut self, host: &str, records: &[String]) {
        if !host.is_empty() && !self.mx_hosts.iter().any(|h| h == host) {
            self.mx_hosts.push(host.to_string());
        }
        for r in records {
            if !self.records.contains(r) {
                self.records.push(r.clone());
            }
        }
    }

    fn merge(&mut self, other: TlsaCounts) {
        self.success += other.success;
        for h in &other.mx_hosts {
            self.note(h, &[]);
        }
        self.note("", &other.records);
        merge_failures(&mut self.failures, other.failures);
    }
}

fn add_failure_to(
    failures: &mut Vec<FailureCount>,
    result_type: ResultType,
    mx_host: Option<String>,
    ip: Option<IpAddr>,
    detail: String,
) {
    match failures
        .iter_mut()
        .find(|f| f.result_type == result_type && f.mx_host == mx_host && f.ip == ip)
    {
        Some(f) => {
            f.count += 1;
            f.detail = detail;
        }
        None => failures.push(FailureCount {
            result_type,
            mx_host,
            ip,
            count: 1,
            detail,
        }),
    }
}

fn merge_failures(mine: &mut Vec<FailureCount>, theirs: Vec<FailureCount>) {
    for f in theirs {
        match mine
            .iter_mut()
            .find(|m| m.result_type == f.result_type && m.mx_host == f.mx_host && m.ip == f.ip)
        {
            Some(m) => m.count += f.count,
            None => mine.push(f),
        }
    }
}

/// Failed sessions sharing a result type, MX host and MX address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCount {
    /// The RFC 8460 result type.
    pub result_type: ResultType,
    /// The MX host name tried, if a connection was attempted.
    pub mx_host: Option<String>,
    /// The MX address tried.
    pub ip: Option<IpAddr>,
    /// How many sessions failed this way.
    pub count: u64,
    /// The latest human-readable detail.
    pub detail: String,
}

impl DayCounts {
    /// Empty counts for `domain` on `day`.
    pub fn new(domain: &str, day: &str) -> DayCounts {
        DayCounts {
            domain: domain.to_string(),
            day: day.to_string(),
            policy_string: Vec::new(),
            mx_patterns: Vec::new(),
            success: 0,
            failures: Vec::new(),
            tlsa: None,
        }
    }

    /// The DANE part, created on first use.
    pub fn tlsa_mut(&mut self) -> &mut TlsaCounts {
        self.tlsa.get_or_insert_with(TlsaCounts::default)
    }

    /// Whether any MTA-STS session (or policy failure) was counted, as opposed to DANE only.
    pub fn has_sts(&self) -> bool {
        self.success > 0 || !self.failures.is_empty() || !self.policy_string.is_empty()
    }

    /// Adds one failed DANE session.
    pub fn add_tlsa_failure(
        &mut self,
        result_type: ResultType,
        mx_host: Option<String>,
        ip: Option<IpAddr>,
        detail: String,
    ) {
        add_failure_to(
            &mut self.tlsa_mut().failures,
            result_type,
            mx_host,
            ip,
            detail,
        );
    }

    /// Adds one failed session.
    pub fn add_failure(
        &mut self,
        result_type: ResultType,
        mx_host: Option<String>,
        ip: Option<IpAddr>,
        detail: String,
    ) {
        add_failure_to(&mut self.failures, result_type, mx_host, ip, detail);
    }

    /// Adds the counts of `other` (same domain and day) to these.
    pub fn merge(&mut self, other: DayCounts) {
        self.success += other.success;
        if self.policy_string.is_empty() {
            self.policy_string = other.policy_string;
            self.mx_patterns = other.mx_patterns;
        }
        merge_failures(&mut self.failures, other.failures);
        if let Some(tlsa) = other.tlsa {
            self.tlsa_mut().merge(tlsa);
        }
    }

    /// Total failed MTA-STS sessions (DANE ones are in [`DayCounts::tlsa`]).
    pub fn failure_total(&self) -> u64 {
        self.failures.iter().map(|f| f.count).sum()
    }
}

/// Counts keyed by (domain, day).
pub type Counts = BTreeMap<(String, String), DayCounts>;

/// A built report waiting for delivery to its domain's `rua` addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxItem {
    /// The policy domain the report is about.
    pub domain: String,
    /// The report.
    pub report: TlsReport,
    /// Seconds since the epoch when it was built (old items are given up).
    pub created_at: u64,
    /// The `rua` URIs that already received it.
    #[serde(default)]
    pub delivered: Vec<String>,
}

/// The report directory's files.
#[derive(Debug, Clone)]
pub struct ReportDir {
    dir: PathBuf,
}

impl ReportDir {
    /// The report directory at `dir` (created on first write).
    pub fn new(dir: &Path) -> ReportDir {
        ReportDir {
            dir: dir.to_path_buf(),
        }
    }

    fn counts_path(&self) -> PathBuf {
        self.dir.join("counts.json")
    }

    fn outbox(&self) -> PathBuf {
        self.dir.join("outbox")
    }

    /// Reads the pending counts (empty when none were saved).
    pub fn load_counts(&self) -> io::Result<Counts> {
        let path = self.counts_path();
        let list: Vec<DayCounts> = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(list) => list,
                Err(e) => {
                    // Never written this way (writes are atomic); keep it for inspection and
                    // start counting afresh rather than refuse to start.
                    let aside = path.with_extension(format!("json.unreadable-{}", unix_now()));
                    fs::rename(&path, &aside)?;
                    tracing::error!(
                        "tls-rpt: {} is unreadable ({e}); moved to {} and starting with no \
                         pending counts",
                        path.display(),
                        aside.display()
                    );
                    Vec::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(list
            .into_iter()
            .map(|c| ((c.domain.clone(), c.day.clone()), c))
            .collect())
    }

    /// Replaces the saved counts atomically.
    pub fn save_counts(&self, counts: &Counts) -> io::Result<()> {
        let list: Vec<&DayCounts> = counts.values().collect();
        let bytes = serde_json::to_vec(&list).map_err(io::Error::other)?;
        write_atomic(&self.dir, &self.counts_path(), &bytes)
    }

    /// Saves (or replaces) an outbox item, named after its report id.
    pub fn save_item(&self, item: &OutboxItem) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(item).map_err(io::Error::other)?;
        let outbox = self.outbox();
        write_atomic(
            &outbox,
            &outbox.join(item_file(&item.report.report_id)),
            &bytes,
        )
    }

    /// Removes a delivered (or abandoned) outbox item.
    pub fn remove_item(&self, item: &OutboxItem) -> io::Result<()> {
        match fs::remove_file(self.outbox().join(item_file(&item.report.report_id))) {
            Ok(()) => sync_dir(&self.outbox()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every outbox item, oldest first; unreadable files are logged and skipped.
    pub fn load_items(&self) -> io::Result<Vec<OutboxItem>> {
        let dir = match fs::read_dir(self.outbox()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut items = Vec::new();
        for entry in dir.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(item) => items.push(item),
                Err(e) => tracing::warn!("tls-rpt: skipping {}: {e}", path.display()),
            }
        }
        items.sort_by_key(|i: &OutboxItem| (i.created_at, i.report.report_id.clone()));
        Ok(items)
    }
}

/// A file name for a report id (which contains `@` and dots, but nothing else is let through).
fn item_file(report_id: &str) -> String {
    let safe: String = report_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.json", safe.trim_start_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::report::tlsrpt::DateRange;

    #[test]
    fn counts_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ReportDir::new(dir.path());
        let mut counts = Counts::new();
        let mut day = DayCounts::new("example.test", "2026-11-23");
        day.success = 3;
        day.add_failure(
            ResultType::CertificateExpired,
            Some("mx.example.test".into()),
            None,
            "a".into(),
        );
        day.add_failure(
            ResultType::CertificateExpired,
            Some("mx.example.test".into()),
            None,
            "b".into(),
        );
        counts.insert(("example.test".into(), "2026-11-23".into()), day.clone());
        store.save_counts(&counts).expect("save");
        let loaded = store.load_counts().expect("load");
        assert_eq!(loaded, counts);
        assert_eq!(day.failure_total(), 2);
        assert_eq!(day.failures[0].detail, "b");
        let mut merged = day.clone();
        merged.merge(day);
        assert_eq!((merged.success, merged.failure_total()), (6, 4));
        assert_eq!(merged.failures.len(), 1);
    }

    #[test]
    fn unreadable_counts_are_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("counts.json"), b"{garbage").expect("write");
        let store = ReportDir::new(dir.path());
        assert!(store.load_counts().expect("load").is_empty());
        let aside = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("unreadable"));
        assert!(aside);
    }

    #[test]
    fn outbox_items_are_saved_listed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ReportDir::new(dir.path());
        let item = OutboxItem {
            domain: "example.test".into(),
            report: TlsReport {
                organization_name: Some("herald".into()),
                date_range: DateRange::from_timestamps(0, 86399),
                contact_info: None,
                report_id: "../2026-11-23.example.test@herald".into(),
                policies: Vec::new(),
            },
            created_at: 5,
            delivered: Vec::new(),
        };
        store.save_item(&item).expect("save");
        let items = store.load_items().expect("load");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].report, item.report);
        store.remove_item(&item).expect("remove");
        assert!(store.load_items().expect("load").is_empty());
    }
}
