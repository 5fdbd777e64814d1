//! Files the running herald reads, written by commands an administrator runs — often as root
//! (`herald dkim generate`, `herald dkim activate`). A file replaced keeps its owner and mode; a
//! new file belongs to the service user (the owner of `[server] data_dir`), so the service can
//! still read it after a `sudo herald …`. Run as anyone else, the command warns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;

/// Who herald runs as, read from the owner of its data directory.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The directory it was read from.
    pub data_dir: PathBuf,
}

impl ServiceUser {
    /// The owner of `[server] data_dir`, when the directory exists.
    pub fn of(cfg: &Config) -> Option<ServiceUser> {
        let meta = fs::metadata(&cfg.server.data_dir).ok()?;
        Some(ServiceUser {
            uid: meta.uid(),
            gid: meta.gid(),
            data_dir: cfg.server.data_dir.clone(),
        })
    }

    /// Whether files this process creates should be handed over (it runs as root, and the
    /// service user is someone else).
    fn hand_over(&self) -> bool {
        effective_uid() == 0 && self.uid != 0
    }
}

/// Says, on stderr, when this command runs as someone other than the service user: as root,
/// that the files written are given to the service user; as another user, that the service may
/// not be able to read them.
pub fn warn_if_not_service_user(cfg: &Config) {
    let Some(service) = ServiceUser::of(cfg) else {
        return;
    };
    let me = effective_uid();
    if me == service.uid {
        return;
    }
    let name = user_name(service.uid);
    if me == 0 {
        eprintln!(
            "herald: warning: running as root, but herald runs as {name} (the owner of {}): the \
             files written now are given to {name}, and a file replaced keeps its owner and mode",
            service.data_dir.display()
        );
    } else {
        eprintln!(
            "herald: warning: running as {}, but herald runs as {name} (the owner of {}): files \
             written now may be unreadable by the service; run this as `sudo -u {name} herald …`",
            user_name(me),
            service.data_dir.display()
        );
    }
}

/// Warns (in the log) when `herald serve` runs as someone other than the owner of its data
/// directory: what it creates there (spool files, stores) would be unreadable by the service
/// when it next starts as that owner.
pub fn warn_if_serving_as_other_user(cfg: &Config) {
    let Some(service) = ServiceUser::of(cfg) else {
        return;
    };
    let me = effective_uid();
    if me != service.uid {
        let name = user_name(service.uid);
        tracing::warn!(
            "serving as {}, but the data directory {} belongs to {name}: files created now \
             (spool, stores) will belong to {} and the service running as {name} may not read \
             them; start it as that user (`systemctl start herald`, or `sudo -u {name} herald \
             serve`)",
            user_name(me),
            service.data_dir.display(),
            user_name(me)
        );
    }
}

/// Replaces `path` with `bytes` atomically (a temporary file beside it, renamed over it), the
/// new file keeping the old one's owner, group and mode.
pub fn replace_keeping_owner(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let old = fs::metadata(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if effective_uid() == 0 {
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))?;
        }
        file.set_permissions(fs::Permissions::from_mode(
            old.permissions().mode() & 0o7777,
        ))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Gives `path` (just created by this process) to the service user when running as root.
pub fn give_to_service_user(path: &Path, service: Option<&ServiceUser>) -> io::Result<()> {
    match service {
        Some(s) if s.hand_over() => std::os::unix::fs::chown(path, Some(s.uid), Some(s.gid)),
        _ => Ok(()),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The name of user `uid` from /etc/passwd, else the number.
fn user_name(uid: u32) -> String {
    crate::config::paths::id_name("/etc/passwd", uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_root_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("herald.toml");
        fs::write(&path, "old").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        replace_keeping_owner(&path, b"new").expect("replace");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new");
        let meta = fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 1);
        assert_eq!(user_name(0), "root");
    }
}
