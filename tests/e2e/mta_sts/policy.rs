//! The policy lifecycle (RFC 8461 §5.1) through herald's resolver and `herald sts show`: the
//! disk cache outlives a restart and an outage of the policy host, a changed TXT id fetches
//! again, `max_age` bounds the cache, `none` replaces an older policy, `require_tls` applies
//! where no policy does. A new resolver on the same cache directory is a restarted herald (and
//! starts with an empty DNS cache, so DNS changes are seen at once).

use std::process::Command;

use herald::mta_sts::{Source, StsResolver};
use herald::tls_policy::{Mode, TlsDirective};

use super::world::{DOMAIN, POLICY_PATH, World};
use crate::support::herald::herald_bin;
use crate::support::https::Response;

fn resolver(w: &World) -> StsResolver {
    StsResolver::new(&w.config(25)).expect("resolver")
}

fn mode(d: &TlsDirective) -> Option<Mode> {
    match d {
        TlsDirective::Sts { policy, .. } => Some(policy.mode),
        _ => None,
    }
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_an_outage_of_the_policy_host() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    let first = resolver(&w).resolve(DOMAIN).await;
    assert!(matches!(first.source, Source::Fetched), "{first:?}");
    let request = &w.https().requests()[0];
    assert_eq!(request.sni.as_deref(), Some("mta-sts.bank.test"));
    assert_eq!(request.path, POLICY_PATH);

    // Restart while the policy host is down and a new id is announced: the cached, unexpired
    // policy keeps being enforced.
    w.https().set_down(true);
    w.dns
        .set_txt(&format!("_mta-sts.{DOMAIN}"), "v=STSv1; id=2");
    let restarted = resolver(&w);
    let r = restarted.resolve(DOMAIN).await;
    assert!(
        matches!(r.source, Source::CacheAfterFailedFetch(_)),
        "{r:?}"
    );
    let d = restarted.directive_from(&r);
    assert!(d.requires_verified_tls(), "{d:?}");
    assert_eq!(d.label(), "mta-sts enforce");

    // The TXT record disappears: still the cached policy.
    w.dns.remove(&format!("_mta-sts.{DOMAIN}"));
    let d = resolver(&w).directive_for(DOMAIN).await;
    assert_eq!(mode(&d), Some(Mode::Enforce));
    assert_eq!(w.https().hits(POLICY_PATH), 1);
}

#[tokio::test]
async fn a_changed_txt_id_fetches_the_policy_again() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    assert_eq!(
        mode(&resolver(&w).directive_for(DOMAIN).await),
        Some(Mode::Enforce)
    );
    // Same id: the cached policy, no fetch.
    let same = resolver(&w).resolve(DOMAIN).await;
    assert!(matches!(same.source, Source::Cache), "{same:?}");
    assert_eq!(w.https().hits(POLICY_PATH), 1);

    w.publish_policy(
        "2",
        Response::mta_sts_policy("testing", &["*.bank.test"], 86400),
    );
    let r = resolver(&w).resolve(DOMAIN).await;
    assert!(matches!(r.source, Source::Fetched), "{r:?}");
    let entry = r.entry.expect("policy");
    assert_eq!(
        (entry.policy.id.as_str(), entry.policy.mode),
        ("2", Mode::Testing)
    );
    assert_eq!(w.https().hits(POLICY_PATH), 2);
}

#[tokio::test]
async fn max_age_bounds_the_cache() {
    let w = World::new();
    w.publish_policy(
        "1",
        Response::mta_sts_policy("enforce", &["*.bank.test"], 600),
    );
    let r = resolver(&w).resolve(DOMAIN).await;
    let entry = r.entry.expect("policy");
    assert_eq!(entry.expires_at, entry.fetched_at + 600);

    // max_age 0: expired as soon as fetched, so every use fetches again; once the host is
    // down, nothing applies any more.
    w.publish_policy(
        "2",
        Response::mta_sts_policy("enforce", &["*.bank.test"], 0),
    );
    let r = resolver(&w);
    assert!(matches!(r.resolve(DOMAIN).await.source, Source::Fetched));
    assert!(matches!(r.resolve(DOMAIN).await.source, Source::Fetched));
    assert_eq!(w.https().hits(POLICY_PATH), 3);
    w.https().set_down(true);
    let gone = resolver(&w).resolve(DOMAIN).await;
    assert!(matches!(gone.source, Source::Failed(_)), "{gone:?}");
}

#[tokio::test]
async fn a_none_policy_replaces_an_older_one() {
    let w = World::new();
    w.publish_policy("1", World::enforce());
    assert_eq!(
        mode(&resolver(&w).directive_for(DOMAIN).await),
        Some(Mode::Enforce)
    );
    w.publish_policy("2", Response::mta_sts_policy("none", &[], 86400));
    let d = resolver(&w).directive_for(DOMAIN).await;
    assert!(matches!(d, TlsDirective::Opportunistic), "{d:?}");
    // And it is what the cache now holds.
    w.https().set_down(true);
    let cached = resolver(&w).cached(DOMAIN).expect("cached");
    assert_eq!(cached.policy.mode, Mode::None);
}

