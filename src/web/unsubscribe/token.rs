//! Unsubscribe tokens: who asked to be removed from which app's mail, sealed so that the URL
//! carries no readable address and cannot be forged or altered.
//!
//! A token is `base64url(nonce ‖ ciphertext ‖ tag)`: the plaintext (version, expiry, app,
//! sender domain, address) is encrypted with HMAC-SHA256 in counter mode as its key stream,
//! then the nonce and ciphertext are authenticated with HMAC-SHA256 (encrypt-then-MAC, two
//! keys derived from one secret). Anything that fails the tag, the format or the expiry is
//! simply "not a token" (the page answers 404).

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Longest token accepted (a bound before any work is done on a URL).
pub(crate) const MAX_TOKEN_LEN: usize = 1024;

/// What a token says: this address no longer wants this app's mail from this domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The app (its `[apps]` name) that sent the mail.
    pub app: String,
    /// The domain of the envelope sender the mail came from.
    pub sender_domain: String,
    /// The recipient, lower-cased.
    pub address: String,
}

/// The two keys derived from the unsubscribe secret.
pub(crate) struct Sealer {
    enc: hmac::Key,
    mac: hmac::Key,
}

impl Sealer {
    /// Keys derived from `secret` (32 random bytes kept in `[web] dir`).
    pub(crate) fn new(secret: &[u8]) -> Sealer {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Sealer {
            enc: derive(b"herald unsubscribe encryption"),
            mac: derive(b"herald unsubscribe authentication"),
        }
    }

    /// A token for `sub`, valid until `expires` (unix seconds).
    pub(crate) fn seal(&self, sub: &Subscription, expires: i64) -> String {
        let mut plain = vec![VERSION];
        plain.extend_from_slice(&expires.to_be_bytes());
        for field in [&sub.app, &sub.sender_domain] {
            let bytes = &field.as_bytes()[..field.len().min(255)];
            plain.push(bytes.len() as u8);
            plain.extend_from_slice(bytes);
        }
        plain.extend_from_slice(sub.address.as_bytes());
        let nonce: [u8; NONCE_LEN] = rand::random();
        self.apply_keystream(&nonce, &mut plain);
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        let tag = hmac::sign(&self.mac, &out);
        out.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The subscription a genuine, unexpired token names; `None` for anything else.
    pub(crate) fn open(&self, token: &str, now: i64) -> Option<Subscription> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < NONCE_LEN + 1 + 8 + 2 + TAG_LEN {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = hmac::sign(&self.mac, body);
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..TAG_LEN], tag)
            .ok()?;
        let (nonce, cipher) = body.split_at(NONCE_LEN);
        let mut plain = cipher.to_vec();
        self.apply_keystream(nonce, &mut plain);
        let (&version, rest) = plain.split_first()?;
        if version != VERSION {
            return None;
        }
        let expires = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        if expires < now {
            return None;
        }
        let mut rest = &rest[8..];
        let mut field = || -> Option<String> {
            let (&len, tail) = rest.split_first()?;
            let value = tail.get(..len as usize)?;
            rest = &tail[len as usize..];
            String::from_utf8(value.to_vec()).ok()
        };
        let app = field()?;
        let sender_domain = field()?;
        let address = String::from_utf8(rest.to_vec()).ok()?;
        Some(Subscription {
            app,
            sender_domain,
            address,
        })
    }

    /// XORs `data` with HMAC-SHA256(enc, nonce ‖ counter) blocks.
    fn apply_keystream(&self, nonce: &[u8], data: &mut [u8]) {
        for (counter, chunk) in data.chunks_mut(32).enumerate() {
            let mut input = nonce.to_vec();
            input.extend_from_slice(&(counter as u32).to_be_bytes());
            let block = hmac::sign(&self.enc, &input);
            for (b, k) in chunk.iter_mut().zip(block.as_ref()) {
                *b ^= k;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription {
            app: "newsletter".into(),
            sender_domain: "example.com".into(),
            address: "reader@example.org".into(),
        }
    }

    #[test]
    fn a_token_opens_to_what_was_sealed_and_hides_the_address() {
        let s = Sealer::new(&[7; 32]);
        let t = s.seal(&sub(), 2_000_000_000);
        assert_eq!(s.open(&t, 1_000), Some(sub()));
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"reader"));
        assert!(!t.contains("reader"));
    }

    #[test]
    fn forged_altered_expired_or_foreign_tokens_open_to_nothing() {
        let s = Sealer::new(&[7; 32]);
        let t = s.seal(&sub(), 2_000);
        assert_eq!(s.open(&t, 2_001), None, "expired");
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[14] ^= 1;
        assert_eq!(s.open(&URL_SAFE_NO_PAD.encode(&raw), 0), None, "altered");
        assert_eq!(Sealer::new(&[8; 32]).open(&t, 0), None, "other secret");
        assert_eq!(s.open("not-a-token", 0), None);
        assert_eq!(s.open(&"A".repeat(5000), 0), None);
    }
}
