//! The route plan: before any connection, one value says which hosts a job goes to, in order,
//! each with the TLS it must get and why — or that the route is refused. [`plan`] is a pure
//! function of what was resolved (the MX hosts, the recipient domain's [`TlsDirective`], DANE's
//! view of each host) and of what the message asks ([`MessageTls`]); delivery is then resolve →
//! plan → try the hosts in order.
//!
//! Precedence (the README's table "How herald decides TLS for a route" says the same):
//! 1. the smart host (`[delivery] relay_host`): verified TLS to its configured name, nothing
//!    else looked at;
//! 2. herald's own TLS-RPT report: opportunistic whatever the policy (RFC 8460 §3);
//! 3. `TLS-Required: No` sets the recipient's MTA-STS and DANE aside (RFC 8689 §4.2.2), but
//!    not herald's own `[delivery] require_tls`;
//! 4. DANE for an MX host (RFC 7672): verified against its TLSA records, over MTA-STS
//!    (RFC 8461 §2) and `require_tls`; DNSSEC trouble (or `dane-required` unmet) leaves the
//!    host unused;
//! 5. MTA-STS `enforce`: only hosts the policy lists (or DANE protects), verified TLS — none
//!    listed refuses the route;
//! 6. `[delivery] require_tls`: verified TLS to the MX name (already folded into the domain's
//!    directive by [`TlsDirective::with_require_tls`], below `enforce`, above `testing`);
//! 7. MTA-STS `testing`, a policy that could not be loaded, or none: opportunistic.
//!
//! On top, REQUIRETLS (RFC 8689 §4.2.1, see [`super::requiretls`]): the route is refused
//! unless it can authenticate a host (smart host, MTA-STS `enforce`, DANE), and a host it does
//! not authenticate is not used.

use std::fmt;

use super::client::TlsMode;
use super::dane::{self, DanePlan, HostDane};
use super::outcome::Failure;
use super::requiretls;
use crate::spool::TlsRequest;
use crate::tls_policy::{Mode, TlsDirective, TlsEvent, TlsOutcome};

/// What the message itself asks of TLS (from the spooled envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageTls {
    /// herald's own TLS-RPT report (RFC 8460 §3: delivered despite the failures it reports).
    pub tls_report: bool,
    /// REQUIRETLS, `TLS-Required: No`, or nothing.
    pub request: TlsRequest,
}

impl MessageTls {
    /// Whether the recipient's MTA-STS policy (and `require_tls`) is asked for: not for
    /// herald's own report, which ignores it.
    pub(crate) fn needs_sts(self) -> bool {
        !self.tls_report
    }

    /// Whether DANE records are looked up: not for herald's own report, nor for a message
    /// with `TLS-Required: No`, which sets DANE aside.
    pub(crate) fn needs_dane(self) -> bool {
        !self.tls_report && self.request != TlsRequest::TlsOptional
    }
}

/// Where a job goes, as resolved before planning.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// `[delivery] relay_host`: everything through one configured host.
    SmartHost {
        /// The host name (checked against its certificate).
        host: String,
        /// Its port.
        port: u16,
    },
    /// The recipient domain's MX hosts.
    Mx {
        /// Best first, as [`super::resolve::mx_hosts`] gave them.
        hosts: Vec<String>,
        /// The delivery port.
        port: u16,
        /// The domain's directive (MTA-STS with `require_tls` applied); ignored when
        /// [`MessageTls::needs_sts`] is false.
        directive: TlsDirective,
        /// DANE's view of each host; empty when [`MessageTls::needs_dane`] is false.
        dane: DanePlan,
    },
}

/// Why a host gets the TLS it gets: the rule of the precedence list that decided (logged on
/// each delivery attempt as `tls_rule=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// `[delivery] relay_host`.
    SmartHost,
    /// herald's own TLS-RPT report.
    TlsReport,
    /// The message's `TLS-Required: No`.
    TlsOptional,
    /// The host's TLSA records.
    Dane,
    /// An MTA-STS policy in `enforce` mode.
    MtaStsEnforce,
    /// `[delivery] require_tls` / `require_tls_domains`.
    RequireTls,
    /// An MTA-STS policy in `testing` mode.
    MtaStsTesting,
    /// An announced MTA-STS policy that could not be fetched or parsed.
    MtaStsUnavailable,
    /// No policy at all.
    NoPolicy,
}

