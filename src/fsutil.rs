//! Durable file writes shared by the spool, the MTA-STS policy cache and the TLS-RPT store:
//! a file is replaced whole or not at all, and a directory's entries survive a crash.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory. A file that
/// is replaced keeps its permissions (a config file holding password hashes stays private).
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes every dirty page of the file system holding the open directory `dir` with one
/// syncfs(2): one flush for many files written since the last one (the spool's group commit,
/// which keeps its directory open rather than opening it for every group).
pub(crate) fn sync_filesystem(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether syncfs(2) on the file system holding the open directory `dir` makes what was
/// written there durable. It does on the local file systems listed here (they write back every
/// dirty page and commit their journal, and report write-back errors since Linux 5.8); it
/// does not where the kernel has no request to pass it on: an ordinary FUSE file system
/// receives no call at all for syncfs(2) (only virtiofs does), so the data stays wherever the
/// file system keeps it unflushed. Elsewhere the caller fsyncs each file it wrote.
pub(crate) fn syncfs_flushes(dir: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain integers, for which all zeros is a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes into `stat`, which lives for the call; `dir` keeps the
    // descriptor open.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut stat) } != 0 {
        return false;
    }
    // The magic numbers of statfs(2) (linux/magic.h).
    const TRUSTED: [i64; 4] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs (nothing survives a power cut there anyway)
    ];
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between C libraries
    TRUSTED.contains(&(stat.f_type as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        write_atomic(&dir.path().join("sub"), &path, b"first").expect("write");
        write_atomic(&dir.path().join("sub"), &path, b"second").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }
}
