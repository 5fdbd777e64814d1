//! What the submitter asked of TLS (RFC 8689), applied at delivery. The route plan
//! ([`super::plan`]) applies [`directive`], [`check_route`] and [`check_host`] before any
//! connection; an attempt checks each open session ([`check_session`]) and gives the flag in
//! `MAIL FROM` ([`mail_params`]); the host loop keeps the failure that matters
//! ([`next_host_failure`]).
//!
//! A `REQUIRETLS` message (§4.2.1) goes only to a next hop that was authenticated: an MX host
//! allowed by an MTA-STS `enforce` policy (or DANE) over TLS whose certificate verified, or the
//! configured smart host over verified TLS. That hop must advertise REQUIRETLS, and is handed
//! the flag in `MAIL FROM`. Anything else fails with `5.7.30`. A host that does not advertise
//! REQUIRETLS sends delivery on to the next MX host (§4.2.1: try the other MX hosts first);
//! the message bounces only when no host qualifies. A host that could not be reached at all is
//! an ordinary temporary failure: it may qualify on the next attempt.
//!
//! `TLS-Required: No` (§4.2.2), honoured at submission only for apps allowed to send it, sets
//! aside the recipient's MTA-STS or DANE policy: STARTTLS is still used when offered, but a
//! certificate or policy failure no longer stops delivery.

use super::client::Session;
use super::outcome::Failure;
use crate::spool::TlsRequest;
use crate::tls_policy::{Mode, TlsDirective};

/// The directive a message is delivered under. `TLS-Required: No` turns a recipient policy that
/// demands verified TLS (MTA-STS `enforce`, DANE) into opportunistic TLS; herald's own
/// `[delivery] require_tls` stays, since that is the administrator's rule, not the recipient's.
pub(crate) fn directive(request: TlsRequest, recipient: TlsDirective) -> TlsDirective {
    let recipients_rule =
        recipient.requires_verified_tls() && !matches!(recipient, TlsDirective::Required);
    if request == TlsRequest::TlsOptional && recipients_rule {
        TlsDirective::Opportunistic
    } else {
        recipient
    }
}

/// Before any connection to MX hosts: whether the route can carry a REQUIRETLS message at all.
/// An MX host is an authenticated next hop only when the directive authenticates it
/// ([`TlsDirective::authenticates_mx`]) or DANE does for at least one host (`dane_may`, checked
/// host by host with [`check_host`]). A name from DNS that is not authenticated (no policy, a
/// `testing` policy, `[delivery] require_tls` alone) is not enough (§4.2.1). (The smart host,
/// configured by name and verified against it, is authenticated: the plan does not ask.)
pub(crate) fn check_route(
    request: TlsRequest,
    directive: &TlsDirective,
    dane_may: bool,
    domain: &str,
) -> Result<(), Failure> {
    if request != TlsRequest::RequireTls || dane_may || directive.authenticates_mx() {
        return Ok(());
    }
    let (detail, permanent) = match directive {
        TlsDirective::StsFailed { detail, .. } => (
            format!(
                "the MTA-STS policy of {domain} could not be used ({detail}), so its MX hosts \
                 cannot be authenticated yet; will retry"
            ),
            false,
        ),
        TlsDirective::Required => (
            format!(
                "{domain} has no MTA-STS policy in enforce mode: [delivery] require_tls checks \
                 the MX certificate against a name from DNS that is not authenticated, which \
                 REQUIRETLS does not accept"
            ),
            true,
        ),
        TlsDirective::Sts { policy, .. } if policy.mode == Mode::Testing => (
            format!(
                "the MTA-STS policy of {domain} is in testing mode, which does not \
                 authenticate its MX hosts"
            ),
            true,
        ),
        _ => (
            format!(
                "{domain} has no MTA-STS policy in enforce mode (nor DANE), so its MX hosts \
                 cannot be authenticated"
            ),
            true,
        ),
    };
    Err(Failure::RequireTls { detail, permanent })
}

/// Before connecting to one MX host: a REQUIRETLS message goes only to a host its directive
/// (the domain's, or DANE's for this host) authenticates. A host that is not is skipped, as one
/// that does not advertise REQUIRETLS is (§4.2.1: the other MX hosts are tried first).
pub(crate) fn check_host(
    request: TlsRequest,
    directive: &TlsDirective,
    host: &str,
) -> Result<(), Failure> {
    if request != TlsRequest::RequireTls || directive.authenticates_mx() {
        return Ok(());
    }
    Err(Failure::RequireTls {
        detail: format!(
            "{host} is not authenticated: no usable DANE records and no MTA-STS policy in \
             enforce mode"
        ),
        permanent: true,
    })
}

