//! Building the RFC 8460 §4 JSON report (mail-auth's `report::tlsrpt` types) from one domain's
//! counts for one UTC day, and compressing it for delivery.

use std::io::Write;

use chrono::NaiveDate;
use flate2::Compression;
use flate2::write::GzEncoder;
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, Summary, TlsReport,
};

use super::store::DayCounts;

/// Who is reporting: the `organization-name`, `contact-info` and the id suffix.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info` (an address), if any.
    pub contact: Option<String>,
    /// Herald's host name, to make report ids unique across instances.
    pub hostname: String,
}

impl Reporter {
    /// Who herald says it is, from `[report]` and `server.hostname`.
    pub fn of(cfg: &crate::config::Config) -> Reporter {
        let contact = cfg.report.contact.trim();
        Reporter {
            organization: cfg.report.organization.clone(),
            contact: (!contact.is_empty()).then(|| contact.to_string()),
            hostname: cfg.server.hostname.clone(),
        }
    }
}

/// The report for `counts`, covering its whole UTC day (up to `now` for the current day).
pub fn build(counts: &DayCounts, reporter: &Reporter, now: i64) -> TlsReport {
    let (start, end) = day_range(&counts.day, now);
    let mut policies = Vec::new();
    if counts.has_sts() || counts.tlsa.is_none() {
        policies.push(Policy {
            policy: PolicyDetails {
                policy_type: PolicyType::Sts,
                policy_string: counts.policy_string.clone(),
                policy_domain: counts.domain.clone(),
                mx_host: counts.mx_patterns.clone(),
            },
            summary: Summary {
                total_success: clamp(counts.success),
                total_failure: clamp(counts.failure_total()),
            },
            failure_details: details(&counts.failures),
        });
    }
    if let Some(tlsa) = &counts.tlsa {
        policies.push(Policy {
            policy: PolicyDetails {
                policy_type: PolicyType::Tlsa,
                policy_string: tlsa.records.clone(),
                policy_domain: counts.domain.clone(),
                mx_host: tlsa.mx_hosts.clone(),
            },
            summary: Summary {
                total_success: clamp(tlsa.success),
                total_failure: clamp(tlsa.failures.iter().map(|f| f.count).sum()),
            },
            failure_details: details(&tlsa.failures),
        });
    }
    TlsReport {
        organization_name: Some(reporter.organization.clone()),
        date_range: DateRange::from_timestamps(start, end),
        contact_info: reporter.contact.clone(),
        report_id: format!(
            "{}T00:00:00Z_{}_{:08x}@{}",
            counts.day,
            counts.domain,
            rand::random::<u32>(),
            reporter.hostname
        ),
        policies,
    }
}

/// The `failure-details` entries of one policy.
fn details(failures: &[super::store::FailureCount]) -> Vec<FailureDetails> {
    failures
        .iter()
        .map(|f| FailureDetails {
            result_type: f.result_type,
            sending_mta_ip: None,
            receiving_mx_hostname: f.mx_host.clone(),
            receiving_mx_helo: None,
            receiving_ip: f.ip,
            failed_session_count: clamp(f.count),
            additional_information: (!f.detail.is_empty()).then(|| f.detail.clone()),
            failure_reason_code: None,
        })
        .collect()
}

/// The report as gzip-compressed JSON (`application/tlsrpt+gzip`).
pub fn gzip_json(report: &TlsReport) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    let mut gz = GzEncoder::new(
        Vec::with_capacity(json.len() / 4 + 64),
        Compression::default(),
    );
    gz.write_all(&json)?;
    gz.finish()
}