impl Reason {
    /// The rule a domain's directive stands for.
    fn of(directive: &TlsDirective) -> Reason {
        match directive {
            TlsDirective::Opportunistic => Reason::NoPolicy,
            TlsDirective::Required => Reason::RequireTls,
            TlsDirective::Sts { policy, .. } => match policy.mode {
                Mode::Enforce => Reason::MtaStsEnforce,
                Mode::Testing => Reason::MtaStsTesting,
                Mode::None => Reason::NoPolicy,
            },
            TlsDirective::StsFailed { .. } => Reason::MtaStsUnavailable,
            TlsDirective::Dane { .. } => Reason::Dane,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::SmartHost => "smart host",
            Reason::TlsReport => "tls-rpt report",
            Reason::TlsOptional => "TLS-Required: No",
            Reason::Dane => "dane",
            Reason::MtaStsEnforce => "mta-sts enforce",
            Reason::RequireTls => "require_tls",
            Reason::MtaStsTesting => "mta-sts testing",
            Reason::MtaStsUnavailable => "mta-sts unavailable",
            Reason::NoPolicy => "no policy",
        })
    }
}

/// One host to connect to, and how.
#[derive(Debug, Clone)]
pub(crate) struct HostTls {
    /// The host name (or address literal).
    pub host: String,
    /// Strict (verified, no fall-back) or opportunistic.
    pub mode: TlsMode,
    /// The directive the sessions are made and reported under.
    pub directive: TlsDirective,
    /// Why this TLS.
    pub reason: Reason,
    /// A REQUIRETLS message: the session must be verified and advertise REQUIRETLS, and
    /// `MAIL FROM` carries the flag.
    pub requiretls: bool,
}

/// One step of the plan, in MX order.
#[derive(Debug, Clone)]
pub(crate) enum Hop {
    /// Connect to this host.
    Try(HostTls),
    /// DANE forbids this host now (DNSSEC trouble, or `dane-required` unmet): it is passed
    /// over; the TLS-RPT event is emitted when delivery reaches it.
    DaneUnusable {
        /// The host.
        host: String,
        /// Why, as logged.
        detail: String,
        /// For TLS-RPT (policy type `tlsa`).
        event: TlsEvent,
        /// What the job fails with if no later host takes it.
        failure: Failure,
    },
    /// A REQUIRETLS message, and nothing authenticates this host: passed over.
    NotAuthenticated {
        /// The host.
        host: String,
        /// What the job fails with if no later host takes it.
        failure: Failure,
    },
}

/// The hosts a job goes to, in order, with their TLS.
#[derive(Debug, Clone)]
pub(crate) struct RoutePlan {
    /// The port to connect to.
    pub port: u16,
    /// Each host in order.
    pub hops: Vec<Hop>,
    /// The domain is its own MX (it has no MX records): a host that does not exist means the
    /// domain has no route, permanently.
    pub implicit_mx: bool,
    /// Through the smart host (its credentials are used).
    pub smart_host: bool,
}

/// A route refused before connecting.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// What every recipient of the job fails with.
    pub failure: Failure,
    /// The domain's directive's label, for the log line.
    pub policy: &'static str,
    /// TLS-RPT events to emit (the MX hosts the MTA-STS policy does not list).
    pub events: Vec<TlsEvent>,
}

impl Refusal {
    /// The log line's message.
    pub(crate) fn what(&self) -> &'static str {
        match self.failure {
            Failure::NoMxMatchesPolicy { .. } => "delivery attempt: no MX allowed",
            _ => "delivery attempt: REQUIRETLS not possible",
        }
    }
}

