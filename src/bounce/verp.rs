//! herald's return path (VERP, issue 24): the MAIL FROM of an app's message becomes
//! `b-<token>@<return_path_domain>`, where the token names the message (queue id), the
//! recipient (one address, or the recipient domain when one transaction carries several),
//! the app and an expiry, signed with HMAC-SHA256 under a key only herald holds. A bounce to
//! such an address is taken only if the token verifies; everything else gets `550`.
//!
//! Local parts are often case-folded on the way back, so the token is lower-case base32
//! (RFC 4648 alphabet, no padding): 30 bytes, 48 characters, well under the 64 a local part
//! may have. The same token format signs the `CFBL-Feedback-ID` header that complaints
//! (ARF) are matched with.

use std::path::Path;

use aws_lc_rs::{digest, hmac};

/// The prefix of a VERP local part.
pub(crate) const PREFIX: &str = "b-";

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BODY: usize = 22;
const MAC: usize = 8;

/// The HMAC key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(hmac::Key);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from raw bytes (tests; [`TokenKey::load_or_create`] in herald).
    pub fn from_bytes(bytes: &[u8]) -> TokenKey {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads the key file at `path`, or creates it (32 random bytes, mode 0600) when missing.
    /// A file shorter than 32 bytes is refused.
    pub fn load_or_create(path: &Path) -> anyhow::Result<TokenKey> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= 32 => Ok(TokenKey::from_bytes(&bytes)),
            Ok(_) => anyhow::bail!(
                "bounce.token_key_file: {} holds fewer than 32 bytes; remove it to have a new \
                 key made, or copy the key of the other nodes there",
                path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                write_private(path, &key).map_err(|e| {
                    anyhow::anyhow!(
                        "bounce.token_key_file: cannot write {}: {e}",
                        path.display()
                    )
                })?;
                Ok(TokenKey::from_bytes(&key))
            }
            Err(e) => anyhow::bail!("bounce.token_key_file: cannot read {}: {e}", path.display()),
        }
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// herald's queue id of the message (20 hex digits), or the hex of a random reference.
    pub queue_id: String,
    /// Until when it is valid (Unix seconds, to the hour).
    pub expires_at: u64,
    rcpt: [u8; 4],
    app: [u8; 4],
}

/// Why a token was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// Not a token at all (wrong prefix, length or characters).
    #[error("no token")]
    Malformed,
    /// The signature does not verify: forged or altered.
    #[error("bad signature")]
    BadSignature,
    /// Valid once, expired now.
    #[error("expired")]
    Expired,
}

