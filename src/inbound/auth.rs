//! App authentication: SASL PLAIN and LOGIN decoding and argon2id verification off the
//! reactor. Throttling of failed attempts lives in `throttle`.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::config::AppConfig;

/// A valid argon2id hash of a random password nobody knows: unknown user names are verified
/// against it so that their failures take as long as a wrong password.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0m7V1yn5Ew6d3eO6l9EeE2BR0ht1sqmZ2m1W1x6oI1A";

/// Decodes a base64 SASL response; `None` when it is not base64.
pub(crate) fn decode_b64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim().as_bytes()).ok()
}

/// Splits an AUTH PLAIN response (`authzid NUL authcid NUL password`) into user and password.
/// An authorization identity, if given, must equal the user.
pub(crate) fn parse_plain(decoded: &[u8]) -> Option<(String, String)> {
    let mut parts = decoded.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// At most this many argon2 verifications run at once (one per core): each takes ~19 MiB and
/// a burst of logins (or an attacker) must not turn into a burst of memory and threads.
static VERIFY_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::sync::Semaphore::new(n)
});

/// Verifies `password` for app `user`; runs argon2 on the blocking pool, a few at a time.
pub(crate) async fn verify(
    apps: Arc<HashMap<String, AppConfig>>,
    user: String,
    password: String,
) -> bool {
    let Ok(_slot) = VERIFY_SLOTS.acquire().await else {
        return false;
    };
    let res = tokio::task::spawn_blocking(move || {
        let (hash, known) = match apps.get(&user) {
            Some(app) => (app.password_hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await;
    res.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        assert_eq!(
            parse_plain(b"\0demo\0pw"),
            Some(("demo".into(), "pw".into()))
        );
        assert_eq!(
            parse_plain(b"demo\0demo\0pw"),
            Some(("demo".into(), "pw".into()))
        );
        assert_eq!(parse_plain(b"other\0demo\0pw"), None);
        assert_eq!(parse_plain(b"demo\0pw"), None);
        assert_eq!(decode_b64("AGRlbW8AcHc="), Some(b"\0demo\0pw".to_vec()));
        assert_eq!(decode_b64("not base64!"), None);
    }

    #[tokio::test]
    async fn verify_checks_the_hash_and_unknown_users_fail() {
        let mut apps = HashMap::new();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$zA5vYMcCkDhLQVFEzC4Qqw$vxgT1HYpAVKwOLDPh8nIyq2pdL3OYKSnQWp6v9egT/I";
        apps.insert(
            "demo".to_string(),
            AppConfig {
                password_hash: hash.into(),
                senders: vec!["@example.test".into()],
                max_message_size: None,
                rate_limit: 0,
                allow_tls_optional: false,
                unsubscribe: Default::default(),
                bulk: false,
                webhook_url: None,
                webhook_secret: None,
                return_path_domain: None,
                forward_bounces: true,
                suppression: true,
                suppression_scope: Default::default(),
            },
        );
        let apps = Arc::new(apps);
        assert!(verify(apps.clone(), "demo".into(), "herald-demo-password".into()).await);
        assert!(!verify(apps.clone(), "demo".into(), "wrong".into()).await);
        assert!(!verify(apps, "nobody".into(), "herald-demo-password".into()).await);
    }
}