#[tokio::test]
async fn several_records_or_none_mean_no_policy_and_require_tls_still_applies() {
    let w = World::new();
    w.https().set_response(POLICY_PATH, World::enforce());
    let name = format!("_mta-sts.{DOMAIN}");
    w.dns.add_txt(&name, "v=STSv1; id=1");
    w.dns.add_txt(&name, "v=STSv1; id=2");
    let d = resolver(&w).directive_for(DOMAIN).await;
    assert!(matches!(d, TlsDirective::Opportunistic), "{d:?}");
    assert_eq!(w.https().hits(POLICY_PATH), 0);

    let mut cfg = w.config(25);
    cfg.delivery.require_tls_domains = vec![DOMAIN.to_string()];
    let strict = StsResolver::new(&cfg).expect("resolver");
    assert!(matches!(
        strict.directive_for(DOMAIN).await,
        TlsDirective::Required
    ));
    // An enforce policy wins over require_tls.
    w.dns.set_txt(&name, "v=STSv1; id=3");
    let d = StsResolver::new(&cfg)
        .expect("resolver")
        .directive_for(DOMAIN)
        .await;
    assert_eq!(d.label(), "mta-sts enforce");
}

#[test]
fn sts_show_prints_the_policy_online_and_from_the_cache() {
    let w = World::new();
    w.publish_policy(
        "20261123",
        Response::mta_sts_policy("enforce", &["mx1.bank.test", "*.backup.bank.test"], 86400),
    );
    let config = w.config_file(25);
    let run = |args: &[&str]| {
        let out = Command::new(herald_bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .expect("run herald");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, online, err) = run(&["sts", "show", DOMAIN]);
    assert_eq!(code, Some(0), "{online}{err}");
    for line in [
        "domain:   bank.test",
        "source:   fetched now from https://mta-sts.bank.test:",
        "id:       20261123",
        "mode:     enforce",
        "mx:       mx1.bank.test",
        "          *.backup.bank.test",
        "max_age:  86400 (1day)",
        "delivery: mta-sts enforce",
    ] {
        assert!(online.contains(line), "{line:?} missing from:\n{online}");
    }

    // Offline (`--cached`: no DNS, no HTTPS) while the policy host is down.
    w.https().set_down(true);
    let (code, cached, err) = run(&["sts", "show", "--cached", DOMAIN]);
    assert_eq!(code, Some(0), "{cached}{err}");
    assert!(cached.contains("source:   cached"), "{cached}");
    assert!(cached.contains("id:       20261123"), "{cached}");
    assert!(cached.contains("expires:  "), "{cached}");
    w.https().set_down(false);

    // A changed id whose policy cannot be fetched: the cached policy, and why.
    w.dns
        .set_txt(&format!("_mta-sts.{DOMAIN}"), "v=STSv1; id=changed");
    w.https().set_response(POLICY_PATH, Response::status(404));
    let (code, failed, _) = run(&["sts", "show", DOMAIN]);
    assert_eq!(code, Some(0), "the cached policy still applies:\n{failed}");
    assert!(
        failed.contains("fetching the changed policy failed (sts-policy-fetch-error)"),
        "{failed}"
    );

    // No policy is not an error.
    let (code, none, _) = run(&["sts", "show", "other.test"]);
    assert_eq!(code, Some(0), "{none}");
    assert!(none.contains("source:   no policy"), "{none}");

    // A policy host whose certificate does not match its name: sts-webpki-invalid, status 1.
    w.dns.set_txt("_mta-sts.webpki.test", "v=STSv1; id=1");
    w.dns.add_a("mta-sts.webpki.test", w.https_ip);
    let (code, bad, _) = run(&["sts", "show", "webpki.test"]);
    assert_eq!(code, Some(1), "{bad}");
    assert!(bad.contains("not fetchable (sts-webpki-invalid)"), "{bad}");
}

#[tokio::test]
async fn a_policy_host_that_never_answers_is_a_fetch_error_after_the_timeout() {
    let w = World::new();
    // A listener nobody accepts on: the TCP handshake completes, TLS never does.
    let silent = (0..1000)
        .find_map(|_| std::net::TcpListener::bind((crate::support::free_ip(), w.https_port)).ok())
        .expect("a loopback IP with the policy port free");
    let std::net::IpAddr::V4(ip) = silent.local_addr().expect("addr").ip() else {
        panic!("loopback v4 expected");
    };
    w.dns.set_txt("_mta-sts.slow.test", "v=STSv1; id=1");
    w.dns.add_a("mta-sts.slow.test", ip);
    let mut cfg = w.config(25);
    cfg.mta_sts.fetch_timeout = std::time::Duration::from_secs(1);
    let r = StsResolver::new(&cfg)
        .expect("resolver")
        .resolve("slow.test")
        .await;
    let Source::Failed(e) = r.source else {
        panic!("expected a fetch failure: {r:?}");
    };
    assert_eq!(
        e.result_type,
        mail_auth::report::tlsrpt::ResultType::StsPolicyFetchError
    );
    assert!(e.detail.contains("timed out"), "{}", e.detail);
}
