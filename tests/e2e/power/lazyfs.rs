//! The lazy file system itself: what survives its power cut is exactly what was made durable,
//! and which durability calls reach it at all.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;

use crate::support::lazyfs::LazyFs;

#[test]
fn a_power_cut_keeps_what_was_fsynced_and_drops_the_rest_syncfs_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    fs::create_dir(&m).expect("mountpoint");
    let lazy = LazyFs::mount(&m);
    let write = |name: &str, bytes: &[u8]| {
        let mut f = File::create(m.join(name)).expect("create");
        f.write_all(bytes).expect("write");
        f
    };
    write("fsynced", b"kept").sync_all().expect("fsync");
    write("fdatasynced", b"kept too")
        .sync_data()
        .expect("fdatasync");
    drop(write("written", b"lost"));
    let syncfs = write("syncfs", b"lost as well");
    // SAFETY: the descriptor is open for the call.
    assert_eq!(
        unsafe { libc::syncfs(syncfs.as_raw_fd()) },
        0,
        "syncfs itself succeeds"
    );
    drop(syncfs);
    File::open(&m)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
    drop(write("unnamed", b"its name was never flushed"));
    // A durable file changed afterwards without a flush keeps its old bytes.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.join("fsynced"))
        .expect("open");
    f.write_all(b" and more").expect("append");
    drop(f);
    let before = lazy.calls();
    assert_eq!(
        (before.fsync, before.fdatasync, before.fsyncdir),
        (1, 1, 1),
        "{before:?}"
    );

    lazy.power_cut();
    assert!(
        fs::read(m.join("fsynced")).is_err(),
        "the power is off: every request fails"
    );
    let _lazy = lazy.restart();
    assert_eq!(fs::read(m.join("fsynced")).expect("read"), b"kept");
    assert_eq!(fs::read(m.join("fdatasynced")).expect("read"), b"kept too");
    assert_eq!(
        fs::read(m.join("written")).expect("read"),
        b"",
        "name durable, data not"
    );
    assert_eq!(
        fs::read(m.join("syncfs")).expect("read"),
        b"",
        "syncfs(2) never reaches a FUSE file system: nothing it was to flush survives"
    );
    assert!(!m.join("unnamed").exists(), "a name never flushed is gone");
}

#[test]
fn a_failed_fsync_drops_its_writes_and_the_retry_does_not_bring_them_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    fs::create_dir(&m).expect("mountpoint");
    let lazy = LazyFs::mount(&m);
    let mut f = File::create(m.join("f")).expect("create");
    File::open(&m)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
    f.write_all(b"first").expect("write");
    lazy.fail_fsyncs(1);
    assert_eq!(
        f.sync_data().expect_err("EIO").raw_os_error(),
        Some(libc::EIO)
    );
    f.sync_data().expect("the retry succeeds, as on Linux");
    f.write_all(b" second").expect("write");
    f.sync_data().expect("flush");
    drop(f);
    lazy.power_cut();
    let _lazy = lazy.restart();
    assert_eq!(
        fs::read(m.join("f")).expect("read"),
        b"\0\0\0\0\0 second",
        "the failed flush's bytes were never written"
    );
}

#[test]
fn a_full_disk_refuses_growth_and_a_read_only_one_every_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    fs::create_dir(&m).expect("mountpoint");
    let lazy = LazyFs::mount(&m);
    fs::write(m.join("f"), vec![0; 4096]).expect("write");
    lazy.set_full(true);
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.join("f"))
        .expect("open");
    f.write_all(b"overwrite in place").expect("no growth: fits");
    let err = fs::write(m.join("g"), b"new bytes").expect_err("full");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    lazy.set_full(false);
    fs::write(m.join("g"), b"new bytes").expect("space again");
    lazy.set_read_only(true);
    let err = fs::write(m.join("h"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(m.join("g")).expect("reads go on"), b"new bytes");
}
