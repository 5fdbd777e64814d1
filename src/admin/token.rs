//! The admin token: a random secret in `[admin] token_file` (default `<data_dir>/admin.token`),
//! generated with mode 0600 on first start when missing, as dev certificates are. Whoever can
//! read the file can drive the admin endpoint; the CLI reads it the same way.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the token from `path`, creating the file (0600, 256 random bits as hex) when it does
/// not exist yet or is empty (a new token replaces it, with a warning). A short token or an
/// unreadable file is an error naming the path.
pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            tracing::warn!(path = %path.display(),
                "the admin token file is empty; replacing it with a new token (mode 0600)");
            std::fs::remove_file(path).map_err(|e| {
                anyhow::anyhow!(
                    "admin.token_file: cannot replace the empty {}: {e}",
                    path.display()
                )
            })?;
            load_or_create(path)
        }
        Ok(text) => {
            let token = text.trim().to_string();
            if token.len() < 16 {
                anyhow::bail!(
                    "admin.token_file: {} holds no usable token (at least 16 characters); \
                     delete it and herald generates a new one",
                    path.display()
                );
            }
            if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                tracing::warn!(path = %path.display(),
                    "the admin token file is readable by other users; chmod 600 it");
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("admin.token_file: cannot create {}: {e}", dir.display())
                })?;
            }
            let bytes: [u8; 32] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    anyhow::anyhow!("admin.token_file: cannot create {}: {e}", path.display())
                })?;
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated the admin endpoint token (mode 0600)");
            Ok(token)
        }
        Err(e) => anyhow::bail!(
            "admin.token_file: cannot read {}: {e} (run herald as the user that owns it)",
            path.display()
        ),
    }
}

/// Reads an existing token file (the CLI side); `Ok(None)` when there is none yet.
pub(crate) fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => anyhow::bail!(
            "cannot read the admin token {}: {e}; run this command as the user herald runs as \
             (the file is mode 0600) or point [admin] token_file at a copy you may read",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_generated_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let t1 = load_or_create(&path).unwrap();
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), t1);
        assert_eq!(read(&path).unwrap(), Some(t1));
        assert_eq!(read(&dir.path().join("none")).unwrap(), None);
    }

    #[test]
    fn an_empty_token_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "\n").unwrap();
        let t = load_or_create(&path).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
