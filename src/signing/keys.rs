//! DKIM key files: loading and checking them at start-up, generating new ones, and the public
//! half as it is published in DNS.
//!
//! A key file is a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519) or PKCS#1
//! (`BEGIN RSA PRIVATE KEY`). Herald refuses a file that others can read, that it cannot read,
//! that is not a key, or whose key is not of the algorithm the configuration declares — always
//! naming the file, so that the operator knows what to fix.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;

use crate::config::DkimAlgorithm;

/// Why a DKIM key cannot be used or made, in words an operator can act on (each message says
/// what the file is instead, or what to run).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM at all.
    #[error(
        "not a PEM private key ({0}); expected \"-----BEGIN PRIVATE KEY-----\" (PKCS#8) or \
         \"-----BEGIN RSA PRIVATE KEY-----\" (PKCS#1), as `herald dkim generate` writes"
    )]
    NotPem(String),
    /// PKCS#8 holding neither RSA nor Ed25519.
    #[error(
        "a PKCS#8 private key that is neither RSA nor Ed25519; DKIM signs with rsa-sha256 or \
         ed25519-sha256"
    )]
    NotDkimAlgorithm,
    /// A SEC1 elliptic-curve key.
    #[error("an elliptic-curve (SEC1) private key; DKIM signs with RSA or Ed25519 only")]
    EllipticCurve,
    /// Some other PEM private key format.
    #[error("an unsupported private key format; use PKCS#8 or PKCS#1 PEM")]
    UnsupportedFormat,
    /// RSA below [`MIN_RSA_BITS`].
    #[error(
        "an RSA key smaller than {MIN_RSA_BITS} bits; herald refuses them (1024-bit keys are weak \
         and distrusted) — generate a new one with `herald dkim generate`"
    )]
    RsaTooSmall,
    /// RSA above [`MAX_RSA_BITS`].
    #[error(
        "an RSA key larger than {MAX_RSA_BITS} bits; receivers need not verify those (RFC 8301) \
         — use 2048 or 4096"
    )]
    RsaTooLarge,
    /// aws-lc-rs or mail-auth refused the RSA key.
    #[error("an invalid RSA private key ({0})")]
    InvalidRsa(String),
    /// A key size `herald dkim generate` does not offer.
    #[error(
        "{0}-bit RSA keys are not offered; use 2048 (default) or 4096 (1024 is refused as too weak)"
    )]
    UnofferedSize(u32),
    /// The crypto library failed to make or encode a key.
    #[error("key generation failed: {0}")]
    Generation(String),
    /// The key file does not exist.
    #[error("file not found; create it with `herald dkim generate` or fix the path")]
    NotFound,
    /// The key file cannot be read.
    #[error("cannot read: {0}")]
    Unreadable(io::Error),
    /// The path is a directory or a device.
    #[error("not a regular file")]
    NotRegularFile,
    /// Group or others may read the key.
    #[error(
        "private key is accessible to group or others (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file's permission bits.
        mode: u32,
        /// The file, as configured.
        path: String,
    },
    /// The file's key is not of the configured algorithm.
    #[error("holds an {found} key but the configuration declares algorithm = \"{declared}\"")]
    WrongAlgorithm {
        /// What the file holds.
        found: &'static str,
        /// What `[[dkim.keys]] algorithm` says.
        declared: &'static str,
    },
    /// A development key could not be written.
    #[error("cannot write a generated development key: {0}")]
    WriteDevKey(io::Error),
}

/// Smallest RSA key herald signs with (RFC 8301 allows 1024; receivers increasingly distrust it).
pub const MIN_RSA_BITS: u32 = 2048;
/// Largest RSA key herald signs with (RFC 8301: verifiers need not handle more than 4096).
pub const MAX_RSA_BITS: u32 = 4096;

/// A private key read from PEM and checked: what it is, and its public half.
pub struct ParsedKey {
    /// The algorithm the file actually holds.
    pub algorithm: DkimAlgorithm,
    /// Key size in bits (256 for Ed25519).
    pub bits: u32,
    /// The signing key, as mail-auth uses it.
    pub key: DkimKey,
    /// The `p=` value of the DNS record: SubjectPublicKeyInfo for RSA, the raw 32 bytes for
    /// Ed25519 (RFC 8463), base64-encoded.
    pub public_b64: String,
}

