//! A FUSE file system for power-cut tests, after Jepsen's LazyFS: every write (data, size,
//! new names, renames, unlinks) stays in memory until it is made durable, and on command it
//! drops everything that was not (a power cut). It also injects the errors of a failing disk:
//! `fsync` → `EIO` (the writes that fsync was to flush are dropped, as Linux drops them),
//! a full disk (`ENOSPC` on any write that needs more space), a read-only remount (`EROFS`).
//!
//! What reaches a FUSE file system at all (Linux, no writeback cache, which `fuser` does not
//! ask for): `write` on every write(2)/pwrite(2); `fsync` for fsync(2) and, with its datasync
//! flag set, fdatasync(2); `fsyncdir` for fsync(2) on a directory; `flush` on close(2).
//! syncfs(2) and sync(2) send nothing (the kernel has no FUSE request for them: only virtiofs
//! has one), nor does sync_file_range(2): a program that relies on them for durability loses
//! its data here, and on any other file system that implements them the same way.
//!
//! The model lives in [`model`]; this file maps FUSE requests onto it and gives the test its
//! controls. The file system runs on a thread of the test process; [`LazyFs::power_cut`]
//! turns every later request into `EIO` (the machine is off), and [`LazyFs::restart`] unmounts
//! it and mounts what the disk kept at the same place.

mod model;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use model::{Kind, Model};

/// How many durability calls of each kind the file system received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    /// fsync(2) on a file.
    pub fsync: u64,
    /// fdatasync(2) on a file.
    pub fdatasync: u64,
    /// fsync(2) on a directory.
    pub fsyncdir: u64,
}

impl Calls {
    /// All of them: the points a test can cut the power at.
    pub fn total(&self) -> u64 {
        self.fsync + self.fdatasync + self.fsyncdir
    }
}

/// The faults a test injects, and the power.
#[derive(Debug, Default)]
struct Faults {
    /// The power is off: every request fails with EIO.
    off: bool,
    /// The next this many file fsyncs fail with EIO (dropping their writes).
    failing_fsyncs: u32,
    /// Writes that would make the file system hold more than this many bytes fail (ENOSPC).
    capacity: Option<u64>,
    /// Every change fails with EROFS.
    read_only: bool,
    /// Cut the power when the durability call with this number (1-based) arrives, before it
    /// takes effect.
    cut_at_call: Option<u64>,
}

struct State {
    model: Model,
    /// What the power cut kept, once cut.
    kept: Option<Model>,
    faults: Faults,
    calls: Calls,
}

impl State {
    fn cut(&mut self) {
        if self.kept.is_none() {
            self.kept = Some(self.model.after_power_cut());
        }
        self.faults.off = true;
    }

    /// Counts a durability call; true when the power goes at this one.
    fn durability_call(&mut self, count: impl FnOnce(&mut Calls)) -> bool {
        count(&mut self.calls);
        if self
            .faults
            .cut_at_call
            .is_some_and(|n| self.calls.total() >= n)
        {
            self.cut();
        }
        self.faults.off
    }

    /// EIO with the power off, EROFS when read-only: for every request that changes something.
    fn may_change(&self) -> Result<(), i32> {
        if self.faults.off {
            Err(libc::EIO)
        } else if self.faults.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }
}

/// A mounted lazy file system (module documentation). Unmounted when dropped.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
}

impl LazyFs {
    /// Mounts an empty lazy file system on `mountpoint` (an existing directory). Needs root
    /// (or fusermount3) and `/dev/fuse`.
    pub fn mount(mountpoint: &Path) -> LazyFs {
        LazyFs::mount_model(mountpoint, Model::new())
    }

