//! Delivery under a policy: enforce delivers only over verified TLS to a matching MX, and every
//! refusal leaves the message queued with the failure counted for TLS-RPT; testing mode delivers
//! and reports; a policy that cannot be fetched is no policy, and is reported.

use mail_auth::report::tlsrpt::ResultType;

use super::world::{DOMAIN, MxCert, Relay, WAIT, World};
use crate::support::https::Response;
use crate::support::smtp_sink::same_port_listeners;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_with_a_valid_certificate_delivers_over_tls() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    let mx = w.start_mx("mx1.bank.test", MxCert::Valid);
    let relay = Relay::start(w.config(mx.addr().port())).await;
    relay.send("valid").await;
    let got = tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    assert!(got[0].tls.is_some(), "delivered in clear: {:?}", got[0]);
    assert_eq!(got[0].sni.as_deref(), Some("mx1.bank.test"));
    let counts = relay.wait_for_counts(|c| c.success >= 1).await;
    assert_eq!(counts.failure_total(), 0);
    assert_eq!(counts.mx_patterns, vec![format!("*.{DOMAIN}")]);
}

/// Enforce + `cert` → not delivered, still queued, the failure counted as `expected`.
async fn enforce_refuses(cert: MxCert, expected: ResultType) {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    let mx = w.start_mx("mx1.bank.test", cert);
    let relay = Relay::start(w.config(mx.addr().port())).await;
    let id = relay.send("refused").await;
    let counts = relay.wait_for_counts(|c| c.failure_total() >= 1).await;
    let failure = &counts.failures[0];
    assert_eq!(failure.result_type, expected, "{counts:#?}");
    assert_eq!(failure.mx_host.as_deref(), Some("mx1.bank.test"));
    assert_eq!(failure.ip, Some(mx.addr().ip()));
    assert_eq!(counts.success, 0);
    relay.assert_still_queued(&id).await;
    assert!(
        mx.messages().is_empty(),
        "delivered despite the policy: {:?}",
        mx.messages()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_a_wrong_name_certificate() {
    enforce_refuses(MxCert::WrongName, ResultType::CertificateHostMismatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_an_expired_certificate() {
    enforce_refuses(MxCert::Expired, ResultType::CertificateExpired).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_a_self_signed_certificate() {
    enforce_refuses(MxCert::SelfSigned, ResultType::CertificateNotTrusted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_a_server_without_starttls() {
    enforce_refuses(MxCert::NoStarttls, ResultType::StartTlsNotSupported).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_never_tries_an_mx_outside_the_policy() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    // `*.bank.test` matches exactly one label: neither `a.b.bank.test` nor `bank.test` itself,
    // although both present valid certificates for their names.
    let (_port, mut listeners) = same_port_listeners(2);
    let deep = w.start_mx_on(listeners.remove(0), "a.b.bank.test", MxCert::Valid);
    let apex = w.start_mx_on(listeners.remove(0), DOMAIN, MxCert::Valid);
    let relay = Relay::start(w.config(deep.addr().port())).await;
    let id = relay.send("wrong mx").await;
    let counts = relay.wait_for_counts(|c| c.failure_total() >= 2).await;
    let mut refused: Vec<_> = counts
        .failures
        .iter()
        .map(|f| (f.result_type, f.mx_host.clone().unwrap_or_default()))
        .collect();
    refused.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        refused,
        vec![
            (ResultType::ValidationFailure, "a.b.bank.test".to_string()),
            (ResultType::ValidationFailure, DOMAIN.to_string()),
        ],
        "{counts:#?}"
    );
    relay.assert_still_queued(&id).await;
    assert_eq!(deep.connections(), 0, "herald connected to a.b.bank.test");
    assert_eq!(apex.connections(), 0, "herald connected to bank.test");
    let msg = relay.spool.load(&id).await.expect("queued");
    let reply = msg.state.recipients[0]
        .last_reply
        .clone()
        .unwrap_or_default();
    assert!(reply.contains("MTA-STS"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testing_mode_delivers_despite_a_bad_certificate_and_reports_it() {
    let w = World::new();
    w.publish_policy(
        "1",
        Response::mta_sts_policy("testing", &["*.bank.test"], 86400),
    );
    let mx = w.start_mx("mx1.bank.test", MxCert::Expired);
    let relay = Relay::start(w.config(mx.addr().port())).await;
    relay.send("testing").await;
    let got = tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    assert!(
        got[0].tls.is_some(),
        "opportunistic TLS expected: {:?}",
        got[0]
    );
    let counts = relay.wait_for_counts(|c| c.failure_total() >= 1).await;
    assert_eq!(
        counts.failures[0].result_type,
        ResultType::CertificateExpired
    );
    assert_eq!(counts.policy_string[1], "mode: testing");
}

/// The policy host answers `policy`: no policy applies (a bad MX certificate does not stop
/// delivery) and the fetch failure is counted as `expected`.
async fn unusable_policy(policy: Response, expected: ResultType) {
    let w = World::new();
    w.publish_policy("1", policy);
    let mx = w.start_mx("mx1.bank.test", MxCert::SelfSigned);
    let relay = Relay::start(w.config(mx.addr().port())).await;
    relay.send("no usable policy").await;
    tokio::task::block_in_place(|| mx.wait_for_messages(1, WAIT));
    let counts = relay.wait_for_counts(|c| c.failure_total() >= 1).await;
    assert_eq!(counts.failures[0].result_type, expected, "{counts:#?}");
    assert_eq!(counts.success, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_policy_is_no_policy() {
    unusable_policy(
        Response::redirect("https://elsewhere.test/policy.txt"),
        ResultType::StsPolicyFetchError,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_policy_is_a_fetch_error() {
    let mut body =
        "version: STSv1\r\nmode: enforce\r\nmx: *.bank.test\r\nmax_age: 86400\r\n".to_string();
    while body.len() <= 70 * 1024 {
        body.push_str("comment: padding padding padding padding padding padding\r\n");
    }
    unusable_policy(Response::text(&body), ResultType::StsPolicyFetchError).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_policy_is_invalid() {
    unusable_policy(
        Response::text("version: STSv1\r\nmode: strict\r\nmx: *.bank.test\r\nmax_age: 86400\r\n"),
        ResultType::StsPolicyInvalid,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_not_served_as_text_plain_is_invalid() {
    let mut html = World::enforce();
    html.content_type = "text/html".into();
    unusable_policy(html, ResultType::StsPolicyInvalid).await;
}
