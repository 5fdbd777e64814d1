//! Delivering one message to one recipient domain: TLS directive, routing, trying hosts in
//! order, one transaction for all the domain's recipients, one log line per attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::MessageAuthenticator;
use mail_send::Credentials;

use super::client::{OpenError, Session, Timeouts, TlsMode, TransactionError};
use super::dane::{Dane, DanePlan, HostDane};
use super::outcome::{Answer, Failure, RecipientResult};
use super::pool::{Acquired, Conn, Key, Pool};
use super::requiretls;
use super::resolve::{self, ResolveError};
use super::tls::OutboundTls;
use crate::config::Config;
use crate::mta_sts::{StsResolver, TlsDirective, TlsEvent, TlsOutcome, TlsSink};
use crate::spool::{MessageBytes, TlsRequest};

/// A piece of work: one message, the recipients of one domain (or all, via the smart host).
pub struct Job {
    /// Queue id, for logs.
    pub queue_id: String,
    /// Envelope sender (empty for `<>`).
    pub mail_from: String,
    /// MAIL FROM parameters as submitted.
    pub mail_params: Vec<String>,
    /// Recipient domain (or `relay` for the smart host).
    pub domain: String,
    /// The recipients.
    pub recipients: Vec<String>,
    /// The bytes to send (mapped from the spool file, not read into memory).
    pub message: Arc<MessageBytes>,
    /// A TLS-RPT report of herald's: delivered opportunistically, whatever policy applies.
    pub tls_report: bool,
    /// What the submitter asked of TLS (REQUIRETLS, `TLS-Required: No`): see [`requiretls`].
    pub tls_request: TlsRequest,
}

struct Relay {
    host: String,
    port: u16,
    credentials: Option<Credentials<String>>,
}

/// Everything delivery needs, shared by all jobs.
pub struct Outbound {
    helo: String,
    port: u16,
    timeouts: Timeouts,
    resolver: MessageAuthenticator,
    tls: OutboundTls,
    pool: Pool,
    sts: Arc<StsResolver>,
    dane: Dane,
    tls_events: Arc<dyn TlsSink>,
    relay: Option<Relay>,
    capture: Option<super::capture::Capture>,
}

/// How many dead pooled sessions one attempt skips before it counts as failed; after the first
/// the pool holds no idle session to that address, so more than one is a race with releases.
const STALE_RETRIES: u32 = 4;

enum Attempt {
    Done(Vec<Result<Answer, Failure>>),
    NextHost(Failure),
}

