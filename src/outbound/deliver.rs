//! Delivering one message to one recipient domain: TLS directive, routing, trying hosts in
//! order, one transaction for all the domain's recipients, one log line per attempt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::MessageAuthenticator;
use mail_send::Credentials;

use super::client::{Answer, OpenError, Session, Timeouts, TlsMode};
use super::pool::{Acquired, Conn, Key, Pool};
use super::resolve::{self, ResolveError};
use super::tls::OutboundTls;
use crate::config::Config;
use crate::mta_sts::{StsResolver, TlsDirective};
use crate::report::{TlsOutcome, TlsReporter};

/// Where a recipient stands after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the remote (`2xx`).
    Delivered,
    /// Try again later (`4xx`, connection, TLS or DNS trouble).
    Temporary,
    /// Give up (`5xx`, null MX, non-existent domain).
    Permanent,
}

/// One recipient's result of an attempt.
#[derive(Debug, Clone)]
pub struct RecipientResult {
    /// What to do next.
    pub verdict: Verdict,
    /// The reply (remote, or made up for a local condition).
    pub answer: Answer,
    /// The host tried, as `name [address]`.
    pub host: Option<String>,
}

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
    /// The bytes to send.
    pub message: Arc<Vec<u8>>,
    /// A TLS-RPT report of herald's: delivered opportunistically, whatever policy applies.
    pub tls_report: bool,
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
    reporter: Arc<TlsReporter>,
    relay: Option<Relay>,
}

enum Attempt {
    Done(Vec<Answer>),
    NextHost(Answer),
}

