//! Delivery: a REQUIRETLS message reaches an MX authenticated by MTA-STS `enforce` that
//! advertises REQUIRETLS, and the flag goes with it; it bounces `5.7.30` (the notice carrying
//! none of the message) where the MX does not advertise it or TLS would be only opportunistic;
//! another MX that qualifies is tried first; a smart host with verified TLS carries it; and
//! `TLS-Required: No` from an allowed app gets through a policy that would refuse the MX.

use super::rig::{Cert, DOMAIN, Rig, SECRET, WAIT, login, message, queue_id, submit};
use crate::support::ca::Validity;
use crate::support::herald::Herald;
use crate::support::smtp_sink::{ReceivedMessage, SinkOptions, SmtpSink};

/// Submits one message as `app` with MAIL parameters `params`; returns its queue id.
fn send(rig: &Rig, h: &Herald, app: &str, params: &str, subject: &str, extra: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = login(h, rig.client_tls(), app).await;
        let to = format!("a@{DOMAIN}");
        let reply = submit(&mut c, params, &to, &message(&to, subject, extra)).await;
        c.expect("QUIT", 221).await;
        queue_id(&reply)
    })
}

/// Waits for the bounce of a REQUIRETLS message at the sender's MX and checks what it says
/// and what it must not carry.
fn assert_requiretls_bounce(sender_mx: &SmtpSink, subject: &str, reason: &str) -> String {
    let got = sender_mx.wait_for_messages(1, WAIT);
    let dsn: &ReceivedMessage = &got[0];
    let text = dsn.text();
    assert_eq!(dsn.mail_from, "", "a bounce comes from <>");
    assert_eq!(dsn.rcpts, vec!["app@example.test"]);
    assert!(text.contains("Status: 5.7.30\r\n"), "{text}");
    assert!(
        text.contains("REQUIRETLS support required") && text.contains(reason),
        "{text}"
    );
    assert!(
        text.contains(&format!("Message-ID: <{subject}@example.test>")),
        "the sender can tell which message: {text}"
    );
    for secret in [SECRET, "Subject: rt-", "Payroll"] {
        assert!(!text.contains(secret), "{secret:?} returned: {text}");
    }
    assert!(
        !dsn.mail_params.iter().any(|p| p == "REQUIRETLS"),
        "a redacted bounce goes without REQUIRETLS: {:?}",
        dsn.mail_params
    );
    text
}

#[test]
fn a_requiretls_message_reaches_an_authenticated_mx_that_advertises_it() {
    let mut rig = Rig::new(2);
    rig.policy("enforce");
    let mx = rig.mx("mx1.bank.test", 10, Cert::Valid, true);
    let sender_mx = rig.sender_mx();
    let h = rig.start(rig.config());
    send(&rig, &h, "demo", " REQUIRETLS", "rt-ok", "");
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some(), "{:?}", got[0]);
    assert_eq!(got[0].sni.as_deref(), Some("mx1.bank.test"));
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "the flag is passed on: {:?}",
        got[0].mail_params
    );
    assert!(got[0].text().contains(SECRET));
    assert!(sender_mx.messages().is_empty(), "no bounce");
}

#[test]
fn without_requiretls_at_the_mx_it_bounces_5_7_30_without_the_message() {
    let mut rig = Rig::new(2);
    rig.policy("enforce");
    let mx = rig.mx("mx1.bank.test", 10, Cert::Valid, false);
    let sender_mx = rig.sender_mx();
    let h = rig.start(rig.config());
    send(&rig, &h, "demo", " REQUIRETLS", "rt-noadv", "");
    assert_requiretls_bounce(
        &sender_mx,
        "rt-noadv",
        "mx1.bank.test does not advertise REQUIRETLS",
    );
    assert!(mx.connections() >= 1, "the MX was asked");
    assert!(mx.messages().is_empty() && mx.rejected().is_empty());
}

#[test]
fn over_opportunistic_tls_it_bounces_5_7_30_without_connecting() {
    let mut rig = Rig::new(2);
    // No MTA-STS policy: the MX name comes from DNS nobody authenticated, whatever its
    // certificate and extensions.
    let mx = rig.mx("mx1.bank.test", 10, Cert::Valid, true);
    let sender_mx = rig.sender_mx();
    let h = rig.start(rig.config());
    send(&rig, &h, "demo", " REQUIRETLS", "rt-opp", "");
    assert_requiretls_bounce(&sender_mx, "rt-opp", "no MTA-STS policy in enforce mode");
    assert_eq!(
        mx.connections(),
        0,
        "never connected to an unauthenticated MX"
    );
}

#[test]
fn the_next_mx_that_advertises_requiretls_is_tried_before_bouncing() {
    let mut rig = Rig::new(3);
    rig.policy("enforce");
    let first = rig.mx("mx1.bank.test", 10, Cert::Valid, false);
    let second = rig.mx("mx2.bank.test", 20, Cert::Valid, true);
    let sender_mx = rig.sender_mx();
    let h = rig.start(rig.config());
    send(&rig, &h, "demo", " REQUIRETLS", "rt-next", "");
    let got = second.wait_for_messages(1, WAIT);
    assert!(got[0].mail_params.iter().any(|p| p == "REQUIRETLS"));
    assert!(first.connections() >= 1, "the preferred MX was tried first");
    assert!(first.messages().is_empty());
    assert!(sender_mx.messages().is_empty(), "no bounce");
}

#[test]
fn a_smart_host_with_verified_tls_that_advertises_requiretls_carries_it() {
    let mut rig = Rig::new(1);
    let relay = rig.host(
        "relay.example.net",
        SinkOptions {
            tls: Some(
                rig.ca
                    .server_config(&["relay.example.net"], Validity::Current),
            ),
            requiretls: true,
            ..SinkOptions::default()
        },
    );
    let mut cfg = rig.config();
    crate::support::set(
        &mut cfg,
        "delivery.relay_host",
        format!("relay.example.net:{}", rig.port),
    );
    let h = rig.start(cfg);
    send(&rig, &h, "demo", " REQUIRETLS", "rt-relay", "");
    let got = relay.wait_for_messages(1, WAIT);
    assert_eq!(got[0].sni.as_deref(), Some("relay.example.net"));
    assert!(
        got[0].mail_params.iter().any(|p| p == "REQUIRETLS"),
        "{:?}",
        got[0].mail_params
    );
}

#[test]
fn tls_required_no_from_an_allowed_app_gets_through_a_policy_that_refuses_the_mx() {
    let mut rig = Rig::new(2);
    rig.policy("enforce");
    // Expired: MTA-STS enforce would keep the message waiting (see the mta_sts tests).
    let mx = rig.mx("mx1.bank.test", 10, Cert::Expired, false);
    let h = rig.start(rig.config());
    send(&rig, &h, "lax", "", "rt-optional", "TLS-Required: No\r\n");
    let got = mx.wait_for_messages(1, WAIT);
    assert!(got[0].tls.is_some(), "still encrypted: {:?}", got[0]);
    assert!(got[0].text().contains("TLS-Required: No"));
}
