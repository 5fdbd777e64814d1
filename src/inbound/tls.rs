//! TLS for the submission listeners: the operator's PEM certificate and key (`[tls] cert`,
//! `key`), or — only when `allow_dev_certs` is set and the files are missing — a self-signed
//! pair generated at start-up for development. TLS 1.2 and 1.3 only, with session resumption.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError};

/// Builds the TLS acceptor for the listeners, generating a dev pair if allowed and needed.
pub(crate) fn acceptor(cfg: &Config, config_file: &str) -> anyhow::Result<TlsAcceptor> {
    let tls = &cfg.tls;
    let err = |key: &str, problem: String| ConfigError {
        file: config_file.to_string(),
        key: key.to_string(),
        problem,
    };
    let cert_missing = !tls.cert.exists();
    let key_missing = !tls.key.exists();
    if cert_missing != key_missing {
        let (key, missing, present) = if cert_missing {
            ("tls.cert", &tls.cert, &tls.key)
        } else {
            ("tls.key", &tls.key, &tls.cert)
        };
        return Err(err(
            key,
            format!(
                "{} is missing but {} exists; install both files of the pair",
                missing.display(),
                present.display()
            ),
        )
        .into());
    }
    if cert_missing {
        if !tls.allow_dev_certs {
            let (key, path) = ("tls.cert", &tls.cert);
            return Err(err(
                key,
                format!(
                    "{} does not exist; install your certificate (PEM) there, or set \
                     tls.allow_dev_certs = true for a self-signed development pair",
                    path.display()
                ),
            )
            .into());
        }
        generate_dev_pair(&cfg.server.hostname, &tls.cert, &tls.key)?;
    }
    let certs = crate::trust::load_certs(&tls.cert).map_err(|p| err("tls.cert", p.to_string()))?;
    let key = crate::trust::load_key(&tls.key).map_err(|p| err("tls.key", p.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(crate::trust::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("tls", format!("TLS set-up failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            err(
                "tls.key",
                format!("certificate and key do not fit together: {e}"),
            )
        })?;
    enable_resumption(&mut server).map_err(|e| err("tls", format!("TLS set-up failed: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// TLS 1.2 sessions remembered for resumption by session ID (a few hundred bytes each).
const TLS12_SESSION_CACHE_ENTRIES: usize = 4096;

/// Lets an app that reconnects for every message resume its TLS session instead of paying a
/// full handshake (the certificate signature, and the client's chain verification): TLS 1.3
/// and 1.2 session tickets, encrypted under keys made at start-up and rotated every 6 hours
/// (stateless: no memory per client), plus a bounded session-ID cache for TLS 1.2 clients
/// without ticket support. The one acceptor serves 587 and 465, so either resumes on either.
fn enable_resumption(server: &mut ServerConfig) -> Result<(), rustls::Error> {
    server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    server.session_storage =
        rustls::server::ServerSessionMemoryCache::new(TLS12_SESSION_CACHE_ENTRIES);
    Ok(())
}

/// Writes a self-signed certificate for `hostname` and its key (mode 0600), loudly.
fn generate_dev_pair(hostname: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    tracing::warn!(
        cert = %cert.display(),
        key = %key.display(),
        "!!! GENERATING A SELF-SIGNED DEVELOPMENT CERTIFICATE for {hostname}: apps must be told \
         to trust it or skip verification. Never run production like this: install a real \
         certificate and set tls.allow_dev_certs = false !!!"
    );
    let pair = rcgen::generate_simple_self_signed(vec![hostname.to_string()])?;
    for p in [cert, key] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
    }
    write_file(key, pair.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert, pair.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_pair_is_generated_with_private_key_0600_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: Config = toml_cfg();
        cfg.tls.cert = dir.path().join("c/herald.crt");
        cfg.tls.key = dir.path().join("c/herald.key");
        cfg.tls.allow_dev_certs = true;
        assert!(acceptor(&cfg, "t.toml").is_ok());
        let mode = fs::metadata(&cfg.tls.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Second start reuses the files.
        assert!(acceptor(&cfg, "t.toml").is_ok());
    }

    #[test]
    fn missing_cert_without_dev_certs_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: Config = toml_cfg();
        cfg.tls.cert = dir.path().join("none.crt");
        cfg.tls.key = dir.path().join("none.key");
        cfg.tls.allow_dev_certs = false;
        let e = acceptor(&cfg, "t.toml").err().unwrap();
        let e = e.downcast_ref::<ConfigError>().unwrap();
        assert_eq!(e.key, "tls.cert");
    }

    #[test]
    fn half_a_pair_is_a_config_error_even_with_dev_certs() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: Config = toml_cfg();
        cfg.tls.cert = dir.path().join("herald.crt");
        cfg.tls.key = dir.path().join("herald.key");
        cfg.tls.allow_dev_certs = true;
        fs::write(&cfg.tls.cert, "x").unwrap();
        let e = acceptor(&cfg, "t.toml").err().unwrap();
        assert_eq!(e.downcast_ref::<ConfigError>().unwrap().key, "tls.key");
    }

    fn toml_cfg() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, "").unwrap();
        Config::load(&path).unwrap()
    }
}