impl Outbound {
    /// Builds delivery from configuration, with the MTA-STS resolver and TLS reporter to use.
    pub fn new(
        cfg: &Config,
        sts: Arc<StsResolver>,
        reporter: Arc<TlsReporter>,
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
            reporter,
            relay,
        })
    }

    /// Whether everything goes through the smart host (one job per message, not per domain).
    pub fn uses_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// Attempts delivery of `job`; one result per recipient, in order.
    pub async fn deliver(&self, job: &Job) -> Vec<RecipientResult> {
        let n = job.recipients.len();
        let all = |verdict, answer: Answer, host: Option<String>| {
            vec![
                RecipientResult {
                    verdict,
                    answer,
                    host,
                };
                n
            ]
        };
        let (hosts, port, mode, directive, credentials) = match &self.relay {
            Some(relay) => (
                vec![relay.host.clone()],
                relay.port,
                TlsMode::Strict,
                TlsDirective::Required,
                relay.credentials.as_ref(),
            ),
            None => {
                // RFC 8460 §3: a report must reach its recipient even across the TLS
                // failures it reports, so herald's own reports are not held to the policy.
                let directive = if job.tls_report {
                    TlsDirective::Opportunistic
                } else {
                    self.sts.directive_for(&job.domain).await
                };
                let mut hosts = match resolve::mx_hosts(&self.resolver, &job.domain).await {
                    Ok(h) => h,
                    Err(ResolveError::Permanent(why)) => {
                        let status = if why.contains("null MX") {
                            "5.1.10"
                        } else {
                            "5.1.2"
                        };
                        tracing::info!(queue_id = %job.queue_id, domain = %job.domain,
                            reply = %why, "delivery attempt: no route");
                        return all(
                            Verdict::Permanent,
                            Answer::local(550, format!("{status} {why}")),
                            None,
                        );
                    }
                    Err(ResolveError::Temporary(why)) => {
                        tracing::info!(queue_id = %job.queue_id, domain = %job.domain,
                            reply = %why, "delivery attempt: DNS trouble");
                        return all(
                            Verdict::Temporary,
                            Answer::local(451, format!("4.4.3 {why}")),
                            None,
                        );
                    }
                };
                if let TlsDirective::Sts { policy, .. } = &directive
                    && directive.requires_verified_tls()
                {
                    let (allowed, refused): (Vec<String>, Vec<String>) =
                        hosts.into_iter().partition(|h| policy.matches_mx(h));
                    hosts = allowed;
                    if hosts.is_empty() {
                        // RFC 8460 has no result type of its own for an MX outside the policy;
                        // validation-failure is the one receivers read as "policy not met".
                        for mx_host in refused {
                            self.reporter.record(
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
                        let why = format!(
                            "4.7.5 no MX host of {} matches its MTA-STS policy",
                            job.domain
                        );
                        tracing::warn!(queue_id = %job.queue_id, domain = %job.domain,
                            policy = %directive.label(), reply = %why, "delivery attempt: no MX allowed");
                        return all(Verdict::Temporary, Answer::local(451, why), None);
                    }
                }
                let mode = if directive.requires_verified_tls() {
                    TlsMode::Strict
                } else {
                    TlsMode::Opportunistic
                };
                (hosts, self.port, mode, directive, None)
            }
        };
        let implicit = hosts.len() == 1 && hosts[0] == job.domain.to_ascii_lowercase();
        let mut last = Answer::local(451, "4.4.1 no MX host could be reached");
        let mut last_host = None;
        for host in &hosts {
            let addrs = match resolve::addresses(&self.resolver, host).await {
                Ok(a) => a,
                Err(ResolveError::Permanent(why)) if implicit && self.relay.is_none() => {
                    return all(
                        Verdict::Permanent,
                        Answer::local(550, format!("5.1.2 {why}")),
                        None,
                    );
                }
                Err(e) => {
                    tracing::info!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                        reply = %e, "delivery attempt: MX host has no usable address");
                    last = Answer::local(451, format!("4.4.3 {e}"));
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
                    Attempt::Done(answers) => {
                        return answers
                            .into_iter()
                            .map(|answer| RecipientResult {
                                verdict: if answer.is_positive() {
                                    Verdict::Delivered
                                } else if answer.is_permanent() {
                                    Verdict::Permanent
                                } else {
                                    Verdict::Temporary
                                },
                                answer,
                                host: last_host.clone(),
                            })
                            .collect();
                    }
                    Attempt::NextHost(answer) => last = answer,
                }
            }
        }
        all(Verdict::Temporary, last, last_host)
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
        };
        let _turn = self.pool.gate(host).await;
        let mut tries = 0;
        loop {
            tries += 1;
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
                            let answer = match &e {
                                OpenError::Refused(a) => a.clone(),
                                other => Answer::local(451, format!("4.4.2 {other}")),
                            };
                            log_attempt(
                                job,
                                host,
                                addr,
                                None,
                                directive,
                                std::slice::from_ref(&answer),
                                started,
                            );
                            // A refusal at greeting or EHLO, a connection failure or a TLS
                            // failure all mean: the next host.
                            return Attempt::NextHost(if answer.is_permanent() {
                                Answer::local(451, format!("4.4.2 {host} refused: {answer}"))
                            } else {
                                answer
                            });
                        }
                    }
                }
            };
            let result = conn
                .session
                .send(
                    &job.mail_from,
                    &job.mail_params,
                    &job.recipients,
                    &job.message,
                )
                .await;
            let tls = conn.session.tls.clone();
            match result {
                Ok(tx) => {
                    log_attempt(
                        job,
                        host,
                        addr,
                        tls.as_ref(),
                        directive,
                        &tx.answers,
                        started,
                    );
                    self.pool.release(conn);
                    if tx.answers.iter().all(|a| a.code == 421) {
                        return Attempt::NextHost(tx.answers[0].clone());
                    }
                    return Attempt::Done(tx.answers);
                }
                Err(e) => {
                    let answer =
                        Answer::local(451, format!("4.4.2 connection to {host} lost: {e}"));
                    log_attempt(
                        job,
                        host,
                        addr,
                        tls.as_ref(),
                        directive,
                        std::slice::from_ref(&answer),
                        started,
                    );
                    conn.close();
                    // An idle session the server had already closed: open a fresh one.
                    if reused && tries < 3 {
                        continue;
                    }
                    return Attempt::Done(vec![answer; job.recipients.len()]);
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
        let first = Session::open(
            addr,
            host,
            &self.helo,
            mode,
            &self.tls,
            self.timeouts,
            credentials,
        )
        .await;
        // TLS-RPT is about a recipient domain's published policy; `require_tls` is our own.
        let reportable = matches!(directive, TlsDirective::Sts { .. });
        match &first {
            Ok(session) if reportable => {
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
                self.reporter.record(directive, outcome);
            }
            Err(OpenError::Tls {
                detail,
                result_type,
            }) => {
                if reportable {
                    self.reporter.record(
                        directive,
                        TlsOutcome::Failure {
                            result_type: *result_type,
                            mx_host: host.to_string(),
                            ip: Some(addr.ip()),
                            detail: detail.clone(),
                        },
                    );
                }
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
    answers: &[Answer],
    started: Instant,
) {
    let mut replies: Vec<String> = answers.iter().map(|a| a.to_string()).collect();
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