fn tag(s: &str) -> [u8; 4] {
    let d = digest::digest(&digest::SHA256, s.to_ascii_lowercase().as_bytes());
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

/// What a token names as its recipient: the address when the transaction had one recipient,
/// else `@domain` (each transaction goes to one domain).
pub(crate) fn recipient_tag_source(recipients: &[String]) -> String {
    match recipients {
        [one] => one.to_ascii_lowercase(),
        many => {
            let domain = many
                .first()
                .and_then(|r| r.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            format!("@{domain}")
        }
    }
}

impl Token {
    /// Whether the token covers `recipient` (its address, or its domain for a transaction
    /// with several recipients).
    pub fn covers(&self, recipient: &str) -> bool {
        let r = recipient.trim().to_ascii_lowercase();
        if tag(&r) == self.rcpt {
            return true;
        }
        r.rsplit_once('@')
            .is_some_and(|(_, d)| tag(&format!("@{d}")) == self.rcpt)
    }

    /// Whether the token was made for `app`.
    pub fn is_for_app(&self, app: &str) -> bool {
        tag(app) == self.app
    }
}

/// A signed token for message `queue_id` (20 hex digits) of `app`, to `recipient_source`
/// ([`recipient_tag_source`]), valid until `expires_at`.
pub(crate) fn make(
    key: &TokenKey,
    queue_id: &str,
    app: &str,
    recipient_source: &str,
    expires_at: u64,
) -> String {
    let mut body = [0u8; BODY + MAC];
    for (i, b) in body[..10].iter_mut().enumerate() {
        *b = queue_id
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    let hours = (expires_at.div_ceil(3600)).min(u32::MAX as u64) as u32;
    body[10..14].copy_from_slice(&hours.to_be_bytes());
    body[14..18].copy_from_slice(&tag(recipient_source));
    body[18..22].copy_from_slice(&tag(app));
    let mac = hmac::sign(&key.0, &body[..BODY]);
    body[BODY..].copy_from_slice(&mac.as_ref()[..MAC]);
    base32(&body)
}

/// The VERP address for one transaction: `b-<token>@<domain>`.
pub(crate) fn address(
    key: &TokenKey,
    domain: &str,
    queue_id: &str,
    app: &str,
    recipients: &[String],
    expires_at: u64,
) -> String {
    let token = make(
        key,
        queue_id,
        app,
        &recipient_tag_source(recipients),
        expires_at,
    );
    format!("{PREFIX}{token}@{}", domain.trim_end_matches('.'))
}

/// Verifies `token` (the part after `b-`, any case) at time `now`.
pub(crate) fn verify(key: &TokenKey, token: &str, now: u64) -> Result<Token, TokenError> {
    let bytes = unbase32(&token.to_ascii_lowercase()).ok_or(TokenError::Malformed)?;
    if bytes.len() != BODY + MAC {
        return Err(TokenError::Malformed);
    }
    let full = hmac::sign(&key.0, &bytes[..BODY]);
    if !constant_eq(&full.as_ref()[..MAC], &bytes[BODY..]) {
        return Err(TokenError::BadSignature);
    }
    let hours = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as u64;
    let expires_at = hours * 3600;
    if now >= expires_at {
        return Err(TokenError::Expired);
    }
    let queue_id = bytes[..10].iter().map(|b| format!("{b:02x}")).collect();
    let mut rcpt = [0u8; 4];
    rcpt.copy_from_slice(&bytes[14..18]);
    let mut app = [0u8; 4];
    app.copy_from_slice(&bytes[18..22]);
    Ok(Token {
        queue_id,
        expires_at,
        rcpt,
        app,
    })
}

/// The token in a VERP local part (`b-<token>`), if it has the shape of one.
pub(crate) fn token_of_local_part(local: &str) -> Option<&str> {
    let t = local
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &local[PREFIX.len()..])?;
    (!t.is_empty()).then_some(t)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn unbase32(s: &str) -> Option<Vec<u8>> {
    if s.len() > 100 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QID: &str = "0123456789abcdef0123";

    #[test]
    fn a_token_verifies_and_names_its_message_recipient_and_app() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let addr = address(
            &key,
            "rp.example.com",
            QID,
            "news",
            &["Bob@X.test".into()],
            36_000,
        );
        let local = addr.split('@').next().unwrap_or_default();
        assert!(local.len() <= 64, "{local}");
        let upper = local.to_ascii_uppercase();
        let token = token_of_local_part(&upper).unwrap_or_default();
        let t = verify(&key, token, 1000).expect("valid");
        assert_eq!(t.queue_id, QID);
        assert!(t.covers("bob@x.test"));
        assert!(!t.covers("carol@x.test"));
        assert!(t.is_for_app("news"));
        assert!(!t.is_for_app("billing"));
    }

    #[test]
    fn several_recipients_are_covered_by_their_domain() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let token = make(
            &key,
            QID,
            "a",
            &recipient_tag_source(&["a@x.test".into(), "b@x.test".into()]),
            36_000,
        );
        let t = verify(&key, &token, 0).expect("valid");
        assert!(t.covers("c@X.test"));
        assert!(!t.covers("a@y.test"));
    }

    #[test]
    fn forged_altered_and_expired_tokens_are_refused() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let other = TokenKey::from_bytes(&[8; 32]);
        let token = make(&key, QID, "a", "a@x.test", 7200);
        assert_eq!(verify(&other, &token, 0), Err(TokenError::BadSignature));
        let mut altered = token.clone().into_bytes();
        altered[3] = if altered[3] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(altered).unwrap_or_default();
        assert_eq!(verify(&key, &altered, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(&key, &token, 7200), Err(TokenError::Expired));
        assert_eq!(verify(&key, "not-base32!", 0), Err(TokenError::Malformed));
        assert_eq!(verify(&key, "abc", 0), Err(TokenError::Malformed));
        assert_eq!(token_of_local_part("postmaster"), None);
    }
}
