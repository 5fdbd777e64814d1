//! Relative paths in a configuration file mean "next to this file": `data_dir = "data"` in
//! `/etc/herald/herald.toml` is `/etc/herald/data`, whatever the current directory. Without
//! this, `herald dkim list` run from `/tmp` would miss the keys and `herald serve` would
//! create a fresh, empty spool there.

use std::path::{Path, PathBuf};

use super::Config;

impl Config {
    /// Makes every relative path absolute against `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        self.tls.extra_roots.iter_mut().for_each(fix);
        self.spool.dir.iter_mut().for_each(fix);
        self.dkim.keys_dir.iter_mut().for_each(fix);
        self.dkim.keys.iter_mut().for_each(|k| fix(&mut k.file));
        self.mta_sts.cache_dir.iter_mut().for_each(fix);
        self.dane.trust_anchor.iter_mut().for_each(fix);
        self.report.dir.iter_mut().for_each(fix);
        self.delivery.capture_dir.iter_mut().for_each(fix);
        self.admin.token_file.iter_mut().for_each(fix);
        self.feedback.database.iter_mut().for_each(fix);
        self.web.dir.iter_mut().for_each(fix);
        if let Some(cluster) = &mut self.cluster {
            cluster.password_file.iter_mut().for_each(fix);
            cluster.tls_ca_file.iter_mut().for_each(fix);
        }
    }
}

/// The directory relative paths of the file at `config_path` resolve against: its parent,
/// made absolute from the current directory.
pub fn base_dir(config_path: &Path) -> PathBuf {
    let parent = config_path.parent().unwrap_or(Path::new(""));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    std::path::absolute(parent)
        .map(|p| normalize(&p))
        .unwrap_or_else(|_| parent.to_path_buf())
}

/// `a/./b` → `a/b` (keeps `..`: symlinks make removing it unsafe).
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// `path` shown relative to `base` when it lies below it (for config blocks printed to paste
/// into that file), else as it is.
pub fn relative_to(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Why the config file at `path` cannot be opened, with what to do: the packaged file is
/// readable by root and the service's group only.
pub fn unreadable(path: &Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    if e.kind() != std::io::ErrorKind::PermissionDenied {
        return format!("cannot read the file: {e}");
    }
    let who = std::fs::metadata(path)
        .map(|m| {
            format!(
                " (it is {}:{}, mode {:04o})",
                id_name("/etc/passwd", m.uid()),
                id_name("/etc/group", m.gid()),
                m.mode() & 0o7777
            )
        })
        .unwrap_or_default();
    format!(
        "cannot read the file: {e}{who}; the package installs it root:herald, mode 0640: run \
         herald as root, as the service user (`sudo -u herald herald …`), or as a member of \
         the file's group"
    )
}

/// The name of `id` in a passwd or group file, else the number.
pub fn id_name(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let found: u32 = fields.nth(1)?.parse().ok()?;
                (found == id).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}
