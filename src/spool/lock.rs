//! One herald per spool: the running queue holds an exclusive lock on `<spool>/lock`
//! (`flock(2)` through [`File::try_lock`]), so a second `herald serve` refuses to start and
//! `herald queue` knows not to touch the files offline while a herald runs. The kernel drops
//! the lock when the process dies (even kill -9).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
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
        match file.try_lock() {
            Ok(()) => Ok(Some(SpoolLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SpoolLock::try_acquire(dir.path()).expect("lock");
        assert!(first.is_some());
        assert!(SpoolLock::try_acquire(dir.path()).expect("try").is_none());
        drop(first);
        assert!(SpoolLock::try_acquire(dir.path()).expect("again").is_some());
    }
}