/// On an open session (new or pooled), before the transaction of a REQUIRETLS message: it
/// needs TLS whose certificate verified, and REQUIRETLS in the server's EHLO reply.
pub(crate) fn check_session(session: &Session) -> Result<(), Failure> {
    let host = &session.host;
    let detail = match &session.tls {
        None => format!("{host} is not using TLS"),
        Some(t) if !t.verified => format!(
            "the certificate of {host} was not verified ({})",
            t.problem.as_deref().unwrap_or("no reason given")
        ),
        Some(_) if !session.offers_requiretls() => {
            format!("{host} does not advertise REQUIRETLS")
        }
        Some(_) => return Ok(()),
    };
    Err(Failure::RequireTls {
        detail,
        permanent: true,
    })
}

/// Which failure a job keeps as hosts fail one after another: a host that fell short of
/// REQUIRETLS does not hide an earlier host that failed for a passing reason (it may qualify
/// next time, so the message waits rather than bounces).
pub(crate) fn next_host_failure(previous: Failure, new: Failure) -> Failure {
    let passing = !previous.is_permanent()
        && !matches!(
            previous,
            Failure::NoHostReached | Failure::RequireTls { .. }
        );
    if passing && matches!(new, Failure::RequireTls { .. }) {
        previous
    } else {
        new
    }
}

/// The `MAIL FROM` parameters for a job: the envelope's (`submitted`), with `REQUIRETLS`
/// exactly when the message carries it (the session sends it only to a server that advertises
/// it, which [`check_session`] has made sure of).
pub(crate) fn mail_params(submitted: &[String], requiretls: bool) -> Vec<String> {
    let mut params: Vec<String> = submitted
        .iter()
        .filter(|p| !p.eq_ignore_ascii_case("REQUIRETLS"))
        .cloned()
        .collect();
    if requiretls {
        params.push("REQUIRETLS".into());
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(mode: Mode) -> TlsDirective {
        TlsDirective::test_sts(mode)
    }

    #[test]
    fn only_an_authenticated_route_carries_requiretls() {
        let req = TlsRequest::RequireTls;
        assert!(check_route(req, &sts(Mode::Enforce), false, "bank.test").is_ok());
        for d in [
            TlsDirective::Opportunistic,
            TlsDirective::Required,
            sts(Mode::Testing),
        ] {
            // DANE that may authenticate a host lets the route through, host by host.
            assert!(check_route(req, &d, true, "bank.test").is_ok());
            assert!(check_host(req, &d, "mx1.bank.test").is_err());
            let f = check_route(req, &d, false, "bank.test").expect_err("refused");
            assert!(f.is_permanent(), "{f}");
            assert_eq!(f.status().to_string(), "5.7.30");
            assert!(
                f.to_string()
                    .starts_with("550 5.7.30 REQUIRETLS support required: ")
            );
        }
        let failed = TlsDirective::StsFailed {
            domain: "bank.test".into(),
            result_type: mail_auth::report::tlsrpt::ResultType::StsPolicyFetchError,
            detail: "timed out".into(),
        };
        let f = check_route(req, &failed, false, "bank.test").expect_err("deferred");
        assert!(!f.is_permanent());
        assert_eq!(f.status().to_string(), "4.7.30");
        assert!(check_route(TlsRequest::Policy, &failed, false, "bank.test").is_ok());
    }

    #[test]
    fn tls_optional_sets_aside_only_the_recipients_policy() {
        let optional = TlsRequest::TlsOptional;
        assert!(matches!(
            directive(optional, sts(Mode::Enforce)),
            TlsDirective::Opportunistic
        ));
        assert!(matches!(
            directive(optional, TlsDirective::Required),
            TlsDirective::Required
        ));
        assert!(matches!(
            directive(TlsRequest::RequireTls, sts(Mode::Enforce)),
            TlsDirective::Sts { .. }
        ));
        assert!(matches!(
            directive(TlsRequest::Policy, sts(Mode::Enforce)),
            TlsDirective::Sts { .. }
        ));
    }

    #[test]
    fn the_flag_is_given_exactly_when_the_message_carries_it() {
        let submitted = ["BODY=8BITMIME".to_string(), "requiretls".to_string()];
        assert_eq!(mail_params(&submitted, false), ["BODY=8BITMIME"]);
        assert_eq!(
            mail_params(&submitted, true),
            ["BODY=8BITMIME", "REQUIRETLS"]
        );
    }

    #[test]
    fn a_host_that_may_qualify_later_outranks_one_that_does_not() {
        let short = || Failure::RequireTls {
            detail: "mx2 does not advertise REQUIRETLS".into(),
            permanent: true,
        };
        let down = || Failure::Connect {
            detail: "refused".into(),
        };
        assert_eq!(next_host_failure(down(), short()), down());
        assert_eq!(next_host_failure(short(), down()), down());
        assert_eq!(next_host_failure(Failure::NoHostReached, short()), short());
        assert_eq!(next_host_failure(short(), short()), short());
    }
}
