//! One address of one planned host: a session (pooled, or opened with the TLS the plan gave the
//! host), REQUIRETLS's check on it, the transaction, and the one log line per attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mail_auth::report::tlsrpt::ResultType;
use mail_send::Credentials;

use super::client::{
    OpenError, Session, Timeouts, TlsInfo, TlsMode, Transaction, TransactionError,
};
use super::job::Job;
use super::outcome::{Answer, Failure};
use super::plan::HostTls;
use super::pool::{Acquired, Conn, Key, Pool};
use super::requiretls;
use super::tls::OutboundTls;
use crate::tls_policy::{TlsDirective, TlsEvent, TlsOutcome, TlsSink};

/// How many dead pooled sessions one attempt skips before it counts as failed; after the first
/// the pool holds no idle session to that address, so more than one is a race with releases.
const STALE_RETRIES: u32 = 4;

/// How an attempt at one address ended.
pub(super) enum Attempt {
    /// The server answered for each recipient (delivered or refused), or the connection broke
    /// mid-transaction: the job is over for this round. With the session's TLS version (`None`
    /// in clear text).
    Done(Vec<Result<Answer, Failure>>, Option<String>),
    /// Nothing was sent: the next address or host may take the message.
    NextHost(Failure),
}

/// What trying one host address takes, shared by all jobs: our name, the time limits, the TLS
/// connectors, the connection pool, and the sink told how TLS went.
pub(super) struct Connector {
    /// The EHLO name.
    pub(super) helo: String,
    /// Per-stage time limits.
    pub(super) timeouts: Timeouts,
    /// Strict and opportunistic connectors (and DANE's, made per host).
    pub(super) tls: OutboundTls,
    /// Open sessions to reuse, and the connection limits.
    pub(super) pool: Pool,
    /// The TLS-RPT reporter (and `/metrics`).
    pub(super) tls_events: Arc<dyn TlsSink>,
    /// Traffic shaping: limits per destination, and its reaction to push-backs.
    pub(super) shaper: crate::shaping::Shaper,
}

impl Connector {
    /// One host address: get a session (reused or new), run the transaction.
    pub(super) async fn attempt(
        &self,
        job: &Job,
        hop: &HostTls,
        addr: SocketAddr,
        credentials: Option<&Credentials<String>>,
    ) -> Attempt {
        let key = Key {
            host: hop.host.clone(),
            addr,
            strict: hop.mode == TlsMode::Strict,
            dane: matches!(hop.directive, TlsDirective::Dane { .. }),
        };
        let _turn = self.pool.gate(&hop.host).await;
        let mail_params = requiretls::mail_params(&job.mail_params, hop.requiretls);
        let mut stale_retries = 0;
        loop {
            let started = Instant::now();
            let (mut conn, reused) = match self.session(job, hop, &key, credentials).await {
                Ok(session) => session,
                Err(failure) => {
                    log_attempt(job, hop, addr, None, &[failure.to_string()], started);
                    return Attempt::NextHost(failure);
                }
            };
            if hop.requiretls
                && let Err(failure) = requiretls::check_session(&conn.session)
            {
                let tls = conn.session.tls.clone();
                log_attempt(
                    job,
                    hop,
                    addr,
                    tls.as_ref(),
                    &[failure.to_string()],
                    started,
                );
                self.pool.release(conn);
                return Attempt::NextHost(failure);
            }
            let result = conn
                .session
                .send(&job.mail_from, &mail_params, &job.recipients, &job.message)
                .await;
            let tls = conn.session.tls.clone();
            let may_retry = reused && stale_retries < STALE_RETRIES;
            match result {
                Ok(tx)
                    if may_retry
                        && tx.answers.iter().all(|a| a.code == 421)
                        && !tx.answers.iter().any(|a| {
                            crate::shaping::is_reputation_deferral(a.code, a.status, &a.text)
                        }) =>
                {
                    // A pooled session the server is closing (shutdown or restart says 421
                    // before it hangs up): the message did not go; a fresh session may.
                    tracing::info!(queue_id = %job.queue_id, mx = %hop.host, %addr,
                        reply = %tx.answers.first().map(|a| a.to_string()).unwrap_or_default(),
                        "pooled connection is being closed by the server; retrying on a new connection");
                }
                Ok(tx) => {
                    let lines: Vec<String> = tx.answers.iter().map(|a| a.to_string()).collect();
                    log_attempt(job, hop, addr, tls.as_ref(), &lines, started);
                    conn.deliveries += 1;
                    if self.shaper.connection_spent(&hop.host, conn.deliveries) {
                        conn.close();
                    } else {
                        self.pool.release(conn);
                    }
                    return answered(tx, tls.map(|t| t.version));
                }
                Err(TransactionError::Stale(detail)) if may_retry => {
                    // The server closed this idle session (or restarted) while it was pooled:
                    // nothing of the message reached it. Not an attempt: drop every idle
                    // session to it and go again at once on a fresh connection.
                    tracing::info!(queue_id = %job.queue_id, mx = %hop.host, %addr, error = %detail,
                        "pooled connection was closed by the server; retrying on a new connection");
                }
                Err(e) => {
                    let failure = Failure::ConnectionLost {
                        host: hop.host.clone(),
                        detail: e.detail().to_string(),
                    };
                    log_attempt(
                        job,
                        hop,
                        addr,
                        tls.as_ref(),
                        &[failure.to_string()],
                        started,
                    );
                    conn.close();
                    return Attempt::Done(
                        vec![Err(failure); job.recipients.len()],
                        tls.map(|t| t.version),
                    );
                }
            }
            stale_retries += 1;
            conn.close();
            self.pool.discard_idle(&key);
        }
    }

