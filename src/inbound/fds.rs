//! File descriptors: herald raises its soft `RLIMIT_NOFILE` to the hard limit at start and
//! refuses to start when its listeners' connection caps plus a reserve for everything else do
//! not fit. Every listener has its own cap, checked at accept (before any TLS): submission
//! (`smtp.max_connections`), the report listener (`feedback.max_connections`), DNS over TCP
//! ([`crate::dns::authority::MAX_TCP_CONNECTIONS`]), the public HTTPS listener
//! ([`crate::web::MAX_CONNECTIONS`]) and the admin endpoint ([`ADMIN_MAX_CONNECTIONS`]). So no
//! listener can take the reserve kept for the spool (temporary file, fsync of the directory),
//! delivery and DNS look-ups: mail that was accepted is always written.

use crate::config::{Config, ConfigError};

/// Descriptors kept for everything that is not a client connection, besides outbound
/// delivery: listeners, spool files and directories, DNS sockets, MTA-STS and report
/// fetches, the admin endpoint, logs, keys.
const BASE_RESERVE: u64 = 256;

/// Most connections the admin endpoint holds at once (it is for one operator and a few
/// scrapers); one beyond is closed at accept.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Descriptors herald's listeners may hold at most, each listener that is configured at its
/// cap, with what each one is (for the start-up check's message).
pub(crate) fn listener_caps(cfg: &Config) -> Vec<(&'static str, u64)> {
    let mut caps = vec![("smtp.max_connections", cfg.smtp.max_connections as u64)];
    if cfg.feedback.listen.is_some() {
        caps.push((
            "feedback.max_connections",
            cfg.feedback.max_connections as u64,
        ));
    }
    if cfg.dns_server.listen.is_some() {
        caps.push((
            "DNS over TCP",
            crate::dns::authority::MAX_TCP_CONNECTIONS as u64,
        ));
    }
    if cfg.web.listen.is_some() {
        caps.push(("web", crate::web::MAX_CONNECTIONS as u64));
    }
    if cfg.admin.listen.is_some() {
        caps.push(("admin", ADMIN_MAX_CONNECTIONS as u64));
    }
    caps
}

/// Descriptors herald needs besides client connections: the fixed reserve plus two per
/// outbound delivery connection (the socket and its DNS look-ups).
pub(crate) fn reserve(cfg: &Config) -> u64 {
    BASE_RESERVE + 2 * cfg.delivery.max_connections as u64
}

/// Raises the soft `nofile` limit to the hard one and checks that every listener's cap
/// ([`listener_caps`]) plus [`reserve`] fit. Returns the limit in force. A [`ConfigError`]
/// (exit status 2) names what to change when it does not fit.
pub(crate) fn raise_nofile(cfg: &Config, file: &str) -> Result<u64, ConfigError> {
    let caps = listener_caps(cfg);
    let listeners: u64 = caps.iter().map(|(_, n)| n).sum();
    let others = listeners - cfg.smtp.max_connections as u64;
    let need = listeners + reserve(cfg);
    let limit = match raise_soft_to_hard() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit (RLIMIT_NOFILE)");
            return Ok(0);
        }
    };
    if limit < need {
        return Err(ConfigError {
            file: file.to_string(),
            key: "smtp.max_connections".into(),
            problem: format!(
                "the listeners' connections ({}) plus a reserve of {} descriptors for the \
                 spool, delivery and DNS need an open-files limit of at least {need}, but this \
                 process may open only {limit}; raise the limit (systemd: LimitNOFILE={need}; \
                 shell: ulimit -n {need}) or lower smtp.max_connections to {} or less",
                caps.iter()
                    .map(|(what, n)| format!("{what} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                reserve(cfg),
                limit.saturating_sub(reserve(cfg) + others),
            ),
        });
    }
    tracing::debug!(limit, need, "open-files limit");
    Ok(limit)
}

/// Sets the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
fn raise_soft_to_hard() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!(
                    error = %std::io::Error::last_os_error(),
                    soft = lim.rlim_cur,
                    hard = lim.rlim_max,
                    "cannot raise the soft open-files limit to the hard limit"
                );
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    Ok(lim.rlim_cur as u64)
}
