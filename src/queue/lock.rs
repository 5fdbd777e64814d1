//! One herald per spool: the running queue holds an exclusive `flock` on `<spool>/lock`, so a
//! second `herald serve` refuses to start and `herald queue` knows not to touch the files
//! offline while a herald runs. The kernel drops the lock when the process dies (even kill -9).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The held lock; released when dropped or when the process ends.
pub struct SpoolLock {
    _file: File,
}

impl SpoolLock {
    /// Takes the lock without waiting; `Ok(None)` when another process holds it.
    pub fn try_acquire(spool_dir: &Path) -> io::Result<Option<SpoolLock>> {
        std::fs::create_dir_all(spool_dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(spool_dir.join("lock"))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(SpoolLock { _file: file }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err)
        }
    }
}