/// The UTC day of a Unix time, `YYYY-MM-DD`.
pub fn day_of(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Start and end (inclusive) of `day`, the end capped at `now` for a day not over yet.
fn day_range(day: &str, now: i64) -> (i64, i64) {
    let start = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(now);
    let end = (start + 86_399).min(now.max(start));
    (start, end)
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::report::tlsrpt::ResultType;
    use std::io::Read;

    fn reporter() -> Reporter {
        Reporter {
            organization: "Example Org".into(),
            contact: Some("tlsrpt@herald.example".into()),
            hostname: "herald.example".into(),
        }
    }

    #[test]
    fn report_json_carries_counts_and_failures() {
        let mut counts = DayCounts::new("bank.test", "2026-11-22");
        counts.policy_string = vec!["version: STSv1".into(), "mode: enforce".into()];
        counts.mx_patterns = vec!["*.bank.test".into()];
        counts.success = 7;
        for _ in 0..2 {
            counts.add_failure(
                ResultType::StartTlsNotSupported,
                Some("mx1.bank.test".into()),
                "127.0.0.9".parse().ok(),
                "no STARTTLS".into(),
            );
        }
        counts.add_failure(
            ResultType::CertificateHostMismatch,
            None,
            None,
            String::new(),
        );
        let report = build(&counts, &reporter(), 2_000_000_000);
        let json: serde_json::Value =
            serde_json::from_slice(&decompress(&gzip_json(&report).expect("gzip"))).expect("json");
        assert_eq!(json["organization-name"], "Example Org");
        assert_eq!(json["contact-info"], "tlsrpt@herald.example");
        assert_eq!(json["date-range"]["start-datetime"], "2026-11-22T00:00:00Z");
        assert_eq!(json["date-range"]["end-datetime"], "2026-11-22T23:59:59Z");
        let policy = &json["policies"][0];
        assert_eq!(policy["policy"]["policy-type"], "sts");
        assert_eq!(policy["policy"]["policy-domain"], "bank.test");
        assert_eq!(policy["policy"]["mx-host"][0], "*.bank.test");
        assert_eq!(policy["summary"]["total-successful-session-count"], 7);
        assert_eq!(policy["summary"]["total-failure-session-count"], 3);
        let first = &policy["failure-details"][0];
        assert_eq!(first["result-type"], "starttls-not-supported");
        assert_eq!(first["receiving-mx-hostname"], "mx1.bank.test");
        assert_eq!(first["receiving-ip"], "127.0.0.9");
        assert_eq!(first["failed-session-count"], 2);
        assert_eq!(
            policy["failure-details"][1]["result-type"],
            "certificate-host-mismatch"
        );
        assert!(
            report
                .report_id
                .starts_with("2026-11-22T00:00:00Z_bank.test_")
        );
    }

    #[test]
    fn current_day_ends_now() {
        let now = 1_763_900_000; // 2025-11-23T12:13:20Z
        let counts = DayCounts::new("bank.test", &day_of(now));
        let report = build(&counts, &reporter(), now);
        assert_eq!(report.date_range.end_datetime.to_timestamp(), now);
        assert_eq!(
            report.date_range.start_datetime.to_timestamp(),
            now - (now % 86_400)
        );
    }

    fn decompress(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    }

    #[test]
    fn dane_sessions_are_a_tlsa_policy_beside_the_sts_one() {
        let mut counts = DayCounts::new("bank.test", "2026-11-22");
        let tlsa = counts.tlsa_mut();
        tlsa.note("mx1.bank.test", &["3 1 1 abcd".to_string()]);
        tlsa.success = 4;
        counts.add_tlsa_failure(
            ResultType::TlsaInvalid,
            Some("mx1.bank.test".into()),
            "127.0.0.9".parse().ok(),
            "no TLSA record matches".into(),
        );
        // DANE only: the report has the tlsa policy alone.
        let json = serde_json::to_value(build(&counts, &reporter(), 1_795_000_000)).unwrap();
        let policies = json["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1, "{json}");
        let p = &policies[0];
        assert_eq!(p["policy"]["policy-type"], "tlsa");
        assert_eq!(p["policy"]["policy-string"][0], "3 1 1 abcd");
        assert_eq!(p["policy"]["policy-domain"], "bank.test");
        assert_eq!(p["policy"]["mx-host"][0], "mx1.bank.test");
        assert_eq!(p["summary"]["total-successful-session-count"], 4);
        assert_eq!(p["summary"]["total-failure-session-count"], 1);
        assert_eq!(p["failure-details"][0]["result-type"], "tlsa-invalid");

        // With MTA-STS sessions too: two policies in one report.
        counts.policy_string = vec!["version: STSv1".into(), "mode: enforce".into()];
        counts.success = 1;
        let json = serde_json::to_value(build(&counts, &reporter(), 1_795_000_000)).unwrap();
        let types: Vec<_> = json["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["policy"]["policy-type"].clone())
            .collect();
        assert_eq!(types, vec!["sts", "tlsa"]);
    }
}
