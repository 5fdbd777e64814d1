//! Every precedence rule of the route plan, one test each (module `plan`).

use std::sync::Arc;

use hickory_resolver::proto::rr::rdata::TLSA;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use mail_auth::report::tlsrpt::ResultType;

use super::*;
use crate::tls_policy::{DaneTarget, Policy};

const DOMAIN: &str = "bank.test";

fn ordinary() -> MessageTls {
    MessageTls {
        tls_report: false,
        request: TlsRequest::Policy,
    }
}

fn asking(request: TlsRequest) -> MessageTls {
    MessageTls {
        tls_report: false,
        request,
    }
}

fn report() -> MessageTls {
    MessageTls {
        tls_report: true,
        request: TlsRequest::Policy,
    }
}

fn sts(mode: Mode, mx: &str) -> TlsDirective {
    TlsDirective::Sts {
        domain: DOMAIN.into(),
        policy: Arc::new(Policy {
            id: "1".into(),
            mode,
            mx: vec![mx.into()],
            max_age: 86400,
        }),
    }
}

fn sts_failed() -> TlsDirective {
    TlsDirective::StsFailed {
        domain: DOMAIN.into(),
        result_type: ResultType::StsPolicyFetchError,
        detail: "timed out".into(),
    }
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|h| h.to_string()).collect()
}

/// DANE applies to `host` (usable records unless `encrypt_only`).
fn dane_applies(host: &str, encrypt_only: bool) -> (String, HostDane) {
    let records = if encrypt_only {
        Vec::new()
    } else {
        vec![TLSA::new(
            CertUsage::DaneEe,
            Selector::Spki,
            Matching::Sha256,
            vec![7; 32],
        )]
    };
    let target = DaneTarget {
        domain: DOMAIN.into(),
        host: host.into(),
        base: host.into(),
        records,
    };
    (host.to_string(), HostDane::Applies(Arc::new(target)))
}

fn dane_unusable(host: &str) -> (String, HostDane) {
    let verdict = HostDane::Unusable {
        result_type: ResultType::DnssecInvalid,
        detail: format!("TLSA of {host}: SERVFAIL"),
    };
    (host.to_string(), verdict)
}

fn dane(hosts: Vec<(String, HostDane)>) -> DanePlan {
    DanePlan {
        mx_secure: true,
        summary: None,
        hosts,
    }
}

fn mx(names: &[&str], directive: TlsDirective, dane: DanePlan) -> Route {
    Route::Mx {
        hosts: hosts(names),
        port: 25,
        directive,
        dane,
    }
}

fn planned(message: MessageTls, route: Route) -> RoutePlan {
    plan(DOMAIN, message, route).unwrap_or_else(|r| panic!("refused: {}", r.failure))
}

fn refused(message: MessageTls, route: Route) -> Refusal {
    match plan(DOMAIN, message, route) {
        Ok(p) => panic!("planned: {p:?}"),
        Err(r) => r,
    }
}

/// Each hop as `host mode reason` (tried) or `host not used` (passed over).
fn summary(plan: &RoutePlan) -> Vec<String> {
    plan.hops
        .iter()
        .map(|hop| match hop {
            Hop::Try(t) => format!("{} {:?} {}", t.host, t.mode, t.reason),
            Hop::DaneUnusable { host, .. } => format!("{host} not used (dane)"),
            Hop::NotAuthenticated { host, .. } => format!("{host} not used (requiretls)"),
        })
        .collect()
}

#[test]
fn the_smart_host_gets_verified_tls_and_nothing_else_is_consulted() {
    let route = || Route::SmartHost {
        host: "relay.example".into(),
        port: 587,
    };
    let p = planned(ordinary(), route());
    assert_eq!(summary(&p), ["relay.example Strict smart host"]);
    assert!(p.smart_host && !p.implicit_mx);
    assert_eq!(p.port, 587);
    // A REQUIRETLS message may go: the relay is authenticated by its configured name.
    let p = planned(asking(TlsRequest::RequireTls), route());
    assert!(matches!(&p.hops[0], Hop::Try(t) if t.requiretls));
}

#[test]
fn no_policy_is_opportunistic_on_every_host_in_mx_order() {
    let p = planned(
        ordinary(),
        mx(
            &["mx1.bank.test", "mx2.bank.test"],
            TlsDirective::Opportunistic,
            DanePlan::default(),
        ),
    );
    assert_eq!(
        summary(&p),
        [
            "mx1.bank.test Opportunistic no policy",
            "mx2.bank.test Opportunistic no policy"
        ]
    );
    assert!(!p.smart_host && !p.implicit_mx);
}

