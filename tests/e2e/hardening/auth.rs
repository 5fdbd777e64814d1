//! Items 1 and 2: the AUTH lockout holds under concurrency, success never resets it, and
//! guesses spread over addresses are limited per user name without locking the app out.

use super::rig;
use crate::support::herald::DEMO_PASSWORD;

/// An argon2id hash of a password nobody in these tests knows: the victim app's.
const VICTIM_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0m7V1yn5Ew6d3eO6l9EeE2BR0ht1sqmZ2m1W1x6oI1A";

fn throttle_config(cfg: &mut toml::Table, max: i64) {
    crate::support::set(cfg, "smtp.auth_max_failures", max);
    crate::support::set(cfg, "smtp.auth_failure_delay", "10ms");
    crate::support::set(cfg, "smtp.auth_block", "1h");
    crate::support::set(cfg, "apps.victim.password_hash", VICTIM_HASH);
    crate::support::set(cfg, "apps.victim.senders", vec!["@victim.test"]);
}

#[tokio::test]
async fn concurrent_wrong_auth_from_one_address_gets_at_most_the_limit_of_verifications() {
    let rig = rig(|cfg| throttle_config(cfg, 5));
    let attacker = crate::support::free_ip();
    // 40 sessions ready for AUTH first, then every guess goes out at once.
    let mut sessions = Vec::new();
    for _ in 0..40 {
        sessions.push(rig.tls_session_from(attacker).await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(sessions.len()));
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let r = c.cmd(&plain_cmd("victim", &format!("guess{i}"))).await;
                let closed = r.code == 421 && c.closed().await;
                (r, closed)
            })
        })
        .collect();
    let (mut refused, mut invalid) = (0, 0);
    for t in tasks {
        let (r, closed) = t.await.expect("session task");
        match r.code {
            535 => invalid += 1,
            421 => {
                assert!(r.text.starts_with("4.7.0"), "{r:?}");
                assert!(closed, "a 421 must close the session");
                refused += 1;
            }
            other => panic!("unexpected reply {other}: {r:?}"),
        }
    }
    assert!(
        (1..=5).contains(&invalid),
        "{invalid} guesses were verified (535); the limit is 5"
    );
    assert_eq!(invalid + refused, 40);
}

#[tokio::test]
async fn a_good_login_between_guesses_does_not_reset_the_count() {
    let rig = rig(|cfg| throttle_config(cfg, 5));
    let attacker = crate::support::free_ip();
    let mut replies = Vec::new();
    // The attacker owns demo's password and guesses victim's: 4 guesses, 1 good login, ...
    'cycles: for _ in 0..3 {
        let mut c = rig.tls_session_from(attacker).await;
        for i in 0..4 {
            let r = c.cmd(&plain_cmd("victim", &format!("guess{i}"))).await;
            replies.push(r.code);
            if r.code == 421 {
                break 'cycles;
            }
        }
        let mut good = rig.tls_session_from(attacker).await;
        let r = good.cmd(&plain_cmd("demo", DEMO_PASSWORD)).await;
        replies.push(r.code);
    }
    assert_eq!(
        replies,
        vec![535, 535, 535, 535, 235, 535, 421],
        "the fifth failure within the window must block the address, logins or not"
    );
    // Blocked for everything now, the good password included.
    let mut c = rig.tls_session_from(attacker).await;
    let r = c.cmd(&plain_cmd("demo", DEMO_PASSWORD)).await;
    assert_eq!(r.code, 421, "{r:?}");
}

#[tokio::test]
async fn guesses_spread_over_addresses_are_limited_per_user_name_but_the_app_keeps_working() {
    let rig = rig(|cfg| {
        throttle_config(cfg, 100);
        crate::support::set(cfg, "smtp.auth_max_user_failures", 3);
    });
    // The real app logs in from its own address.
    let app_ip = crate::support::free_ip();
    let mut app = rig.tls_session_from(app_ip).await;
    app.expect(&plain_cmd("demo", DEMO_PASSWORD), 235).await;
    // Three attackers, one guess each; then an address that failed is refused for the name.
    let attackers: Vec<_> = (0..3).map(|_| crate::support::free_ip()).collect();
    for (i, ip) in attackers.iter().enumerate() {
        let mut c = rig.tls_session_from(*ip).await;
        c.expect(&plain_cmd("demo", &format!("guess{i}")), 535)
            .await;
    }
    let mut c = rig.tls_session_from(attackers[0]).await;
    let r = c.cmd(&plain_cmd("demo", DEMO_PASSWORD)).await;
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text.contains("user name"), "{r:?}");
    super::wait_logged(
        &rig.herald,
        "too many failed AUTH attempts for this user name",
    );
    // A new address of the app that never failed is slowed, never locked out.
    let mut scaled = rig.tls_session_from(crate::support::free_ip()).await;
    scaled.expect(&plain_cmd("demo", DEMO_PASSWORD), 235).await;
    // The app's own address still logs in.
    let mut again = rig.tls_session_from(app_ip).await;
    again.expect(&plain_cmd("demo", DEMO_PASSWORD), 235).await;
}

fn plain_cmd(user: &str, pass: &str) -> String {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    format!("AUTH PLAIN {token}")
}

#[tokio::test]
async fn an_auth_block_shorter_than_the_failure_window_ends_after_auth_block() {
    let rig = rig(|cfg| {
        throttle_config(cfg, 2);
        crate::support::set(cfg, "smtp.auth_failure_window", "10m");
        crate::support::set(cfg, "smtp.auth_block", "1s");
    });
    let ip = crate::support::free_ip();
    for i in 0..2 {
        let mut c = rig.tls_session_from(ip).await;
        c.expect(&plain_cmd("demo", &format!("guess{i}")), 535)
            .await;
    }
    let mut c = rig.tls_session_from(ip).await;
    let r = c.cmd(&plain_cmd("demo", DEMO_PASSWORD)).await;
    assert_eq!(r.code, 421, "blocked: {r:?}");
    // The block ends after auth_block (1 s), not after the 10-minute window.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut c = rig.tls_session_from(ip).await;
        let r = c.cmd(&plain_cmd("demo", DEMO_PASSWORD)).await;
        if r.code == 235 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still refused long after auth_block: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
