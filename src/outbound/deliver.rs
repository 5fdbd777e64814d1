//! Delivering one message to one recipient domain: resolve (MX hosts, the domain's TLS
//! directive, DANE), plan the route ([`super::plan`]), then try its hosts in order, one
//! transaction for all the domain's recipients ([`super::attempt`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_send::Credentials;

use super::attempt::{Attempt, Connector};
use super::capture::Capture;
use super::client::Timeouts;
use super::dane::{Dane, DanePlan};
use super::dns_cache::DnsCache;
use super::job::Job;
use super::outcome::{Failure, RecipientResult};
use super::plan::{self, Hop, MessageTls, Route, RoutePlan};
use super::pool::Pool;
use super::requiretls::next_host_failure;
use super::resolve::{self, ResolveError};
use super::tls::OutboundTls;
use crate::config::Config;
use crate::mta_sts::StsResolver;
use crate::tls_policy::{TlsDirective, TlsSink};

/// `[delivery] relay_host`: the smart host everything goes through.
struct Relay {
    host: String,
    port: u16,
    credentials: Option<Credentials<String>>,
}

impl Relay {
    /// From `[delivery] relay_host` (`host:port`) and its credentials, when set.
    fn from_config(cfg: &Config) -> anyhow::Result<Option<Relay>> {
        let d = &cfg.delivery;
        let Some(spec) = &d.relay_host else {
            return Ok(None);
        };
        let (host, port) = spec
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                anyhow::anyhow!("delivery.relay_host: {spec:?} must be \"host:port\"")
            })?;
        let credentials = match (&d.relay_username, &d.relay_password) {
            (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
            (None, None) => None,
            _ => anyhow::bail!("delivery.relay_username and delivery.relay_password go together"),
        };
        Ok(Some(Relay {
            host: host.to_ascii_lowercase(),
            port,
            credentials,
        }))
    }
}

/// Everything delivery needs, shared by all jobs.
pub(crate) struct Outbound {
    port: u16,
    resolver: MessageAuthenticator,
    /// MX and address records within their TTL (one map read per attempt).
    dns_cache: DnsCache,
    sts: Arc<StsResolver>,
    dane: Dane,
    connector: Connector,
    relay: Option<Relay>,
    capture: Option<Capture>,
}

impl Outbound {
    /// Builds delivery from configuration, with the MTA-STS resolver to ask and the sink that
    /// receives how TLS went with each MX (the TLS-RPT reporter).
    pub(crate) fn new(
        cfg: &Config,
        sts: Arc<StsResolver>,
        tls_events: Arc<dyn TlsSink>,
    ) -> anyhow::Result<Outbound> {
        let d = &cfg.delivery;
        Ok(Outbound {
            port: d.port,
            resolver: crate::resolver::authenticator(&cfg.dns)?,
            dns_cache: DnsCache::default(),
            sts,
            dane: Dane::new(cfg)?,
            connector: Connector {
                helo: cfg.server.hostname.clone(),
                timeouts: Timeouts {
                    connect: d.connect_timeout,
                    command: d.command_timeout,
                    data: d.data_timeout,
                },
                tls: OutboundTls::new(&cfg.tls)?,
                pool: Pool::new(
                    d.max_connections,
                    d.max_connections_per_host,
                    Duration::from_secs(5),
                ),
                tls_events,
                shaper: crate::shaping::Shaper::new(cfg),
            },
            relay: Relay::from_config(cfg)?,
            capture: d.capture_dir.as_deref().map(Capture::new),
        })
    }

    /// Whether everything goes through the smart host (one job per message, not per domain).
    pub(crate) fn uses_relay(&self) -> bool {
        self.relay.is_some()
    }

    /// Attempts delivery of `job`; one result per recipient, in order.
    pub(crate) async fn deliver(&self, job: &Job) -> Vec<RecipientResult> {
        if let Some(capture) = &self.capture {
            return capture.deliver(job).await;
        }
        match self.plan(job).await {
            Ok(plan) => self.try_hosts(job, &plan).await,
            Err(failure) => every(job, failure, None),
        }
    }

    /// Resolves what the route depends on and plans it; a refusal is logged, told to TLS-RPT,
    /// and becomes every recipient's failure.
    async fn plan(&self, job: &Job) -> Result<RoutePlan, Failure> {
        let message = MessageTls {
            tls_report: job.tls_report,
            request: job.tls_request,
        };
        let route = match &self.relay {
            Some(relay) => Route::SmartHost {
                host: relay.host.clone(),
                port: relay.port,
            },
            None => self.resolve(job, message).await?,
        };
        plan::plan(&job.domain, message, route).map_err(|refusal| {
            for event in refusal.events.iter().cloned() {
                self.connector.tls_events.emit(event);
            }
            tracing::warn!(queue_id = %job.queue_id, domain = %job.domain,
                policy = %refusal.policy, reply = %refusal.failure, "{}", refusal.what());
            refusal.failure
        })
    }

