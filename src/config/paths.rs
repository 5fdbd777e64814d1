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