/// The plan for delivering a message asking `message` to `domain` over `route`.
pub(crate) fn plan(domain: &str, message: MessageTls, route: Route) -> Result<RoutePlan, Refusal> {
    let requiretls = message.request == TlsRequest::RequireTls;
    match route {
        // The smart host is configured by name and verified against it: an authenticated
        // next hop, so REQUIRETLS is satisfied up to the session check.
        Route::SmartHost { host, port } => Ok(RoutePlan {
            port,
            hops: vec![Hop::Try(HostTls {
                host,
                mode: TlsMode::Strict,
                directive: TlsDirective::Required,
                reason: Reason::SmartHost,
                requiretls,
            })],
            implicit_mx: false,
            smart_host: true,
        }),
        Route::Mx {
            hosts,
            port,
            directive,
            dane,
        } => {
            let (directive, reason) = domain_directive(message, directive);
            let dane = if message.needs_dane() {
                dane
            } else {
                DanePlan::default()
            };
            let hosts = allowed_hosts(domain, &directive, hosts, &dane)?;
            requiretls::check_route(
                message.request,
                &directive,
                dane.may_authenticate_a_host(),
                domain,
            )
            .map_err(|failure| Refusal {
                failure,
                policy: directive.label(),
                events: Vec::new(),
            })?;
            let implicit_mx = hosts.len() == 1 && hosts[0] == domain.to_ascii_lowercase();
            let domain_tls = HostTls {
                host: String::new(),
                mode: if directive.requires_verified_tls() {
                    TlsMode::Strict
                } else {
                    TlsMode::Opportunistic
                },
                directive,
                reason,
                requiretls,
            };
            let hops = hosts
                .into_iter()
                .map(|host| hop(domain, message, host, &domain_tls, &dane))
                .collect();
            Ok(RoutePlan {
                port,
                hops,
                implicit_mx,
                smart_host: false,
            })
        }
    }
}

/// The domain's directive as the message lets it apply, and the rule that decided it.
fn domain_directive(message: MessageTls, recipient: TlsDirective) -> (TlsDirective, Reason) {
    if message.tls_report {
        return (TlsDirective::Opportunistic, Reason::TlsReport);
    }
    let directive = requiretls::directive(message.request, recipient);
    let reason = match directive {
        TlsDirective::Required => Reason::RequireTls,
        _ if message.request == TlsRequest::TlsOptional => Reason::TlsOptional,
        ref d => Reason::of(d),
    };
    (directive, reason)
}

/// MTA-STS `enforce`: only the MX hosts the policy lists, or DANE protects (RFC 8461 §2).
/// None left refuses the route, with a `validation-failure` for each host: RFC 8460 has no
/// result type of its own for an MX outside the policy, and that is the one receivers read as
/// "policy not met".
fn allowed_hosts(
    domain: &str,
    directive: &TlsDirective,
    hosts: Vec<String>,
    dane: &DanePlan,
) -> Result<Vec<String>, Refusal> {
    let TlsDirective::Sts { policy, .. } = directive else {
        return Ok(hosts);
    };
    if !directive.requires_verified_tls() {
        return Ok(hosts);
    }
    let (allowed, refused): (Vec<String>, Vec<String>) = hosts
        .into_iter()
        .partition(|h| policy.matches_mx(h) || dane.protects(h));
    if !allowed.is_empty() {
        return Ok(allowed);
    }
    let events = refused
        .into_iter()
        .map(|mx_host| TlsEvent::Session {
            directive: directive.clone(),
            outcome: TlsOutcome::Failure {
                result_type: mail_auth::report::tlsrpt::ResultType::ValidationFailure,
                mx_host,
                ip: None,
                detail: "MX host not listed in the MTA-STS policy".into(),
            },
        })
        .collect();
    Err(Refusal {
        failure: Failure::NoMxMatchesPolicy {
            domain: domain.to_string(),
        },
        policy: directive.label(),
        events,
    })
}

/// One MX host: DANE's verdict over the domain's TLS, then REQUIRETLS.
fn hop(
    domain: &str,
    message: MessageTls,
    host: String,
    domain_tls: &HostTls,
    dane: &DanePlan,
) -> Hop {
    let (directive, mode, reason) = match dane.host(&host) {
        HostDane::NotApplicable(_) => (
            domain_tls.directive.clone(),
            domain_tls.mode,
            domain_tls.reason,
        ),
        HostDane::Applies(target) => (TlsDirective::Dane { target }, TlsMode::Strict, Reason::Dane),
        HostDane::Unusable {
            result_type,
            detail,
        } => {
            let (event, failure) = dane::refusal(domain, &host, result_type, detail.clone());
            return Hop::DaneUnusable {
                host,
                detail,
                event,
                failure,
            };
        }
    };
    if let Err(failure) = requiretls::check_host(message.request, &directive, &host) {
        return Hop::NotAuthenticated { host, failure };
    }
    Hop::Try(HostTls {
        host,
        mode,
        directive,
        reason,
        requiretls: domain_tls.requiretls,
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