    fn mount_model(mountpoint: &Path, model: Model) -> LazyFs {
        let state = Arc::new(Mutex::new(State {
            model,
            kept: None,
            faults: Faults::default(),
            calls: Calls::default(),
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lazyfs".into()),
            MountOption::Subtype("lazyfs".into()),
        ];
        let fs = Fuse {
            state: state.clone(),
        };
        let session = fuser::spawn_mount(fs, mountpoint, &config)
            .unwrap_or_else(|e| panic!("mount lazyfs on {}: {e}", mountpoint.display()));
        LazyFs {
            state,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts the power now: what was not made durable is gone, and every request from now on
    /// fails with EIO until [`LazyFs::restart`].
    pub fn power_cut(&self) {
        self.state().cut();
    }

    /// Cuts the power when the `n`th durability call from now arrives (before it acts).
    pub fn cut_at_call(&self, n: u64) {
        let mut state = self.state();
        state.faults.cut_at_call = Some(state.calls.total() + n);
    }

    /// Whether the power is off (cut by [`LazyFs::power_cut`] or an armed cut).
    pub fn is_off(&self) -> bool {
        self.state().faults.off
    }

    /// The durability calls received since mounted.
    pub fn calls(&self) -> Calls {
        self.state().calls
    }

    /// Whether every file's writes have been flushed (a cut now would lose no data).
    pub fn all_flushed(&self) -> bool {
        self.state().model.all_flushed()
    }

    /// The next `n` file fsyncs fail with EIO.
    pub fn fail_fsyncs(&self, n: u32) {
        self.state().faults.failing_fsyncs = n;
    }

    /// The disk is full from now on (`true`: no write may need more space), or not.
    pub fn set_full(&self, full: bool) {
        let mut state = self.state();
        state.faults.capacity = full.then(|| state.model.used());
    }

    /// A read-only remount (every change fails with EROFS), or back to read-write.
    pub fn set_read_only(&self, read_only: bool) {
        self.state().faults.read_only = read_only;
    }

    /// Unmounts (the caller has stopped every process using it) and mounts at the same place
    /// what the disk holds: after a power cut, what was durable; otherwise everything.
    pub fn restart(mut self) -> LazyFs {
        let model = {
            let mut state = self.state();
            state.cut();
            state.kept.take().unwrap_or_else(Model::new)
        };
        self.unmount();
        LazyFs::mount_model(&self.mountpoint, model)
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take()
            && let Err(e) = session.umount_and_join()
        {
            // Still busy (a process holds a file open): detach it, so no dead mount is left
            // behind once this process ends.
            eprintln!(
                "lazyfs: unmounting {}: {e}; detaching",
                self.mountpoint.display()
            );
            use std::os::unix::ffi::OsStrExt;
            if let Ok(path) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) {
                // SAFETY: a valid NUL-terminated path for the duration of the call.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The FUSE side: each request on the shared state.
struct Fuse {
    state: Arc<Mutex<State>>,
}

/// No caching of names or attributes in the kernel: every lookup sees the model.
const TTL: Duration = Duration::ZERO;

impl Fuse {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn attr(model: &Model, ino: u64) -> Result<FileAttr, i32> {
        let node = model.node(ino)?;
        let now = SystemTime::now();
        let (kind, size, nlink) = match node.kind {
            Kind::File => (FileType::RegularFile, node.data.len() as u64, 1),
            Kind::Dir => (FileType::Directory, 4096, 2),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm: node.mode,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Creates a file or directory and answers with its attributes.
    fn make(&self, parent: INodeNo, name: &OsStr, kind: Kind, mode: u32) -> Result<FileAttr, i32> {
        let mut state = self.state();
        state.may_change()?;
        let ino = state
            .model
            .create(parent.0, name, kind, (mode & 0o7777) as u16)?;
        Fuse::attr(&state.model, ino)
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl Filesystem for Fuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        if state.faults.off {
            return reply.error(Errno::EIO);
        }
        match state
            .model
            .lookup(parent.0, name)
            .and_then(|ino| Fuse::attr(&state.model, ino))
        {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.state();
        match Fuse::attr(&state.model, ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let result = (|| {
            if mode.is_some() || size.is_some() {
                state.may_change()?;
            }
            if let Some(len) = size {
                let current = state.model.node(ino.0)?.data.len() as u64;
                if let Some(cap) = state.faults.capacity
                    && len > current
                    && state.model.used() + (len - current) > cap
                {
                    return Err(libc::ENOSPC);
                }
                state.model.set_len(ino.0, len)?;
            }
            if let Some(mode) = mode {
                state.model.nodes.get_mut(&ino.0).ok_or(libc::ENOENT)?.mode =
                    (mode & 0o7777) as u16;
            }
            Fuse::attr(&state.model, ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(parent, name, Kind::Dir, mode) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(parent, name, Kind::File, mode) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        match state
            .may_change()
            .and_then(|()| state.model.unlink(parent.0, name, false))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        match state
            .may_change()
            .and_then(|()| state.model.unlink(parent.0, name, true))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let result = state.may_change().and_then(|()| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(libc::EINVAL);
            }
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            state
                .model
                .rename(parent.0, name, newparent.0, newname, no_replace)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let result = state
            .may_change()
            .and_then(|()| state.model.link(ino.0, newparent.0, newname))
            .and_then(|()| Fuse::attr(&state.model, ino.0));
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let state = self.state();
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let result = state.model.node(ino.0).map(drop).and_then(|()| {
            if state.faults.off {
                Err(libc::EIO)
            } else if writing && state.faults.read_only {
                Err(libc::EROFS)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        if state.faults.off {
            return reply.error(Errno::EIO);
        }
        match state.model.node(ino.0) {
            Ok(node) => {
                let start = (offset as usize).min(node.data.len());
                let end = (start + size as usize).min(node.data.len());
                reply.data(&node.data[start..end]);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        let result = state.may_change().and_then(|()| {
            let current = state.model.node(ino.0)?.data.len() as u64;
            let end = offset + data.len() as u64;
            if let Some(cap) = state.faults.capacity
                && end > current
                && state.model.used() + (end - current) > cap
            {
                return Err(libc::ENOSPC);
            }
            state.model.write(ino.0, offset, data)
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let off = state.durability_call(|c| {
            if datasync {
                c.fdatasync += 1
            } else {
                c.fsync += 1
            }
        });
        let result = (|| {
            if off {
                return Err(libc::EIO);
            }
            if state.faults.read_only {
                return Err(libc::EROFS);
            }
            let fail = state.faults.failing_fsyncs > 0;
            if fail {
                state.faults.failing_fsyncs -= 1;
            }
            state.model.flush_file(ino.0, fail)?;
            if fail { Err(libc::EIO) } else { Ok(()) }
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let off = state.durability_call(|c| c.fsyncdir += 1);
        let result = if off {
            Err(libc::EIO)
        } else if state.faults.read_only {
            Err(libc::EROFS)
        } else {
            state.model.flush_dir(ino.0)
        };
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        if state.faults.off {
            return reply.error(Errno::EIO);
        }
        let node = match state.model.node(ino.0) {
            Ok(n) => n,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries: Vec<(u64, FileType, &OsStr)> = vec![
            (ino.0, FileType::Directory, OsStr::new(".")),
            (ino.0, FileType::Directory, OsStr::new("..")),
        ];
        for (name, child) in &node.entries {
            let kind = match state.model.node(*child).map(|n| n.kind) {
                Ok(Kind::Dir) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((*child, kind, name));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let used = state.model.used().div_ceil(4096);
        let total = state
            .faults
            .capacity
            .map_or(1 << 20, |c| c.div_ceil(4096))
            .max(used);
        reply.statfs(
            total,
            total - used,
            total - used,
            1 << 20,
            1 << 19,
            4096,
            255,
            4096,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}