#[test]
fn a_domain_without_mx_records_is_its_own_implicit_mx() {
    let p = planned(
        ordinary(),
        mx(
            &["bank.test"],
            TlsDirective::Opportunistic,
            DanePlan::default(),
        ),
    );
    assert!(p.implicit_mx);
}

#[test]
fn mta_sts_enforce_keeps_only_listed_hosts_with_verified_tls() {
    let p = planned(
        ordinary(),
        mx(
            &["mx1.bank.test", "mx.elsewhere.test"],
            sts(Mode::Enforce, "*.bank.test"),
            DanePlan::default(),
        ),
    );
    assert_eq!(summary(&p), ["mx1.bank.test Strict mta-sts enforce"]);
}

#[test]
fn mta_sts_enforce_with_no_listed_host_refuses_the_route_and_reports_each_host() {
    let r = refused(
        ordinary(),
        mx(
            &["mx.elsewhere.test", "mx2.elsewhere.test"],
            sts(Mode::Enforce, "*.bank.test"),
            DanePlan::default(),
        ),
    );
    assert_eq!(
        r.failure,
        Failure::NoMxMatchesPolicy {
            domain: DOMAIN.into()
        }
    );
    assert!(
        !r.failure.is_permanent(),
        "it waits for the policy or MX to change"
    );
    assert_eq!(r.policy, "mta-sts enforce");
    assert_eq!(r.what(), "delivery attempt: no MX allowed");
    let reported: Vec<_> = r
        .events
        .iter()
        .map(|e| match e {
            TlsEvent::Session {
                outcome:
                    TlsOutcome::Failure {
                        result_type,
                        mx_host,
                        ..
                    },
                ..
            } => (mx_host.as_str(), *result_type),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reported,
        [
            ("mx.elsewhere.test", ResultType::ValidationFailure),
            ("mx2.elsewhere.test", ResultType::ValidationFailure)
        ]
    );
}

#[test]
fn mta_sts_testing_and_an_unloadable_policy_deliver_opportunistically_to_every_host() {
    let p = planned(
        ordinary(),
        mx(
            &["mx.elsewhere.test"],
            sts(Mode::Testing, "*.bank.test"),
            DanePlan::default(),
        ),
    );
    assert_eq!(
        summary(&p),
        ["mx.elsewhere.test Opportunistic mta-sts testing"]
    );
    let p = planned(
        ordinary(),
        mx(&["mx1.bank.test"], sts_failed(), DanePlan::default()),
    );
    assert_eq!(
        summary(&p),
        ["mx1.bank.test Opportunistic mta-sts unavailable"]
    );
}

#[test]
fn require_tls_demands_verified_tls_on_every_host() {
    let p = planned(
        ordinary(),
        mx(
            &["mx1.bank.test", "mx2.bank.test"],
            TlsDirective::Required,
            DanePlan::default(),
        ),
    );
    assert_eq!(
        summary(&p),
        [
            "mx1.bank.test Strict require_tls",
            "mx2.bank.test Strict require_tls"
        ]
    );
}

#[test]
fn dane_outranks_mta_sts_and_require_tls_host_by_host() {
    // DANE protects mx0, which the MTA-STS policy does not list: it is still used (RFC 8461
    // §2), under DANE; mx1 keeps the policy.
    let p = planned(
        ordinary(),
        mx(
            &["mx0.elsewhere.test", "mx1.bank.test"],
            sts(Mode::Enforce, "*.bank.test"),
            dane(vec![dane_applies("mx0.elsewhere.test", false)]),
        ),
    );
    assert_eq!(
        summary(&p),
        [
            "mx0.elsewhere.test Strict dane",
            "mx1.bank.test Strict mta-sts enforce"
        ]
    );
    assert!(matches!(&p.hops[0], Hop::Try(t) if matches!(t.directive, TlsDirective::Dane { .. })));
    // Over opportunistic delivery and `require_tls` alike, even with only unusable records
    // (encrypt only: TLS required, certificate not checked).
    for directive in [TlsDirective::Opportunistic, TlsDirective::Required] {
        let p = planned(
            ordinary(),
            mx(
                &["mx1.bank.test"],
                directive,
                dane(vec![dane_applies("mx1.bank.test", true)]),
            ),
        );
        assert_eq!(summary(&p), ["mx1.bank.test Strict dane"]);
    }
}

#[test]
fn dnssec_trouble_passes_a_host_over_with_a_tlsa_report_and_a_deferral() {
    let p = planned(
        ordinary(),
        mx(
            &["mx1.bank.test", "mx2.bank.test"],
            TlsDirective::Opportunistic,
            dane(vec![dane_unusable("mx1.bank.test")]),
        ),
    );
    assert_eq!(
        summary(&p),
        [
            "mx1.bank.test not used (dane)",
            "mx2.bank.test Opportunistic no policy"
        ]
    );
    let Hop::DaneUnusable { event, failure, .. } = &p.hops[0] else {
        panic!("{:?}", p.hops[0]);
    };
    assert!(!failure.is_permanent());
    assert!(matches!(
        event,
        TlsEvent::Session {
            directive: TlsDirective::Dane { .. },
            outcome: TlsOutcome::Failure {
                result_type: ResultType::DnssecInvalid,
                ..
            }
        }
    ));
}

#[test]
fn requiretls_goes_only_over_a_route_that_authenticates_the_mx() {
    let req = asking(TlsRequest::RequireTls);
    let p = planned(
        req,
        mx(
            &["mx1.bank.test"],
            sts(Mode::Enforce, "*.bank.test"),
            DanePlan::default(),
        ),
    );
    assert!(matches!(&p.hops[0], Hop::Try(t) if t.requiretls && t.mode == TlsMode::Strict));
    // Neither opportunistic delivery, `require_tls` (an MX name from unauthenticated DNS) nor
    // a `testing` policy authenticates: bounced at once, 5.7.30.
    for directive in [
        TlsDirective::Opportunistic,
        TlsDirective::Required,
        sts(Mode::Testing, "*.bank.test"),
    ] {
        let r = refused(
            req,
            mx(&["mx1.bank.test"], directive.clone(), DanePlan::default()),
        );
        assert!(r.failure.is_permanent(), "{directive:?}: {}", r.failure);
        assert_eq!(r.failure.status().to_string(), "5.7.30");
        assert_eq!(r.what(), "delivery attempt: REQUIRETLS not possible");
    }
    // A policy that could not be fetched may authenticate later: deferred, 4.7.30.
    let r = refused(
        req,
        mx(&["mx1.bank.test"], sts_failed(), DanePlan::default()),
    );
    assert!(!r.failure.is_permanent());
    assert_eq!(r.failure.status().to_string(), "4.7.30");
}

#[test]
fn requiretls_with_dane_uses_only_the_hosts_dane_authenticates() {
    let p = planned(
        asking(TlsRequest::RequireTls),
        mx(
            &["mx1.bank.test", "mx2.bank.test", "mx3.bank.test"],
            TlsDirective::Opportunistic,
            dane(vec![
                dane_applies("mx1.bank.test", true),
                dane_applies("mx2.bank.test", false),
            ]),
        ),
    );
    assert_eq!(
        summary(&p),
        [
            "mx1.bank.test not used (requiretls)",
            "mx2.bank.test Strict dane",
            "mx3.bank.test not used (requiretls)"
        ]
    );
    let Hop::NotAuthenticated { failure, .. } = &p.hops[0] else {
        panic!("{:?}", p.hops[0]);
    };
    assert_eq!(failure.status().to_string(), "5.7.30");
}

#[test]
fn a_tls_report_of_herald_ignores_every_recipient_policy() {
    assert!(!report().needs_sts() && !report().needs_dane());
    // Even an MTA-STS policy listing none of the hosts, and DANE records, are set aside:
    // RFC 8460 §3 wants the report delivered across the failures it reports.
    let p = planned(
        report(),
        mx(
            &["mx.elsewhere.test"],
            sts(Mode::Enforce, "*.bank.test"),
            dane(vec![dane_applies("mx.elsewhere.test", false)]),
        ),
    );
    assert_eq!(
        summary(&p),
        ["mx.elsewhere.test Opportunistic tls-rpt report"]
    );
}

#[test]
fn tls_required_no_sets_aside_the_recipients_policy_but_not_require_tls() {
    let optional = asking(TlsRequest::TlsOptional);
    assert!(optional.needs_sts() && !optional.needs_dane());
    assert!(ordinary().needs_sts() && ordinary().needs_dane());
    let p = planned(
        optional,
        mx(
            &["mx.elsewhere.test"],
            sts(Mode::Enforce, "*.bank.test"),
            dane(vec![dane_unusable("mx.elsewhere.test")]),
        ),
    );
    assert_eq!(
        summary(&p),
        ["mx.elsewhere.test Opportunistic TLS-Required: No"]
    );
    // `[delivery] require_tls` is the administrator's rule, not the recipient's: it stays.
    let p = planned(
        optional,
        mx(
            &["mx1.bank.test"],
            TlsDirective::Required,
            DanePlan::default(),
        ),
    );
    assert_eq!(summary(&p), ["mx1.bank.test Strict require_tls"]);
}