impl ParsedKey {
    /// The TXT record value to publish at `<selector>._domainkey.<domain>`.
    pub fn txt(&self) -> String {
        txt_value(self.algorithm, &self.public_b64)
    }
}

/// The DKIM TXT record value for a public key: `v=DKIM1; k=rsa; p=…`.
pub fn txt_value(algorithm: DkimAlgorithm, public_b64: &str) -> String {
    format!("v=DKIM1; k={}; p={public_b64}", algorithm.as_str())
}

/// Parses a PEM private key, working out which algorithm it holds. The error says what the file
/// is instead, in words an operator can act on.
pub fn parse_private_key(pem: &[u8]) -> Result<ParsedKey, KeyError> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| KeyError::NotPem(e.to_string()))?;
    match der {
        PrivateKeyDer::Pkcs1(ref k) => {
            let pair = RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(rsa_rejected)?;
            rsa_key(&pair, der.clone_key())
        }
        PrivateKeyDer::Pkcs8(ref k) => {
            let bytes = k.secret_pkcs8_der();
            match RsaKeyPair::from_pkcs8(bytes) {
                Ok(pair) => rsa_key(&pair, der.clone_key()),
                Err(e) if e.description_() == "TooSmall" || e.description_() == "TooLarge" => {
                    Err(rsa_rejected(e))
                }
                Err(_) => {
                    let ed = Ed25519Key::from_pkcs8_maybe_unchecked_der(bytes)
                        .map_err(|_| KeyError::NotDkimAlgorithm)?;
                    let public_b64 = STANDARD.encode(ed.public_key());
                    Ok(ParsedKey {
                        algorithm: DkimAlgorithm::Ed25519,
                        bits: 256,
                        key: DkimKey::Ed25519(ed),
                        public_b64,
                    })
                }
            }
        }
        PrivateKeyDer::Sec1(_) => Err(KeyError::EllipticCurve),
        _ => Err(KeyError::UnsupportedFormat),
    }
}

fn rsa_rejected(e: aws_lc_rs::error::KeyRejected) -> KeyError {
    match e.description_() {
        "TooSmall" => KeyError::RsaTooSmall,
        "TooLarge" => KeyError::RsaTooLarge,
        other => KeyError::InvalidRsa(other.to_string()),
    }
}

fn rsa_key(pair: &RsaKeyPair, der: PrivateKeyDer<'static>) -> Result<ParsedKey, KeyError> {
    let bits = u32::try_from(pair.public_modulus_len() * 8).unwrap_or(u32::MAX);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall);
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLarge);
    }
    let spki = pair
        .public_key()
        .as_der()
        .map_err(|_| KeyError::InvalidRsa("its public half cannot be encoded".into()))?;
    let key = RsaKey::<Sha256>::from_key_der(der)
        .map_err(|e| KeyError::InvalidRsa(format!("mail-auth cannot sign with it: {e}")))?;
    Ok(ParsedKey {
        algorithm: DkimAlgorithm::Rsa,
        bits,
        key: DkimKey::Rsa(key),
        public_b64: STANDARD.encode(spki.as_ref()),
    })
}

/// A freshly generated private key: its PEM text (to write 0600) and the parsed key.
pub struct GeneratedKey {
    /// PEM text of the private key (PKCS#8).
    pub pem: String,
    /// The same key, parsed back as herald will load it.
    pub parsed: ParsedKey,
}