    /// The domain's MX hosts, its TLS directive and DANE's view of each host — the last two
    /// only when the message heeds them.
    async fn resolve(&self, job: &Job, message: MessageTls) -> Result<Route, Failure> {
        let directive = async {
            if message.needs_sts() {
                self.sts.directive_for(&job.domain).await
            } else {
                TlsDirective::Opportunistic
            }
        };
        let (directive, hosts) = tokio::join!(
            directive,
            resolve::mx_hosts_kept(&self.resolver, Some(&self.dns_cache), &job.domain)
        );
        let hosts = hosts.map_err(|e| {
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
            failure
        })?;
        let dane = if message.needs_dane() {
            self.dane.plan(&job.domain, &hosts).await
        } else {
            DanePlan::default()
        };
        Ok(Route::Mx {
            hosts,
            port: self.port,
            directive,
            dane,
        })
    }

    /// Tries the plan's hosts in order, each address of each, until one answers for the
    /// recipients; otherwise every recipient gets the failure that matters most.
    async fn try_hosts(&self, job: &Job, plan: &RoutePlan) -> Vec<RecipientResult> {
        let credentials = match &self.relay {
            Some(relay) if plan.smart_host => relay.credentials.as_ref(),
            _ => None,
        };
        let mut last = Failure::NoHostReached;
        let mut last_host = None;
        let mut throttled = None;
        for hop in &plan.hops {
            let host = match hop {
                Hop::Try(host) => host,
                Hop::DaneUnusable {
                    host,
                    detail,
                    event,
                    failure,
                } => {
                    tracing::warn!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                        policy = "dane", reply = %detail, "delivery attempt: MX host not used (DANE)");
                    self.connector.tls_events.emit(event.clone());
                    last = next_host_failure(last, failure.clone());
                    continue;
                }
                Hop::NotAuthenticated { host, failure } => {
                    tracing::info!(queue_id = %job.queue_id, domain = %job.domain, mx = %host,
                        reply = %failure, "delivery attempt: MX host not used (REQUIRETLS)");
                    last = next_host_failure(last, failure.clone());
                    continue;
                }
            };
            let _turn = match self.connector.shaper.admit(&host.host).await {
                Ok(turn) => turn,
                Err(held) => {
                    throttled = Some(throttled_failure(held));
                    continue;
                }
            };
            let addrs = match resolve::addresses_kept(
                &self.resolver,
                Some(&self.dns_cache),
                &host.host,
            )
            .await
            {
                Ok(a) => a,
                Err(e) if e.is_permanent() && plan.implicit_mx => {
                    return every(job, Failure::NoRoute(e), None);
                }
                Err(e) => {
                    tracing::info!(queue_id = %job.queue_id, domain = %job.domain, mx = %host.host,
                        reply = %e, "delivery attempt: MX host has no usable address");
                    last = next_host_failure(last, Failure::NoAddress(e));
                    continue;
                }
            };
            for ip in addrs {
                let addr = SocketAddr::new(ip, plan.port);
                last_host = Some(format!("{} [{ip}]", host.host));
                let attempt = self.connector.attempt(job, host, addr, credentials).await;
                self.shaping_saw(&host.host, &attempt);
                match attempt {
                    Attempt::Done(outcomes, tls) => {
                        return outcomes
                            .into_iter()
                            .map(|outcome| RecipientResult {
                                outcome,
                                host: last_host.clone(),
                                tls: tls.clone(),
                                tls_policy: Some(host.directive.label()),
                            })
                            .collect();
                    }
                    Attempt::NextHost(failure) => last = next_host_failure(last, failure),
                }
            }
        }
        match throttled {
            // Every host that could be tried is held back: no attempt at all.
            Some(held) if matches!(last, Failure::NoHostReached) => every(job, held, None),
            _ => every(job, last, last_host),
        }
    }

    /// Tells traffic shaping how an attempt at `mx` went.
    fn shaping_saw(&self, mx: &str, attempt: &Attempt) {
        let shaper = &self.connector.shaper;
        let answers: Vec<&super::outcome::Answer> = match attempt {
            Attempt::Done(outcomes, _) if outcomes.iter().any(|o| o.is_ok()) => {
                return shaper.delivered(mx);
            }
            Attempt::Done(outcomes, _) => outcomes
                .iter()
                .filter_map(|o| match o {
                    Err(Failure::Remote(a)) => Some(a),
                    _ => None,
                })
                .collect(),
            Attempt::NextHost(Failure::Remote(a)) => vec![a],
            Attempt::NextHost(_) => Vec::new(),
        };
        if let Some(a) = answers.first() {
            shaper.observe(mx, a.code, a.status, &a.text);
        }
    }
}

/// A destination held back by traffic shaping, as the failure its recipients wait with.
fn throttled_failure(held: crate::shaping::Held) -> Failure {
    Failure::Throttled {
        destination: held.destination,
        wait_secs: held.wait.as_secs_f64().ceil() as u64,
    }
}

/// The same result for every recipient of `job`.
fn every(job: &Job, failure: Failure, host: Option<String>) -> Vec<RecipientResult> {
    vec![
        RecipientResult {
            outcome: Err(failure),
            host,
            tls: None,
            tls_policy: None,
        };
        job.recipients.len()
    ]
}
