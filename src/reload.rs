//! Reloading the configuration (SIGHUP, `herald reload`): what changed between the running
//! configuration and the new file, which of it applies to new sessions and deliveries, and
//! which settings only a restart can change (listen addresses, `data_dir`, the spool).

use crate::config::Config;

/// What a reload would change.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Parts applied by the reload, e.g. `apps (added billing; changed demo)`.
    pub applied: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub need_restart: Vec<String>,
}

impl Changes {
    /// One line for the log and the `herald reload` answer.
    pub fn summary(&self) -> String {
        let applied = if self.applied.is_empty() {
            "no change to apply".to_string()
        } else {
            format!("applied: {}", self.applied.join("; "))
        };
        if self.need_restart.is_empty() {
            applied
        } else {
            format!(
                "{applied}; changed but kept until a restart: {}",
                self.need_restart.join(", ")
            )
        }
    }
}

/// Compares the running configuration with a new one.
pub(crate) fn diff(old: &Config, new: &Config) -> Changes {
    let mut c = Changes::default();
    let differ =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");

    let restart_only: [(&str, bool); 16] = [
        (
            "smtp.submission",
            old.smtp.submission != new.smtp.submission,
        ),
        (
            "smtp.submissions",
            old.smtp.submissions != new.smtp.submissions,
        ),
        ("smtp.plain", old.smtp.plain != new.smtp.plain),
        (
            "server.data_dir",
            old.server.data_dir != new.server.data_dir,
        ),
        ("spool.dir", old.spool_dir() != new.spool_dir()),
        ("admin.listen", old.admin.listen != new.admin.listen),
        (
            "dns_server.listen",
            old.dns_server.listen != new.dns_server.listen,
        ),
        (
            "server.log_format",
            old.server.log_format != new.server.log_format,
        ),
        (
            "server.log_level",
            old.server.log_level != new.server.log_level,
        ),
        (
            "mta_sts.cache_dir",
            old.mta_sts_cache_dir() != new.mta_sts_cache_dir(),
        ),
        ("report.dir", old.report_dir() != new.report_dir()),
        (
            "feedback (the report listener)",
            differ(&old.feedback, &new.feedback),
        ),
        (
            "admin.token_file",
            old.admin.token_file != new.admin.token_file,
        ),
        (
            "delivery.max_connections (attempts in parallel)",
            old.delivery.max_connections != new.delivery.max_connections,
        ),
        ("cluster", differ(&old.cluster, &new.cluster)),
        (
            "web (the public HTTPS listener)",
            differ(&old.web, &new.web),
        ),
    ];
    c.need_restart = restart_only
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(k, _)| k.to_string())
        .collect();

    let mut apps = Vec::new();
    for name in new.apps.keys().filter(|n| !old.apps.contains_key(*n)) {
        apps.push(format!("added {name}"));
    }
    for name in old.apps.keys().filter(|n| !new.apps.contains_key(*n)) {
        apps.push(format!("removed {name}"));
    }
    for (name, app) in &new.apps {
        if let Some(before) = old.apps.get(name)
            && differ(before, app)
        {
            apps.push(format!("changed {name}"));
        }
    }
    if !apps.is_empty() {
        c.applied.push(format!("apps ({})", apps.join(", ")));
    }
    if differ(&old.dkim, &new.dkim) {
        let active = new.dkim.keys.iter().filter(|k| k.active).count();
        c.applied.push(format!(
            "dkim keys ({} configured, {active} active)",
            new.dkim.keys.len()
        ));
    }
    let mut smtp_old = old.smtp.clone();
    smtp_old.submission = new.smtp.submission;
    smtp_old.submissions = new.smtp.submissions;
    smtp_old.plain = new.smtp.plain;
    if differ(&smtp_old, &new.smtp) {
        c.applied
            .push("smtp limits and plain-listener policy".into());
    }
    if old.server.hostname != new.server.hostname
        || old.server.grace_period != new.server.grace_period
    {
        c.applied.push("server.hostname/grace_period".into());
    }
    for (name, changed) in [
        ("tls certificate", differ(&old.tls, &new.tls)),
        (
            "delivery (smart host, retries, TLS requirements)",
            differ(&old.delivery, &new.delivery),
        ),
        ("dns servers", differ(&old.dns, &new.dns)),
        ("mta_sts", differ(&old.mta_sts, &new.mta_sts)),
        ("report", differ(&old.report, &new.report)),
        ("spf", differ(&old.spf, &new.spf)),
        (
            "dns_server records and rate limit",
            old.dns_server.rate_limit != new.dns_server.rate_limit
                || differ(&old.spf, &new.spf)
                || differ(&old.dkim, &new.dkim),
        ),
    ] {
        if changed {
            c.applied.push(name.into());
        }
    }
    c
}

/// Whether the MTA-STS resolver must be rebuilt: its DNS servers, its own settings, or the
/// `[delivery]` TLS requirements it folds into each directive changed.
pub(crate) fn sts_changed(old: &Config, new: &Config) -> bool {
    format!("{:?}", (&old.dns, &old.mta_sts, &old.tls))
        != format!("{:?}", (&new.dns, &new.mta_sts, &new.tls))
        || old.delivery.require_tls != new.delivery.require_tls
        || old.delivery.require_tls_domains != new.delivery.require_tls_domains
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        // One directory for every load, so relative paths (data_dir) resolve the same.
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
        let p = dir.path().join(format!("{}.toml", text.len()));
        std::fs::write(&p, text).expect("write");
        Config::load(&p).expect("loads")
    }

    const APP: &str = "[apps.demo]\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\"\nsenders = [\"@example.test\"]\n";

    #[test]
    fn sorts_changes_into_applied_and_restart_only() {
        let old = load(&format!("[smtp]\nsubmission = \"127.0.0.1:2587\"\n{APP}"));
        let same = diff(&old, &old.clone());
        assert_eq!(same, Changes::default());
        assert_eq!(same.summary(), "no change to apply");

        let new = load(&format!(
            "[smtp]\nsubmission = \"127.0.0.1:2588\"\nmax_recipients = 5\n{APP}\n[apps.billing]\n\
             password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\"\n\
             senders = [\"@b.test\"]\n"
        ));
        let c = diff(&old, &new);
        assert_eq!(c.need_restart, ["smtp.submission"]);
        assert!(
            c.applied.contains(&"apps (added billing)".to_string()),
            "{c:?}"
        );
        assert!(
            c.applied.iter().any(|a| a.starts_with("smtp limits")),
            "{c:?}"
        );
        assert!(
            c.summary()
                .contains("kept until a restart: smtp.submission")
        );
    }
}