/// Generates a key: RSA of `bits` (2048, 3072 or 4096) or Ed25519.
///
/// RSA keys come from aws-lc-rs, the backend mail-auth signs with, rather than mail-auth's
/// `DkimKeyPair::generate_rsa` (the pure-Rust `rsa` crate): constant-time keygen that takes
/// milliseconds instead of seconds for 4096 bits, written as PKCS#8. Ed25519 keys come from
/// mail-auth's `Ed25519Key::generate_pkcs8`.
pub fn generate(algorithm: DkimAlgorithm, bits: u32) -> Result<GeneratedKey, KeyError> {
    let pkcs8: Vec<u8> = match algorithm {
        DkimAlgorithm::Rsa => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                other => return Err(KeyError::UnofferedSize(other)),
            };
            let pair = RsaKeyPair::generate(size)
                .map_err(|_| KeyError::Generation("RSA key generation failed".into()))?;
            let der = pair
                .as_der()
                .map_err(|_| KeyError::Generation("encoding the new RSA key failed".into()))?;
            der.as_ref().to_vec()
        }
        DkimAlgorithm::Ed25519 => Ed25519Key::generate_pkcs8()
            .map_err(|e| KeyError::Generation(format!("Ed25519: {e}")))?,
    };
    let pem = pem_encode("PRIVATE KEY", &pkcs8);
    // Parse back exactly what will be written, so a generated key is checked like a loaded one.
    let parsed = parse_private_key(pem.as_bytes())?;
    Ok(GeneratedKey { pem, parsed })
}

/// PEM text for DER bytes under `label` (64-character base64 lines, RFC 7468).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a new private key file with mode 0600 (its directory 0700 when created), refusing to
/// overwrite an existing file; file and directory are fsynced.
pub fn write_private_key(path: &Path, pem: &str) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    if let Some(dir) = dir {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Why a key file cannot be used, before its contents are even looked at.
pub fn check_file(path: &Path) -> Result<(), KeyError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KeyError::NotFound,
        _ => KeyError::Unreadable(e),
    })?;
    if !meta.is_file() {
        return Err(KeyError::NotRegularFile);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            mode,
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// Reads and checks a key file: permissions, readability, contents, declared algorithm.
pub fn load_file(path: &Path, declared: DkimAlgorithm) -> Result<ParsedKey, KeyError> {
    check_file(path)?;
    let pem = fs::read(path).map_err(KeyError::Unreadable)?;
    let parsed = parse_private_key(&pem)?;
    if parsed.algorithm != declared {
        return Err(KeyError::WrongAlgorithm {
            found: display_algorithm(parsed.algorithm),
            declared: declared.as_str(),
        });
    }
    Ok(parsed)
}

/// The algorithm's name as people write it.
pub fn display_algorithm(a: DkimAlgorithm) -> &'static str {
    match a {
        DkimAlgorithm::Rsa => "RSA",
        DkimAlgorithm::Ed25519 => "Ed25519",
    }
}

/// Splits a TXT value into the ≤255-byte character-strings DNS requires.
pub fn txt_strings(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut cut = rest.len().min(255);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out
}

/// A TXT record in zone-file syntax, long values split into 255-byte strings inside
/// parentheses, e.g. `s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=…" "…" )`.
pub fn zone_txt_record(name: &str, value: &str) -> String {
    let name = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let parts = txt_strings(value);
    if parts.len() <= 1 {
        return format!("{name} IN TXT \"{value}\"");
    }
    let mut out = format!("{name} IN TXT (");
    for (i, p) in parts.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { "\n\t" });
        out.push('"');
        out.push_str(p);
        out.push('"');
    }
    out.push_str(" )");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_record_splits_at_255_bytes() {
        let value = format!("v=DKIM1; k=rsa; p={}", "A".repeat(400));
        let rec = zone_txt_record("s1._domainkey.example.com", &value);
        let strings: Vec<&str> = rec.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), value);
        assert!(rec.starts_with("s1._domainkey.example.com. IN TXT ( \""));
    }

    #[test]
    fn generated_keys_parse_back() {
        let ed = generate(DkimAlgorithm::Ed25519, 0).expect("ed25519");
        assert_eq!(ed.parsed.algorithm, DkimAlgorithm::Ed25519);
        assert!(ed.parsed.txt().starts_with("v=DKIM1; k=ed25519; p="));
        let rsa = generate(DkimAlgorithm::Rsa, 2048).expect("rsa");
        assert_eq!(rsa.parsed.bits, 2048);
        assert!(rsa.parsed.txt().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
        assert!(generate(DkimAlgorithm::Rsa, 1024).is_err());
    }

    #[test]
    fn garbage_is_refused_in_words() {
        let err = parse_private_key(b"hello").err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("not a PEM private key"), "{err}");
    }
}