    /// A pooled session for `key` (`true`: reused), or a new one; a failure to open one means
    /// the next host.
    async fn session(
        &self,
        job: &Job,
        hop: &HostTls,
        key: &Key,
        credentials: Option<&Credentials<String>>,
    ) -> Result<(Conn, bool), Failure> {
        let slot = match self.pool.acquire(key).await {
            Acquired::Reused(conn) => return Ok((*conn, true)),
            Acquired::Fresh(slot) => slot,
        };
        match self.open(job, hop, key.addr, credentials).await {
            Ok(session) => Ok((Conn::new(session, key.clone(), slot), false)),
            // A refusal at greeting or EHLO, a connection failure or a TLS failure all mean:
            // the next host.
            Err(OpenError::Refused(answer)) if answer.is_permanent() => Err(Failure::HostRefused {
                host: hop.host.clone(),
                answer,
            }),
            Err(OpenError::Refused(answer)) => Err(Failure::Remote(answer)),
            Err(OpenError::Connect(detail)) => Err(Failure::Connect { detail }),
            Err(OpenError::Tls { detail, .. }) => Err(Failure::TlsRequired { detail }),
        }
    }

    /// Opens a session, falling back to clear text when an opportunistic handshake fails,
    /// and tells TLS-RPT how TLS went where a policy applies.
    async fn open(
        &self,
        job: &Job,
        hop: &HostTls,
        addr: SocketAddr,
        credentials: Option<&Credentials<String>>,
    ) -> Result<Session, OpenError> {
        let dane_tls;
        let tls = match &hop.directive {
            TlsDirective::Dane { target } => {
                dane_tls = self
                    .tls
                    .for_dane(target.clone())
                    .map_err(|e| OpenError::Tls {
                        detail: e.to_string(),
                        result_type: ResultType::ValidationFailure,
                    })?;
                &dane_tls
            }
            _ => &self.tls,
        };
        let (helo, timeouts) = (&self.helo, self.timeouts);
        let first =
            Session::open(addr, &hop.host, helo, hop.mode, tls, timeouts, credentials).await;
        // Every session's TLS outcome goes to the sink: the TLS-RPT reporter counts those
        // under a recipient domain's published policy (`require_tls` is our own, and
        // opportunistic delivery has none), and `/metrics` counts all of them.
        if let Some(outcome) = tls_outcome(&first, &hop.host, addr) {
            self.tls_events.emit(TlsEvent::Session {
                directive: hop.directive.clone(),
                outcome,
            });
        }
        match &first {
            Err(OpenError::Tls { detail, .. }) if hop.mode == TlsMode::Opportunistic => {
                tracing::info!(queue_id = %job.queue_id, mx = %hop.host, %addr, error = %detail,
                    "opportunistic TLS failed; retrying this host without TLS");
                let clear = TlsMode::Off;
                Session::open(
                    addr,
                    &hop.host,
                    helo,
                    clear,
                    &self.tls,
                    timeouts,
                    credentials,
                )
                .await
            }
            _ => first,
        }
    }
}