impl Outbound {
    /// Builds delivery from configuration, with the MTA-STS resolver to ask and the sink that
    /// receives how TLS went with each MX (the TLS-RPT reporter).
    pub fn new(
        cfg: &Config,
        sts: Arc<StsResolver>,
        tls_events: Arc<dyn TlsSink>,
    ) -> anyhow::Result<Outbound> {
        let d = &cfg.delivery;
        let relay = match &d.relay_host {
            None => None,
            Some(spec) => {
                let (host, port) = spec
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
                    .ok_or_else(|| {
                        anyhow::anyhow!("delivery.relay_host: {spec:?} must be \"host:port\"")
                    })?;
                let credentials = match (&d.relay_username, &d.relay_password) {
                    (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
                    (None, None) => None,
                    _ => anyhow::bail!(
                        "delivery.relay_username and delivery.relay_password go together"
                    ),
                };
                Some(Relay {
                    host: host.to_ascii_lowercase(),
                    port,
                    credentials,
                })
            }
        };
        Ok(Outbound {
            helo: cfg.server.hostname.clone(),
            port: d.port,
            timeouts: Timeouts {
                connect: d.connect_timeout,
                command: d.command_timeout,
                data: d.data_timeout,
            },
            resolver: crate::resolver::authenticator(&cfg.dns)?,
            tls: OutboundTls::new(&cfg.tls)?,
            pool: Pool::new(
                d.max_connections,
                d.max_connections_per_host,
                Duration::from_secs(5),
            ),
            sts,
            dane: Dane::new(cfg)?,
            tls_events,
            relay,
            capture: d.capture_dir.as_deref().map(super::capture::Capture::new),
        })
    }

    /// Whether everything goes through the smart host (one job per message, not per domain).
    pub fn uses_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// Attempts delivery of `job`; one result per recipient, in order.
    pub async fn deliver(&self, job: &Job) -> Vec<RecipientResult> {
        if let Some(capture) = &self.capture {
            return capture.deliver(job).await;
        }
        let n = job.recipients.len();
        let all = |failure: Failure, host: Option<String>| {
            vec![
                RecipientResult {
                    outcome: Err(failure),
                    host,
                };
                n
            ]
        };
        let (hosts, port, mode, directive, credentials, dane) = match &self.relay {
            Some(relay) => (
                vec![relay.host.clone()],
                relay.port,
                TlsMode::Strict,
                TlsDirective::Required,
                relay.credentials.as_ref(),
                DanePlan::default(),
            ),
            None => {
                // RFC 8460 §3: a report must reach its recipient even across the TLS
                // failures it reports, so herald's own reports are not held to the policy.
                let directive = if job.tls_report {
                    TlsDirective::Opportunistic
                } else {
                    requiretls::directive(
                        job.tls_request,
                        self.sts.directive_for(&job.domain).await,
                    )
                };
                let mut hosts = match resolve::mx_hosts(&self.resolver, &job.domain).await {
                    Ok(h) => h,
                    Err(e) => {
                        let failure = match e {
                            ResolveError::NullMx { domain } => Failure::NullMx { domain },
                            other => Failure::NoRoute(other),
                        };
                        let what = if failure.is_permanent() {
                            "delivery attempt: no route"
                        } else {
                            "delivery attempt: DNS trouble"
                        };
                        tracing::info!(queue_id = %job.queue_id, domain = %job.domain,
                            reply = %failure, "{what}");
                        return all(failure, None);
                    }
                };
                // DANE (RFC 7672) per MX host; it takes precedence over MTA-STS (RFC 8461 §2).
                // `TLS-Required: No` sets DANE aside as it does MTA-STS (RFC 8689 §4.2.2).
                let dane = if job.tls_report || job.tls_request == TlsRequest::TlsOptional {
                    DanePlan::default()
                } else {
                    self.dane.plan(&job.domain, &hosts).await
                };
                if let TlsDirective::Sts { policy, .. } = &directive
                    && directive.requires_verified_tls()
                {
                    let (allowed, refused): (Vec<String>, Vec<String>) = hosts
                        .into_iter()
                        .partition(|h| policy.matches_mx(h) || dane.protects(h));
                    hosts = allowed;
                    if hosts.is_empty() {
                        // RFC 8460 has no result type of its own for an MX outside the policy;
                        // validation-failure is the one receivers read as "policy not met".
                        for mx_host in refused {
                            self.emit(
                                &directive,
                                TlsOutcome::Failure {
                                    result_type:
                                        mail_auth::report::tlsrpt::ResultType::ValidationFailure,
                                    mx_host,
                                    ip: None,
                                    detail: "MX host not listed in the MTA-STS policy".into(),
                                },
                            );
                        }
                        let failure = Failure::NoMxMatchesPolicy {
                            domain: job.domain.clone(),
                        };
                        tracing::warn!(queue_id = %job.queue_id, domain = %job.domain,
                            policy = %directive.label(), reply = %failure, "delivery attempt: no MX allowed");
                        return all(failure, None);
                    }
                }
                let mode = if directive.requires_verified_tls() {
                    TlsMode::Strict
                } else {
                    TlsMode::Opportunistic
                };
                (hosts, self.port, mode, directive, None, dane)
            }
        };
        let via_relay = self.relay.is_some();
        if let Err(failure) = requiretls::check_route(
            job.tls_request,
            &directive,
            via_relay,
            dane.may_authenticate_a_host(),
            &job.domain,
        ) {
            tracing::warn!(queue_id = %job.queue_id, domain = %job.domain,
                policy = %directive.label(), reply = %failure, "delivery attempt: REQUIRETLS not possible");
            return all(failure, None);
        }
        let implicit = hosts.len() == 1 && hosts[0] == job.domain.to_ascii_lowercase();
        let mut last = Failure::NoHostReached;
        let mut last_host = None;
        for host in &hosts {
            let (directive, mode) = match dane.host(host) {
                HostDane::NotApplicable(_) => (directive.clone(), mode),
                HostDane::Applies(target) => (TlsDirective::Dane { target }, TlsMode::Strict),
                HostDane::Unusable {
                    result_type,
                    detail,
                } => {
                    tracing::warn!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                        policy = "dane", reply = %detail, "delivery attempt: MX host not used (DANE)");
                    let (event, failure) =
                        super::dane::refusal(&job.domain, host, result_type, detail);
                    self.tls_events.emit(event);
                    last = failure;
                    continue;
                }
            };
            if let Err(failure) =
                requiretls::check_host(job.tls_request, &directive, via_relay, host)
            {
                tracing::info!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                    reply = %failure, "delivery attempt: MX host not used (REQUIRETLS)");
                last = requiretls::next_host_failure(last, failure);
                continue;
            }
            let addrs = match resolve::addresses(&self.resolver, host).await {
                Ok(a) => a,
                Err(e) if e.is_permanent() && implicit && self.relay.is_none() => {
                    return all(Failure::NoRoute(e), None);
                }
                Err(e) => {
                    tracing::info!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                        reply = %e, "delivery attempt: MX host has no usable address");
                    last = Failure::NoAddress(e);
                    continue;
                }
            };
            for ip in addrs {
                let addr = SocketAddr::new(ip, port);
                last_host = Some(format!("{host} [{ip}]"));
                match self
                    .attempt(job, host, addr, mode, &directive, credentials)
                    .await
                {
                    Attempt::Done(outcomes) => {
                        return outcomes
                            .into_iter()
                            .map(|outcome| RecipientResult {
                                outcome,
                                host: last_host.clone(),
                            })
                            .collect();
                    }
                    Attempt::NextHost(failure) => {
                        last = requiretls::next_host_failure(last, failure)
                    }
                }
            }
        }
        all(last, last_host)
    }

    /// Hands how TLS went to the sink (the TLS-RPT reporter).
    fn emit(&self, directive: &TlsDirective, outcome: TlsOutcome) {
        self.tls_events.emit(TlsEvent::Session {
            directive: directive.clone(),
            outcome,
        });
    }

    /// One host address: get a session (reused or new), run the transaction.
    async fn attempt(
        &self,
        job: &Job,
        host: &str,
        addr: SocketAddr,
        mode: TlsMode,
        directive: &TlsDirective,
        credentials: Option<&Credentials<String>>,
    ) -> Attempt {
        let key = Key {
            host: host.to_string(),
            addr,
            strict: mode == TlsMode::Strict,
            dane: matches!(directive, TlsDirective::Dane { .. }),
        };
        let _turn = self.pool.gate(host).await;
        let mail_params = requiretls::mail_params(job);
        let mut stale_retries = 0;
        loop {
            let started = Instant::now();
            let (mut conn, reused) = match self.pool.acquire(&key).await {
                Acquired::Reused(conn) => (*conn, true),
                Acquired::Fresh(slot) => {
                    let opened = self
                        .open(job, host, addr, mode, directive, credentials)
                        .await;
                    match opened {
                        Ok(session) => (Conn::new(session, key.clone(), slot), false),
                        Err(e) => {
                            // A refusal at greeting or EHLO, a connection failure or a TLS
                            // failure all mean: the next host.
                            let failure = match e {
                                OpenError::Refused(answer) if answer.is_permanent() => {
                                    Failure::HostRefused {
                                        host: host.to_string(),
                                        answer,
                                    }
                                }
                                OpenError::Refused(answer) => Failure::Remote(answer),
                                OpenError::Connect(detail) => Failure::Connect { detail },
                                OpenError::Tls { detail, .. } => Failure::TlsRequired { detail },
                            };
                            log_attempt(
                                job,
                                host,
                                addr,
                                None,
                                directive,
                                &[failure.to_string()],
                                started,
                            );
                            return Attempt::NextHost(failure);
                        }
                    }
                }
            };
            if let Err(failure) = requiretls::check_session(job.tls_request, &conn.session) {
                let tls = conn.session.tls.clone();
                let lines = [failure.to_string()];
                log_attempt(job, host, addr, tls.as_ref(), directive, &lines, started);
                self.pool.release(conn);
                return Attempt::NextHost(failure);
            }
            let result = conn
                .session
                .send(&job.mail_from, &mail_params, &job.recipients, &job.message)
                .await;
            let tls = conn.session.tls.clone();
            match result {
                Ok(tx)
                    if reused
                        && stale_retries < STALE_RETRIES
                        && tx.answers.iter().all(|a| a.code == 421) =>
                {
                    // A pooled session the server is closing (shutdown or restart says 421
                    // before it hangs up): the message did not go; a fresh session may.
                    stale_retries += 1;
                    tracing::info!(queue_id = %job.queue_id, mx = %host, %addr,
                        reply = %tx.answers.first().map(|a| a.to_string()).unwrap_or_default(),
                        "pooled connection is being closed by the server; retrying on a new connection");
                    conn.close();
                    self.pool.discard_idle(&key);
                    continue;
                }
                Ok(tx) => {
                    let lines: Vec<String> = tx.answers.iter().map(|a| a.to_string()).collect();
                    log_attempt(job, host, addr, tls.as_ref(), directive, &lines, started);
                    self.pool.release(conn);
                    if let Some(first) = tx.answers.first()
                        && tx.answers.iter().all(|a| a.code == 421)
                    {
                        return Attempt::NextHost(Failure::Remote(first.clone()));
                    }
                    return Attempt::Done(
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
                    );
                }
                Err(TransactionError::Stale(detail)) if reused && stale_retries < STALE_RETRIES => {
                    // The server closed this idle session (or restarted) while it was pooled:
                    // nothing of the message reached it. Not an attempt: drop every idle
                    // session to it and go again at once on a fresh connection.
                    stale_retries += 1;
                    tracing::info!(queue_id = %job.queue_id, mx = %host, %addr, error = %detail,
                        "pooled connection was closed by the server; retrying on a new connection");
                    conn.close();
                    self.pool.discard_idle(&key);
                    continue;
                }
                Err(e) => {
                    let failure = Failure::ConnectionLost {
                        host: host.to_string(),
                        detail: e.detail().to_string(),
                    };
                    log_attempt(
                        job,
                        host,
                        addr,
                        tls.as_ref(),
                        directive,
                        &[failure.to_string()],
                        started,
                    );
                    conn.close();
                    return Attempt::Done(vec![Err(failure); job.recipients.len()]);
                }
            }
        }
    }

    /// Opens a session, falling back to clear text when an opportunistic handshake fails,
    /// and tells TLS-RPT how TLS went where a policy applies.
    async fn open(
        &self,
        job: &Job,
        host: &str,
        addr: SocketAddr,
        mode: TlsMode,
        directive: &TlsDirective,
        credentials: Option<&Credentials<String>>,
    ) -> Result<Session, OpenError> {
        let dane_tls;
        let tls = match directive {
            TlsDirective::Dane { target } => {
                dane_tls = self
                    .tls
                    .for_dane(target.clone())
                    .map_err(|e| OpenError::Tls {
                        detail: e.to_string(),
                        result_type: mail_auth::report::tlsrpt::ResultType::ValidationFailure,
                    })?;
                &dane_tls
            }
            _ => &self.tls,
        };
        let first = Session::open(
            addr,
            host,
            &self.helo,
            mode,
            tls,
            self.timeouts,
            credentials,
        )
        .await;
        // Every session's TLS outcome goes to the sink: the TLS-RPT reporter counts those
        // under a recipient domain's published policy (`require_tls` is our own, and
        // opportunistic delivery has none), and `/metrics` counts all of them.
        match &first {
            Ok(session) => {
                let outcome = match &session.tls {
                    Some(t) if t.verified => TlsOutcome::Success,
                    Some(t) => TlsOutcome::Failure {
                        result_type: t
                            .problem_type
                            .unwrap_or(mail_auth::report::tlsrpt::ResultType::ValidationFailure),
                        mx_host: host.to_string(),
                        ip: Some(addr.ip()),
                        detail: t.problem.clone().unwrap_or_default(),
                    },
                    None => TlsOutcome::Failure {
                        result_type: mail_auth::report::tlsrpt::ResultType::StartTlsNotSupported,
                        mx_host: host.to_string(),
                        ip: Some(addr.ip()),
                        detail: "the server does not offer STARTTLS".into(),
                    },
                };
                self.emit(directive, outcome);
            }
            Err(OpenError::Tls {
                detail,
                result_type,
            }) => {
                self.emit(
                    directive,
                    TlsOutcome::Failure {
                        result_type: *result_type,
                        mx_host: host.to_string(),
                        ip: Some(addr.ip()),
                        detail: detail.clone(),
                    },
                );
                if mode == TlsMode::Opportunistic {
                    tracing::info!(queue_id = %job.queue_id, mx = %host, %addr, error = %detail,
                        "opportunistic TLS failed; retrying this host without TLS");
                    return Session::open(
                        addr,
                        host,
                        &self.helo,
                        TlsMode::Off,
                        &self.tls,
                        self.timeouts,
                        credentials,
                    )
                    .await;
                }
            }
            _ => {}
        }
        first
    }
}

/// The one log line per delivery attempt.
fn log_attempt(
    job: &Job,
    host: &str,
    addr: SocketAddr,
    tls: Option<&super::client::TlsInfo>,
    directive: &TlsDirective,
    replies: &[String],
    started: Instant,
) {
    let mut replies = replies.to_vec();
    replies.dedup();
    tracing::info!(
        queue_id = %job.queue_id,
        domain = %job.domain,
        mx = %host,
        addr = %addr,
        tls = %tls.map(|t| t.version.as_str()).unwrap_or("none"),
        policy = %directive.label(),
        cert_verified = tls.is_some_and(|t| t.verified),
        recipients = job.recipients.len(),
        reply = %replies.join(" | "),
        duration_ms = started.elapsed().as_millis() as u64,
        "delivery attempt"
    );
}
