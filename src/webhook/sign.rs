//! Standard Webhooks signatures: `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//! where the key is the base64 after `whsec_` in the app's secret. Receivers verify with any
//! Standard Webhooks library.

use aws_lc_rs::hmac;
use base64::Engine;

/// The `webhook-signature` header value for one POST.
pub(crate) fn signature(key: &[u8], webhook_id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(webhook_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// A new secret, `whsec_` and 32 random bytes in base64.
pub(crate) fn new_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!(
        "{}{}",
        crate::config::SECRET_PREFIX,
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries (secret, id, timestamp,
    /// payload and the signature they expect).
    #[test]
    fn matches_the_reference_example() {
        let key = crate::config::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(crate::config::webhook_key(&new_secret()).is_some());
    }
}