/// How TLS went on a session just opened (or that failed in TLS); `None` when it failed
/// before TLS (connection, greeting).
fn tls_outcome(
    opened: &Result<Session, OpenError>,
    host: &str,
    addr: SocketAddr,
) -> Option<TlsOutcome> {
    let failure = |result_type, detail| TlsOutcome::Failure {
        result_type,
        mx_host: host.to_string(),
        ip: Some(addr.ip()),
        detail,
    };
    match opened {
        Ok(session) => Some(match &session.tls {
            Some(t) if t.verified => TlsOutcome::Success,
            Some(t) => failure(
                t.problem_type.unwrap_or(ResultType::ValidationFailure),
                t.problem.clone().unwrap_or_default(),
            ),
            None => failure(
                ResultType::StartTlsNotSupported,
                "the server does not offer STARTTLS".into(),
            ),
        }),
        Err(OpenError::Tls {
            detail,
            result_type,
        }) => Some(failure(*result_type, detail.clone())),
        Err(_) => None,
    }
}

/// The server's answers as the job's outcome: all `421` means the host is going away (the
/// next host may take the message); otherwise one result per recipient.
fn answered(tx: Transaction, tls: Option<String>) -> Attempt {
    if let Some(first) = tx.answers.first()
        && tx.answers.iter().all(|a| a.code == 421)
    {
        return Attempt::NextHost(Failure::Remote(first.clone()));
    }
    Attempt::Done(
        tx.answers
            .into_iter()
            .map(|a| {
                if a.is_positive() {
                    Ok(a)
                } else {
                    Err(Failure::Remote(a))
                }
            })
            .collect(),
        tls,
    )
}

/// The one log line per delivery attempt.
fn log_attempt(
    job: &Job,
    hop: &HostTls,
    addr: SocketAddr,
    tls: Option<&TlsInfo>,
    replies: &[String],
    started: Instant,
) {
    tracing::info!(
        queue_id = %job.queue_id,
        domain = %job.domain,
        mx = %hop.host,
        addr = %addr,
        tls = %tls.map(|t| t.version.as_str()).unwrap_or("none"),
        policy = %hop.directive.label(),
        tls_rule = %hop.reason,
        cert_verified = tls.is_some_and(|t| t.verified),
        recipients = job.recipients.len(),
        reply = %Replies(replies),
        duration_ms = started.elapsed().as_millis() as u64,
        "delivery attempt"
    );
}

/// The replies of an attempt as the log line shows them: joined by ` | `, a reply repeated
/// right after itself shown once; written straight into the line (no copy, no join).
struct Replies<'a>(&'a [String]);

impl std::fmt::Display for Replies<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut previous: Option<&String> = None;
        for r in self.0 {
            if previous == Some(r) {
                continue;
            }
            if previous.is_some() {
                f.write_str(" | ")?;
            }
            f.write_str(r)?;
            previous = Some(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Replies;

    #[test]
    fn replies_are_joined_with_a_repeat_shown_once() {
        let r =
            |v: &[&str]| Replies(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).to_string();
        assert_eq!(r(&[]), "");
        assert_eq!(r(&["250 ok"]), "250 ok");
        assert_eq!(
            r(&["250 ok", "250 ok", "550 no", "250 ok"]),
            "250 ok | 550 no | 250 ok"
        );
    }
}
